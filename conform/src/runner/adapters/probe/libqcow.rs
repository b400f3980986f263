//! libqcow (Joachim Metz's libyal library, Debian's `libqcow1`) as an
//! implementation under test, through its Python bindings (Debian's
//! `python3-libqcow`, module `pyqcow`) and the probe process of
//! [`super::probe`]. Read-only: libqcow cannot write images.
//!
//! The probe process starts Debian's Python with a small helper
//! ([`HELPER`]) that opens the image and answers read requests on a pipe,
//! so that everything libqcow does happens in the probe's process group
//! (killed as a whole on timeout) and a crash in libqcow shows as the
//! helper's signal.

use super::probe::GuestDisk;
use anyhow::{bail, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The Python helper: prints `{"opened": ..., "size": ..., "error": ...}`,
/// then answers each request line `OFFSET LENGTH` with a JSON line
/// (`{"ok": true, "len": N}` followed by N raw bytes, or `{"ok": false,
/// "error": ...}`).
pub const HELPER: &str = r#"
import json, sys
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

/// The Python that has Debian's `pyqcow`: `LIBQCOW_PYTHON`, else
/// `/usr/bin/python3` (Debian installs the module for its own Python).
pub fn python() -> OsString {
    std::env::var_os("LIBQCOW_PYTHON").unwrap_or_else(|| "/usr/bin/python3".into())
}

/// Fails unless `pyqcow` can be imported.
pub fn ensure_installed() -> Result<()> {
    let py = python();
    let out = Command::new(&py)
        .args(["-c", "import pyqcow; print(pyqcow.get_version())"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "libqcow's Python bindings are missing ({} cannot import pyqcow: {}): install Debian's python3-libqcow (scripts/setup.sh does)",
            py.to_string_lossy(),
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        ),
        Err(e) => bail!(
            "cannot run {} for libqcow: {e}; install Debian's python3-libqcow (scripts/setup.sh does)",
            py.to_string_lossy()
        ),
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
    fn ended(&mut self) -> String {
        drop(self.stdin.take());
        match self.child.wait() {
            Ok(s) => {
                self.signal = s.signal();
                match (s.code(), s.signal()) {
                    (_, Some(sig)) => format!("the libqcow helper was killed by signal {sig}"),
                    (Some(c), _) => format!("the libqcow helper exited with status {c}"),
                    _ => "the libqcow helper ended".into(),
                }
            }
            Err(e) => format!("the libqcow helper is gone: {e}"),
        }
    }

    fn line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.stdout.read_line(&mut l) {
            Ok(0) | Err(_) => Err(self.ended()),
            Ok(_) => Ok(l),
        }
    }
}

pub fn open(image: &Path, writable: bool) -> Result<Box<dyn GuestDisk>, String> {
    if writable {
        return Err("libqcow cannot write".into());
    }
    let mut child = Command::new(python())
        .arg("-c")
        .arg(HELPER)
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the libqcow helper: {e}"))?;
    let stdin = child.stdin.take();
    let stdout = BufReader::new(child.stdout.take().ok_or("no helper stdout")?);
    let mut disk = Disk {
        child,
        stdin,
        stdout,
        size: 0,
        signal: None,
    };
    let first = disk.line()?;
    let o: Opened = serde_json::from_str(&first)
        .map_err(|e| format!("the libqcow helper said {first:?} ({e})"))?;
    if !o.opened {
        let _ = disk.ended();
        return Err(o
            .error
            .unwrap_or_else(|| "libqcow refused the image".into()));
    }
    disk.size = o.size;
    Ok(Box::new(disk))
}

impl GuestDisk for Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err("the libqcow helper is gone".into());
        };
        if writeln!(stdin, "{offset} {}", buf.len())
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return Err(self.ended());
        }
        let l = self.line()?;
        let a: Answer =
            serde_json::from_str(&l).map_err(|e| format!("the libqcow helper said {l:?} ({e})"))?;
        if !a.ok {
            return Err(a.error.unwrap_or_else(|| "read failed".into()));
        }
        let mut data = vec![0u8; a.len];
        if self.stdout.read_exact(&mut data).is_err() {
            return Err(self.ended());
        }
        if a.len != buf.len() {
            return Err(format!(
                "short read: libqcow returned {} of {} bytes",
                a.len,
                buf.len()
            ));
        }
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<(), String> {
        let end = self.ended();
        match self.signal {
            Some(_) => Err(end),
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
