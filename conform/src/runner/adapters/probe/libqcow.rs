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

/// The Python helper: opens the image and its backing chain (libqcow
/// leaves the chain to its caller), prints `{"opened": ..., "size": ...,
/// "error": ...}`,
/// then answers each request line `OFFSET LENGTH` with a JSON line
/// (`{"ok": true, "len": N}` followed by N raw bytes, or `{"ok": false,
/// "error": ...}`).
pub const HELPER: &str = r#"
import json, os, sys
import pyqcow
out = sys.stdout.buffer
def say(obj):
    out.write((json.dumps(obj) + "\n").encode())
    out.flush()
f = pyqcow.file()
try:
    f.open(sys.argv[1])
except Exception as e:
    say({"opened": False, "error": str(e).strip()})
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
    say({"opened": False, "error": "backing file: " + str(e).strip()})
    sys.exit(0)
say({"opened": True, "size": f.get_media_size(), "version": pyqcow.get_version()})
for line in sys.stdin:
    off, n = (int(x) for x in line.split())
    try:
        data = f.read_buffer_at_offset(n, off)
    except Exception as e:
        say({"ok": False, "error": str(e).strip()})
        continue
    say({"ok": True, "len": len(data)})
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
    /// A line that is not the JSON the helper should print.
    #[error("the Python helper said {line:?} ({source})")]
    Garbled {
        line: String,
        source: serde_json::Error,
    },
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

#[derive(serde::Deserialize)]
struct Opened {
    opened: bool,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    len: usize,
    #[serde(default)]
    error: Option<String>,
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
    open_helper(&python(build), HELPER, image, "libqcow refused the image")
}

/// Starts `python` with the helper script `helper` on `image`: the helper
/// prints `{"opened": ..., "size": ..., "error": ...}`, then answers each
/// request line `OFFSET LENGTH` with a JSON line (`{"ok": true, "len": N}`
/// followed by N raw bytes, or `{"ok": false, "error": ...}`).
/// `refused` stands in for a refusal without a message.
pub(super) fn open_helper(
    python: &std::ffi::OsStr,
    helper: &str,
    image: &Path,
    refused: &str,
) -> Result<Box<dyn GuestDisk>, DiskError> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(helper)
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
    let o: Opened = serde_json::from_str(&first).map_err(|source| HelperError::Garbled {
        line: first.clone(),
        source,
    })?;
    if !o.opened {
        let _ = disk.ended();
        let why = o.error.unwrap_or_else(|| refused.to_owned());
        return Err(HelperError::Libqcow(why).into());
    }
    disk.size = o.size;
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
        let a: Answer =
            serde_json::from_str(&line).map_err(|source| HelperError::Garbled { line, source })?;
        if !a.ok {
            let why = a.error.unwrap_or_else(|| "read failed".into());
            return Err(HelperError::Libqcow(why).into());
        }
        let mut data = vec![0u8; a.len];
        if self.stdout.read_exact(&mut data).is_err() {
            return Err(self.ended().into());
        }
        if a.len != buf.len() {
            return Err(HelperError::ShortRead {
                got: a.len,
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
