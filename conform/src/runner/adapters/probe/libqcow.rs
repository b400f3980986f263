//! libqcow (Joachim Metz's libyal library) as an implementation under
//! test, through its Python bindings (module `pyqcow`) and the probe
//! process ([`super`]). Read-only: libqcow cannot write images. Which
//! libqcow is a [`LibqcowBuild`]: Debian's `python3-libqcow` (`libqcow`)
//! or a release from PyPI in the project's virtual environment
//! (`libqcow@20260703`); only the interpreter differs.
//!
//! The probe process starts that Python with a small helper
//! ([`HELPER`]) that opens the image and answers read requests on a pipe,
//! so that everything libqcow does happens in the probe's process group
//! (killed as a whole on timeout) and a crash in libqcow shows as the
//! helper's signal.

use super::disk::{DiskError, GuestDisk};
use anyhow::{bail, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// What every Python helper ([`open_helper`]) starts with: `say`, which
/// prints one answer line `WORD TEXT` (the text on one line: backslash,
/// newline and carriage return escaped as `\\`, `\n`, `\r`). No `json`:
/// importing it took 6 of the 16 ms a libqcow helper needs to start, once
/// per case and column.
const PROLOGUE: &str = r#"
import os, sys
out = sys.stdout.buffer
def say(word, text=""):
    text = str(text).strip().replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    out.write((word + " " + text + "\n").encode("utf-8", "backslashreplace"))
    out.flush()
"#;

/// The Python helper: opens the image and its backing chain (libqcow
/// leaves the chain to its caller), says `opened SIZE` or `refused
/// MESSAGE`, then answers each request line `OFFSET LENGTH` with `ok N`
/// followed by N raw bytes, or `error MESSAGE` ([`PROLOGUE`]).
pub const HELPER: &str = r#"
import pyqcow
f = pyqcow.file()
try:
    f.open(sys.argv[1])
except Exception as e:
    say("refused", e)
    sys.exit(0)
# libqcow does not open a backing file itself: its caller opens the chain
# (names relative to the image's directory) and attaches each parent, which
# must stay open (kept in `parents`) while the child is read.
parents = []
def attach(child, path):
    name = child.get_backing_filename()
    if not name:
        return
    where = os.path.join(os.path.dirname(path), name)
    parent = pyqcow.file()
    parent.open(where)
    parents.append(parent)
    attach(parent, where)
    child.set_parent(parent)
try:
    attach(f, sys.argv[1])
except Exception as e:
    say("refused", "backing file: " + str(e).strip())
    sys.exit(0)
say("opened", f.get_media_size())
for line in sys.stdin:
    off, n = (int(x) for x in line.split())
    try:
        data = f.read_buffer_at_offset(n, off)
    except Exception as e:
        say("error", e)
        continue
    say("ok", len(data))
    out.write(data)
    out.flush()
f.close()
"#;

/// Which libqcow: Debian's, or a release from PyPI in the project's
/// virtual environment ([`crate::runner::adapters::cache::libqcow_python`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibqcowBuild {
    /// Debian's `python3-libqcow` (20201213 in bookworm) for
    /// `/usr/bin/python3` (or `LIBQCOW_PYTHON`).
    Debian,
    /// `libqcow-python==20260703` from PyPI, a manylinux wheel.
    Pypi20260703,
}

impl LibqcowBuild {
    /// The release on PyPI, `None` for Debian's.
    pub fn pypi_version(self) -> Option<&'static str> {
        match self {
            LibqcowBuild::Debian => None,
            LibqcowBuild::Pypi20260703 => Some("20260703"),
        }
    }
}

/// The Python that imports `build`'s `pyqcow`: for Debian's,
/// `LIBQCOW_PYTHON`, else `/usr/bin/python3` (Debian installs the module
/// for its own Python); for a PyPI release, the virtual environment's
/// ([`crate::runner::adapters::cache::libqcow_python`]).
pub fn python(build: LibqcowBuild) -> OsString {
    match build.pypi_version() {
        None => std::env::var_os("LIBQCOW_PYTHON").unwrap_or_else(|| "/usr/bin/python3".into()),
        Some(v) => crate::runner::adapters::cache::libqcow_python(v).into_os_string(),
    }
}

/// How to install `build` (for messages).
fn install_hint(build: LibqcowBuild) -> String {
    match build.pypi_version() {
        None => "install Debian's python3-libqcow (scripts/setup.sh does)".into(),
        Some(v) => format!(
            "run scripts/setup.sh, which installs libqcow-python=={v} into a virtual environment there"
        ),
    }
}

/// `build`'s libqcow version (`pyqcow.get_version()`, e.g. `20201213`).
pub fn version(build: LibqcowBuild) -> Option<String> {
    let o = Command::new(python(build))
        .args(["-c", "import pyqcow; print(pyqcow.get_version())"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    (o.status.success() && !v.is_empty()).then_some(v)
}

/// Fails unless `build`'s `pyqcow` can be imported and is the release it
/// names.
pub fn ensure_installed(build: LibqcowBuild) -> Result<()> {
    let py = python(build);
    let out = Command::new(&py)
        .args(["-c", "import pyqcow; print(pyqcow.get_version())"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let got = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            match build.pypi_version() {
                Some(v) if got != v => bail!(
                    "{} imports libqcow {got}, not {v}: {}",
                    py.to_string_lossy(),
                    install_hint(build)
                ),
                _ => Ok(()),
            }
        }
        Ok(o) => bail!(
            "libqcow's Python bindings are missing ({} cannot import pyqcow: {}): {}",
            py.to_string_lossy(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or(""),
            install_hint(build)
        ),
        Err(e) => bail!(
            "cannot run {} for libqcow: {e}; {}",
            py.to_string_lossy(),
            install_hint(build)
        ),
    }
}

/// What went wrong between the probe and a Python helper (libqcow's,
/// dissect's: [`open_helper`]), or what the library itself refused.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot start the Python helper: {0}")]
    Start(#[source] std::io::Error),
    #[error("no helper stdout")]
    NoStdout,
    /// A line that is not one the helper should print.
    #[error("the Python helper said {0:?}")]
    Garbled(String),
    #[error("the Python helper was killed by signal {0}")]
    Killed(i32),
    #[error("the Python helper exited with status {0}")]
    Exited(i32),
    #[error("the Python helper ended")]
    Ended,
    /// Waiting for the helper failed.
    #[error("the Python helper is gone: {0}")]
    Lost(#[source] std::io::Error),
    /// The helper was already waited for.
    #[error("the Python helper is gone")]
    Gone,
    /// libqcow's own error message (or a stand-in when it gave none).
    #[error("{0}")]
    Libqcow(String),
    #[error("short read: the library returned {got} of {wanted} bytes")]
    ShortRead { got: usize, wanted: usize },
}

impl From<HelperError> for DiskError {
    fn from(e: HelperError) -> DiskError {
        DiskError::implementation(e)
    }
}

/// One answer line of a helper ([`PROLOGUE`]): its first word and its
/// text, unescaped.
fn answer(line: &str) -> Result<(&str, String), HelperError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (word, text) = line
        .split_once(' ')
        .ok_or_else(|| HelperError::Garbled(line.into()))?;
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(match (c, c == '\\') {
            (_, false) => c,
            (_, true) => match chars.next() {
                Some('n') => '\n',
                Some('r') => '\r',
                Some('\\') => '\\',
                _ => return Err(HelperError::Garbled(line.into())),
            },
        });
    }
    Ok((word, out))
}

/// The number an `opened` or `ok` line carries.
fn number<T: std::str::FromStr>(line: &str, text: &str) -> Result<T, HelperError> {
    text.parse().map_err(|_| HelperError::Garbled(line.into()))
}

struct Disk {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    size: u64,
    signal: Option<i32>,
}

impl Disk {
    /// The helper ended: how (its signal is kept).
    fn ended(&mut self) -> HelperError {
        drop(self.stdin.take());
        match self.child.wait() {
            Ok(s) => {
                self.signal = s.signal();
                match (s.code(), s.signal()) {
                    (_, Some(sig)) => HelperError::Killed(sig),
                    (Some(c), _) => HelperError::Exited(c),
                    _ => HelperError::Ended,
                }
            }
            Err(e) => HelperError::Lost(e),
        }
    }

    /// One line from the helper, or how it ended.
    fn line(&mut self) -> Result<String, HelperError> {
        let mut l = String::new();
        match self.stdout.read_line(&mut l) {
            Ok(0) | Err(_) => Err(self.ended()),
            Ok(_) => Ok(l),
        }
    }
}

pub fn open(
    build: LibqcowBuild,
    image: &Path,
    writable: bool,
) -> Result<Box<dyn GuestDisk>, DiskError> {
    if writable {
        return Err(DiskError::ReadOnly("libqcow"));
    }
    open_helper(&python(build), HELPER, image)
}

/// Starts `python` with [`PROLOGUE`] and the helper script `helper` on
/// `image`: the helper says `opened SIZE` or `refused MESSAGE`, then
/// answers each request line `OFFSET LENGTH` with `ok N` followed by N
/// raw bytes, or `error MESSAGE`.
pub(super) fn open_helper(
    python: &std::ffi::OsStr,
    helper: &str,
    image: &Path,
) -> Result<Box<dyn GuestDisk>, DiskError> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(format!("{PROLOGUE}{helper}"))
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(HelperError::Start)?;
    let stdin = child.stdin.take();
    let stdout = BufReader::new(child.stdout.take().ok_or(HelperError::NoStdout)?);
    let mut disk = Disk {
        child,
        stdin,
        stdout,
        size: 0,
        signal: None,
    };
    let first = disk.line()?;
    match answer(&first)? {
        ("opened", size) => disk.size = number(&first, &size)?,
        ("refused", why) => {
            let _ = disk.ended();
            return Err(HelperError::Libqcow(why).into());
        }
        _ => return Err(HelperError::Garbled(first).into()),
    }
    Ok(Box::new(disk))
}

impl GuestDisk for Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(HelperError::Gone.into());
        };
        if writeln!(stdin, "{offset} {}", buf.len())
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return Err(self.ended().into());
        }
        let line = self.line()?;
        let len: usize = match answer(&line)? {
            ("ok", len) => number(&line, &len)?,
            ("error", why) => return Err(HelperError::Libqcow(why).into()),
            _ => return Err(HelperError::Garbled(line).into()),
        };
        // No more than was asked for is taken in: a helper that says more
        // is garbled, not a reason to allocate what it says.
        if len > buf.len() {
            return Err(HelperError::Garbled(line).into());
        }
        let mut data = vec![0u8; len];
        if self.stdout.read_exact(&mut data).is_err() {
            return Err(self.ended().into());
        }
        if len != buf.len() {
            return Err(HelperError::ShortRead {
                got: len,
                wanted: buf.len(),
            }
            .into());
        }
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<(), DiskError> {
        let end = self.ended();
        match self.signal {
            Some(_) => Err(end.into()),
            None => Ok(()),
        }
    }

    fn helper_signal(&self) -> Option<i32> {
        self.signal
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the helpers' `say` prints for `text`, read back by [`answer`].
    fn said(text: &str) -> (String, String) {
        let script = format!("{PROLOGUE}\nsay('refused', sys.argv[1])\n");
        let o = Command::new("python3")
            .args(["-c", &script, text])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let line = String::from_utf8(o.stdout).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let (word, text) = answer(&line).unwrap();
        (word.to_owned(), text)
    }

    #[test]
    fn a_helper_answer_keeps_its_message_whole_on_one_line() {
        for text in [
            "plain",
            "two\nlines\r\nand a \\ backslash, \\n not a newline",
            "non-ASCII: é ✓",
            "",
        ] {
            assert_eq!(said(text), ("refused".into(), text.trim().to_owned()));
        }
    }

    #[test]
    fn a_garbled_answer_is_said_to_be_one() {
        for line in ["nospace\n", "error bad \\x escape\n", "error trailing \\\n"] {
            assert!(
                matches!(answer(line), Err(HelperError::Garbled(_))),
                "{line:?}"
            );
        }
        assert!(number::<u64>("opened -1", "-1").is_err());
    }
}
