//! Finding QEMU's command-line tools (`qemu-img`, `qemu-io`, `qemu-nbd`),
//! building their argument lists, and reading a failure from their output.
//!
//! A missing tool is an error that names the tool and how to point at it
//! (an environment variable such as `QEMU_IMG_PROG`), never a silent skip.

use crate::runner::process::Proc;
use anyhow::{bail, Result};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

/// One of QEMU's command-line tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Img,
    Io,
    Nbd,
}

impl Tool {
    /// The program's file name.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Img => "qemu-img",
            Tool::Io => "qemu-io",
            Tool::Nbd => "qemu-nbd",
        }
    }

    /// The environment variable that overrides where the tool is (the
    /// names QEMU's own iotests use).
    pub fn env_var(self) -> &'static str {
        match self {
            Tool::Img => "QEMU_IMG_PROG",
            Tool::Io => "QEMU_IO_PROG",
            Tool::Nbd => "QEMU_NBD_PROG",
        }
    }

    /// Finds the tool: the environment override if set, else the first
    /// executable of that name on `PATH`.
    pub fn locate(self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(self.env_var()).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            if is_executable(&p) {
                return Ok(p);
            }
            bail!(
                "{} is set to {}, which is not an executable file",
                self.env_var(),
                p.display()
            );
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(self.program());
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        bail!(
            "QEMU tool `{}` not found on PATH ({}); install QEMU's tools \
             (e.g. the Debian package qemu-utils) or set {} to its path",
            self.program(),
            path.to_string_lossy(),
            self.env_var()
        )
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `s` as an owned argument.
pub(crate) fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_owned()
}

/// qemu-io arguments that write `len` bytes of `pattern` at guest offset
/// `offset` of the qcow2 `image`.
pub(crate) fn qemu_io_write(image: &Path, pattern: u8, offset: u64, len: u64) -> Vec<OsString> {
    vec![
        os("-f"),
        os("qcow2"),
        os("-c"),
        os(format!("write -P {pattern:#04x} {offset} {len}")),
        os(image),
    ]
}

/// Why a tool's run failed, `None` when it succeeded: the first line of its
/// output holding one of `markers` (QEMU's tools may report a failed
/// command with exit status 0), else its first error line, else how it
/// ended.
pub(crate) fn failure(p: &Proc, markers: &[&str]) -> Option<String> {
    let failed_line = p
        .stdout
        .lines()
        .chain(p.stderr.lines())
        .find(|l| markers.iter().any(|m| l.contains(m)))
        .map(str::to_owned);
    if p.success() && failed_line.is_none() {
        None
    } else {
        Some(
            failed_line
                .or_else(|| p.first_error_line())
                .unwrap_or_else(|| p.describe_end()),
        )
    }
}
