//! Files the runner reads that someone else wrote: a corpus (its manifest,
//! `SHA256SUMS`, images, companions, kit files), expectations files, run
//! reports read back and a campaign's state. Each is opened only as a
//! regular file, without waiting (a FIFO, socket, device or directory is
//! refused at once, never opened for reading), read within a size cap, and
//! a path named inside a corpus is resolved beneath the corpus directory:
//! relative, no `..`, and no symbolic link leading out of it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// The largest manifest read (about 600,000 generated cases).
pub const MANIFEST_CAP: u64 = 256 << 20;
/// The largest `SHA256SUMS` read.
pub const SUMS_CAP: u64 = 256 << 20;
/// The largest run report read back (`report diff`, `run --rerun`).
pub const REPORT_CAP: u64 = 512 << 20;
/// The largest expectations file read (`run --expect`).
pub const EXPECT_CAP: u64 = 64 << 20;
/// The largest campaign state read.
pub const STATE_CAP: u64 = 64 << 20;

/// Why an input file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {kind}, not a regular file: refused", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is {size} bytes, over the limit of {cap} bytes for {what}", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        cap: u64,
        what: &'static str,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not UTF-8 text (first bad byte at offset {offset})", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{name:?} is empty or absolute: paths in a corpus are relative to it")]
    Absolute { name: String },
    #[error("{name:?} contains `..`: paths in a corpus must stay inside it")]
    ParentDir { name: String },
    #[error("{name:?} leads out of the corpus {} (through a symbolic link): refused", root.display())]
    Escapes { name: String, root: PathBuf },
}

impl InputError {
    /// The file's type when it was refused for not being a regular file.
    pub fn irregular_kind(&self) -> Option<&'static str> {
        match self {
            InputError::NotRegular { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The I/O error of a failed open, if that is what this is.
    pub fn open_error(&self) -> Option<&io::Error> {
        match self {
            InputError::Open { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A test of a file type, and the kind it names in messages.
type Kind = (fn(&std::fs::FileType) -> bool, &'static str);

/// What kind of file `t` is, for messages (`a FIFO`, `a symbolic link`).
pub fn kind(t: std::fs::FileType) -> &'static str {
    use std::fs::FileType;
    use std::os::unix::fs::FileTypeExt;
    let kinds: [Kind; 7] = [
        (FileType::is_dir, "a directory"),
        (FileTypeExt::is_fifo, "a FIFO"),
        (FileTypeExt::is_socket, "a socket"),
        (FileTypeExt::is_block_device, "a block device"),
        (FileTypeExt::is_char_device, "a character device"),
        (FileType::is_symlink, "a symbolic link"),
        (FileType::is_file, "a regular file"),
    ];
    kinds
        .iter()
        .find(|(is, _)| is(&t))
        .map_or("a special file", |&(_, name)| name)
}

/// The opened file when it is a regular file.
fn regular(file: File, path: &Path) -> Result<File, InputError> {
    let meta = file.metadata().map_err(|source| InputError::Open {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(InputError::NotRegular {
            path: path.to_owned(),
            kind: kind(meta.file_type()),
        });
    }
    Ok(file)
}

/// Opens `path` for reading if it is a regular file: stat first, then a
/// non-blocking open (so a file swapped for a FIFO in between cannot make
/// the open wait), then the opened file's type checked again.
pub fn open_regular(path: &Path) -> Result<File, InputError> {
    use std::os::unix::fs::OpenOptionsExt;
    let open_err = |source| InputError::Open {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(open_err)?;
    if !meta.is_file() {
        return Err(InputError::NotRegular {
            path: path.to_owned(),
            kind: kind(meta.file_type()),
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(open_err)?;
    regular(file, path)
}

/// Reads all of `file` (`path` for messages), refusing more than `cap`
/// bytes: the size is checked before reading and the read stops one byte
/// past the cap, so a file that grows meanwhile is refused too.
pub fn read_file_capped(
    file: File,
    path: &Path,
    cap: u64,
    what: &'static str,
) -> Result<Vec<u8>, InputError> {
    let too_large = |size| InputError::TooLarge {
        path: path.to_owned(),
        size,
        cap,
        what,
    };
    let size = file
        .metadata()
        .map_err(|source| InputError::Read {
            path: path.to_owned(),
            source,
        })?
        .len();
    if size > cap {
        return Err(too_large(size));
    }
    let mut out = Vec::with_capacity(size as usize);
    file.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|source| InputError::Read {
            path: path.to_owned(),
            source,
        })?;
    if out.len() as u64 > cap {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// The bytes as text, or which byte is not UTF-8.
pub fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String, InputError> {
    String::from_utf8(bytes).map_err(|e| InputError::NotUtf8 {
        path: path.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// The regular file at `path`, read whole within `cap` bytes.
pub fn read_capped(path: &Path, cap: u64, what: &'static str) -> Result<Vec<u8>, InputError> {
    read_file_capped(open_regular(path)?, path, cap, what)
}

/// The regular file at `path` as UTF-8 text, within `cap` bytes.
pub fn read_text_capped(path: &Path, cap: u64, what: &'static str) -> Result<String, InputError> {
    utf8(read_capped(path, cap, what)?, path)
}

/// Checks that `name` is a relative path of plain components (`.` allowed,
/// no `..`, not empty, not absolute), as every path inside a corpus must be.
pub fn check_relative(name: &Path) -> Result<(), InputError> {
    let shown = || name.to_string_lossy().into_owned();
    if name.as_os_str().is_empty() || name.has_root() {
        return Err(InputError::Absolute { name: shown() });
    }
    for c in name.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(InputError::ParentDir { name: shown() }),
            Component::RootDir | Component::Prefix(_) => {
                return Err(InputError::Absolute { name: shown() })
            }
        }
    }
    Ok(())
}

/// Opens `root/name` for reading, resolved beneath `root`: `name` must be
/// relative without `..` ([`check_relative`]), a symbolic link may be
/// followed only while it stays inside `root`, and the file must be a
/// regular file (its type is looked at through an `O_PATH` handle before
/// it is opened for reading, non-blocking). Uses `openat2` with
/// `RESOLVE_BENEATH`; on a kernel without it, the canonical path is
/// checked to lie under the canonical `root` instead.
pub fn open_beneath(root: &Path, name: &Path) -> Result<File, InputError> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    check_relative(name)?;
    let path = root.join(name);
    let open_err = |source: io::Error| InputError::Open {
        path: path.clone(),
        source,
    };
    let escapes = || InputError::Escapes {
        name: name.to_string_lossy().into_owned(),
        root: root.to_owned(),
    };
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| InputError::Open {
        path: root.to_owned(),
        source: e.into(),
    })?;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    // `openat2` refuses `O_PATH` with any flag but a few (`O_CLOEXEC` among them).
    match openat2(
        &dir,
        name,
        OFlags::CLOEXEC | OFlags::PATH,
        Mode::empty(),
        how,
    ) {
        Ok(handle) => {
            // The type first, through a handle that reads nothing.
            regular(File::from(handle), &path)?;
            let fd = openat2(
                &dir,
                name,
                OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::RDONLY | OFlags::NONBLOCK,
                Mode::empty(),
                how,
            )
            .map_err(|e| match e {
                rustix::io::Errno::XDEV => escapes(),
                e => open_err(e.into()),
            })?;
            regular(File::from(fd), &path)
        }
        Err(rustix::io::Errno::XDEV) => Err(escapes()),
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
            let real_root = root.canonicalize().map_err(|e| InputError::Open {
                path: root.to_owned(),
                source: e,
            })?;
            let real = path.canonicalize().map_err(open_err)?;
            if !real.starts_with(&real_root) {
                return Err(escapes());
            }
            open_regular(&real).map_err(|e| match e {
                InputError::NotRegular { kind, .. } => InputError::NotRegular {
                    path: path.clone(),
                    kind,
                },
                e => e,
            })
        }
        Err(e) => Err(open_err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use crate::runner::corpus::input::*;

    #[test]
    fn paths_are_confined_beneath_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::write(root.join("in/a"), b"a").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out")).unwrap();
        std::os::unix::fs::symlink("in/a", root.join("inner")).unwrap();
        std::os::unix::fs::symlink(d.path(), root.join("dir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let open = |n: &str| open_beneath(&root, Path::new(n));
        assert!(open("in/a").is_ok());
        assert!(open("./in/a").is_ok());
        assert!(open("inner").is_ok(), "a link that stays inside");
        assert!(matches!(open("out"), Err(InputError::Escapes { .. })));
        assert!(matches!(
            open("dir/secret"),
            Err(InputError::Escapes { .. })
        ));
        assert!(matches!(
            open("../secret"),
            Err(InputError::ParentDir { .. })
        ));
        let abs = d.path().join("secret");
        assert!(matches!(
            open_beneath(&root, &abs),
            Err(InputError::Absolute { .. })
        ));
        assert!(matches!(open(""), Err(InputError::Absolute { .. })));
        assert_eq!(open("fifo").unwrap_err().irregular_kind(), Some("a FIFO"));
        assert_eq!(
            open("in").unwrap_err().irregular_kind(),
            Some("a directory")
        );
    }

    #[test]
    fn reads_stop_at_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        assert_eq!(read_capped(&p, 100, "a test").unwrap().len(), 100);
        assert!(matches!(
            read_capped(&p, 99, "a test"),
            Err(InputError::TooLarge { size: 100, .. })
        ));
        std::fs::write(&p, b"ab\xffc").unwrap();
        assert!(matches!(
            read_text_capped(&p, 10, "a test"),
            Err(InputError::NotUtf8 { offset: 2, .. })
        ));
        assert_eq!(
            read_capped(Path::new("/dev/zero"), 10, "a test")
                .unwrap_err()
                .irregular_kind(),
            Some("a character device")
        );
    }
}
