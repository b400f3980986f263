//! The files an image names besides itself (its backing file, its
//! external data file), checked before a case runs: a corpus is untrusted,
//! and an implementation opens whatever the image names.
//!
//! A reference is followed only when the manifest lists it as one of the
//! case's companions (the runner copies those beside the image's private
//! copy; they are regular files inside the image's directory). The case
//! is not run (outcome `error`, naming the reference, never charged to
//! the implementation) when the name is not a companion, and in
//! particular when it
//! - is absolute, or climbs out of the image's directory (`..`);
//! - is a `json:` or protocol filename (a `:` before the first `/`, which
//!   QEMU parses as `PROTOCOL:...`: `nbd:`, `ssh:`, `http:`, ...);
//! - names something in the image's directory that is not a regular file
//!   (a FIFO would block its reader, a symbolic link may lead anywhere).
//!
//! The names are read as QEMU reads them: the backing file name only when
//! it fits in the first cluster and is at most 1023 bytes (QEMU refuses
//! the image otherwise, opening nothing), every external data file name
//! extension, each cut at its first NUL byte.

use generator::ManifestCase;
use spec_model::fields::{extension as ext, header as hdr};
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Which file a reference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Backing,
    DataFile,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Backing => "backing file",
            Kind::DataFile => "external data file",
        })
    }
}

/// Why a case's image may not be run.
#[derive(Debug, thiserror::Error)]
pub enum RefusedReference {
    #[error("the image's {kind} name {name:?} {why}: not run (only companion files the manifest lists, inside the case's directory, are followed)")]
    Refused {
        kind: Kind,
        name: String,
        why: &'static str,
    },
    #[error("cannot read the image's file references: {0}")]
    Read(#[source] std::io::Error),
}

/// One name an image refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: Kind,
    /// The name's bytes, up to the first NUL.
    pub name: Vec<u8>,
}

impl Reference {
    fn shown(&self) -> String {
        crate::runner::text::short(&String::from_utf8_lossy(&self.name))
    }
}

/// The largest cluster a qcow2 image may have (2 MiB): the extensions and
/// the backing file name QEMU reads lie in the first cluster.
const MAX_FIRST_CLUSTER: u64 = 2 << 20;

/// What an image's first cluster says about the files it names, as
/// QEMU's qcow2 driver reads it when it opens the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Every name (the backing file, each external data file name
    /// extension), for the check: all of them are checked.
    pub refs: Vec<Reference>,
    /// The "backing file format name" extension, up to its first NUL.
    pub backing_format: Option<Vec<u8>>,
    /// Whether incompatible bit 2 (external data file) is set: QEMU
    /// opens a data file only then.
    pub data_file_bit: bool,
    /// The data file name QEMU uses: the last such extension that lies
    /// before the end of QEMU's extension area (the backing file name's
    /// offset when there is one, else the end of the first cluster).
    pub data_file: Option<Vec<u8>>,
}

impl Names {
    /// The backing file name, if the image has one.
    pub fn backing(&self) -> Option<&[u8]> {
        self.refs
            .iter()
            .find(|r| r.kind == Kind::Backing)
            .map(|r| r.name.as_slice())
    }
}

/// The names `image` refers to (none when it is no qcow2 image).
pub fn read(image: &Path) -> std::io::Result<Vec<Reference>> {
    Ok(read_names(image)?.refs)
}

/// [`Names`] of `image` (empty when it is no qcow2 image).
pub fn read_names(image: &Path) -> std::io::Result<Names> {
    let mut f = crate::runner::corpus::image_state::open_regular(image).map_err(|e| match e {
        crate::runner::corpus::image_state::ReadError::Open(e) => e,
        other => std::io::Error::other(other.to_string()),
    })?;
    let len = f.metadata()?.len();
    let mut head = vec![0u8; hdr::V3_MIN_LENGTH.min(len as usize)];
    f.read_exact(&mut head)?;
    let mut out = Names::default();
    if head.len() < hdr::V2_LENGTH || hdr::MAGIC.get(&head) != 0x5146_49fb {
        return Ok(out);
    }
    let version = hdr::VERSION.get(&head);
    let cluster_bits = hdr::CLUSTER_BITS.get(&head);
    if !(9..=21).contains(&cluster_bits) {
        return Ok(out);
    }
    let cluster = (1u64 << cluster_bits).min(MAX_FIRST_CLUSTER).min(len);
    let mut first = vec![0u8; cluster as usize];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut first)?;
    let offset = hdr::BACKING_FILE_OFFSET.get(&head);
    let size = hdr::BACKING_FILE_SIZE.get(&head);
    if offset != 0 && size <= 1023 && offset.saturating_add(size) <= cluster {
        let name = &first[offset as usize..(offset + size) as usize];
        push(&mut out.refs, Kind::Backing, name);
    }
    let v3 = version >= 3 && head.len() >= hdr::HEADER_LENGTH.end();
    out.data_file_bit =
        v3 && hdr::INCOMPATIBLE_FEATURES.get(&head) & hdr::INCOMPAT_EXTERNAL_DATA != 0;
    let qemu_end = if offset != 0 { offset } else { cluster };
    let mut at = if v3 {
        hdr::HEADER_LENGTH.get(&head)
    } else {
        hdr::V2_LENGTH as u64
    };
    while at + ext::PREFIX_LENGTH as u64 <= cluster {
        let p = &first[at as usize..];
        let (t, l) = (ext::TYPE.get(p) as u32, ext::LENGTH.get(p));
        let data = at + ext::PREFIX_LENGTH as u64;
        if t == ext::END || data + l > cluster {
            break;
        }
        let bytes = &first[data as usize..(data + l) as usize];
        let named = &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())];
        let in_qemu = data + l <= qemu_end;
        if t == ext::EXTERNAL_DATA_FILE {
            push(&mut out.refs, Kind::DataFile, bytes);
            if in_qemu {
                out.data_file = Some(named.to_vec());
            }
        } else if t == ext::BACKING_FORMAT && in_qemu {
            out.backing_format = Some(named.to_vec());
        }
        at = data + l.div_ceil(8) * 8;
    }
    Ok(out)
}

fn push(out: &mut Vec<Reference>, kind: Kind, raw: &[u8]) {
    let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    if !name.is_empty() {
        out.push(Reference {
            kind,
            name: name.to_vec(),
        });
    }
}

/// Why `name` may not be followed from `image_dir` unless it is a
/// companion; `None` when it may.
fn danger(name: &[u8], image_dir: &Path) -> Option<&'static str> {
    if name.starts_with(b"json:") {
        return Some("is a json: filename");
    }
    let colon = name.iter().position(|&b| b == b':');
    let slash = name.iter().position(|&b| b == b'/');
    if colon.is_some_and(|c| slash.is_none_or(|s| c < s)) {
        return Some("is a protocol filename (a `:` before the first `/`)");
    }
    let p = Path::new(OsStr::from_bytes(name));
    if p.is_absolute() {
        return Some("is an absolute path, outside the case's directory");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Some("leads out of the case's directory (`..`)");
    }
    match std::fs::symlink_metadata(image_dir.join(p)) {
        Ok(m) if m.file_type().is_symlink() => Some("is a symbolic link"),
        Ok(m) if !m.is_file() => Some("is not a regular file"),
        _ => None,
    }
}

/// The most files one chain may hold (the image, its backing files and
/// data files): more is refused rather than followed.
const MAX_CHAIN: usize = 64;

/// Checks every file `image` (the corpus's copy of `case`) names, and
/// every file those name in turn (a companion is itself an image with a
/// backing file or a data file of its own): `Err` names the first one
/// the runner must not follow: one the manifest does not list as a
/// companion, or one no manifest could list (a companion is a regular
/// file inside the image's directory: [`ManifestCase::companion_places`]
/// refuses the others). A name is resolved as QEMU resolves it, against
/// the directory of the file that holds it.
pub fn check(case: &ManifestCase, image: &Path) -> Result<(), RefusedReference> {
    let case_dir = image.parent().unwrap_or(Path::new("."));
    let companions: Vec<PathBuf> = case
        .companion_places()
        .map(|v| v.into_iter().map(|(_, rel)| plain(&rel)).collect())
        .unwrap_or_default();
    // (a file of the chain, its directory relative to the case's)
    let mut todo = vec![(image.to_path_buf(), PathBuf::new())];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((file, rel_dir)) = todo.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let refs = match read(&file) {
            Ok(refs) => refs,
            // A listed companion that is missing is the copy's to report.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file != image => continue,
            Err(e) => return Err(RefusedReference::Read(e)),
        };
        for r in refs {
            let name = Path::new(OsStr::from_bytes(&r.name));
            let rel = plain(&rel_dir.join(name));
            let why = danger(&r.name, &case_dir.join(&rel_dir))
                .or_else(|| {
                    (!companions.contains(&rel))
                        .then_some("is not listed as a companion in the manifest")
                })
                .or_else(|| {
                    (seen.len() >= MAX_CHAIN)
                        .then_some("is one file too many in a chain longer than 64 files")
                });
            if let Some(why) = why {
                return Err(RefusedReference::Refused {
                    kind: r.kind,
                    name: r.shown(),
                    why,
                });
            }
            let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            todo.push((case_dir.join(&rel), dir));
        }
    }
    Ok(())
}

/// `p` without `.` steps.
fn plain(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Whether the model may follow `name` from an image in `dir`: a plain
/// relative name inside it, naming a regular file (not a link).
pub fn followable(name: &str, dir: &Path) -> bool {
    danger(name.as_bytes(), dir).is_none()
}

#[cfg(test)]
mod tests {
    use crate::runner::corpus::references::*;

    #[test]
    fn dangerous_names_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("base.qcow2"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let why = |n: &str| danger(n.as_bytes(), d.path());
        assert_eq!(why("base.qcow2"), None);
        assert_eq!(why("./base.qcow2"), None);
        assert_eq!(why("missing.qcow2"), None);
        assert_eq!(why("sub/dir:x"), None);
        assert!(why("/etc/shadow").unwrap().contains("absolute"));
        assert!(why("../x").unwrap().contains(".."));
        assert!(why("a/../../x").unwrap().contains(".."));
        assert!(why("json:{\"driver\":\"nbd\"}").unwrap().contains("json"));
        assert!(why("nbd:127.0.0.1:10809").unwrap().contains("protocol"));
        assert!(why("link").unwrap().contains("symbolic"));
        assert!(why(".").unwrap().contains("regular"));
    }
}
