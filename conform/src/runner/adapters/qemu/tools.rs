//! Finding QEMU's command-line tools (`qemu-img`, `qemu-io`, `qemu-nbd`),
//! building their argument lists, and reading a failure from their output.
//!
//! A missing tool is an error that names the tool and how to point at it
//! (an environment variable such as `QEMU_IMG_PROG`), never a silent skip.

use crate::runner::adapter::Identity;
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
    /// `qemu-storage-daemon`, for the live adapter (`qemu-live`).
    StorageDaemon,
}

impl Tool {
    /// The program's file name.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Img => "qemu-img",
            Tool::Io => "qemu-io",
            Tool::Nbd => "qemu-nbd",
            Tool::StorageDaemon => "qemu-storage-daemon",
        }
    }

    /// The environment variable that overrides where the tool is (the
    /// names QEMU's own iotests use).
    pub fn env_var(self) -> &'static str {
        match self {
            Tool::Img => "QEMU_IMG_PROG",
            Tool::Io => "QEMU_IO_PROG",
            Tool::Nbd => "QEMU_NBD_PROG",
            Tool::StorageDaemon => "QSD_PROG",
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

/// `cmd` run in the directory of the case's copy when it has companions
/// ([`crate::runner::case_env::dir`]): QEMU resolves a relative external
/// data file name against its working directory, not the image's.
pub(crate) fn in_case_dir(cmd: std::process::Command) -> std::process::Command {
    crate::runner::case_env::run_in_dir(cmd)
}

/// The `--object` ID the runner gives the passphrase of an encrypted image.
const SECRET_ID: &str = "conform-sec0";

/// `args` for the case's encrypted image when the running case has a
/// secret ([`crate::runner::case_env`]), else unchanged: each `-f qcow2`
/// becomes `--object secret,id=...,data=SECRET --image-opts`, and the first
/// existing file after it (the image) becomes
/// `driver=qcow2,file.filename=IMAGE,encrypt.key-secret=...` (commas
/// doubled, as QEMU's option syntax wants). A subcommand (`qemu-img info`)
/// stays first, since `-f` always follows it.
pub(crate) fn with_secret(args: &[OsString]) -> Vec<OsString> {
    let Some(secret) = crate::runner::case_env::current() else {
        return args.to_vec();
    };
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut i = 0;
    let mut want_image = false;
    while i < args.len() {
        let a = &args[i];
        if a == "-f" && args.get(i + 1).is_some_and(|f| f == "qcow2") {
            out.push(os("--object"));
            out.push(os(format!(
                "secret,id={SECRET_ID},data={}",
                secret.replace(',', ",,")
            )));
            out.push(os("--image-opts"));
            want_image = true;
            i += 2;
            continue;
        }
        if want_image && Path::new(a).is_file() {
            let name = a.to_string_lossy().replace(',', ",,");
            out.push(os(format!(
                "driver=qcow2,file.filename={name},encrypt.key-secret={SECRET_ID}"
            )));
            want_image = false;
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    out
}

/// QEMU's version as `qemu-img --version` tells it: `10.0.2` from the
/// first line `qemu-img version 10.0.2 (Debian ...)`, the line as detail.
pub fn identity(img: &Path) -> Identity {
    let out = std::process::Command::new(img)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let line = text.lines().next().unwrap_or("").trim();
    let mut words = line.split_whitespace();
    let version = words
        .by_ref()
        .find(|w| *w == "version")
        .and_then(|_| words.next())
        .map(str::to_owned);
    Identity {
        product: Some("QEMU".into()),
        version,
        detail: (!line.is_empty()).then(|| line.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_turns_the_image_into_image_opts() {
        let d = tempfile::tempdir().unwrap();
        let image = d.path().join("a,b.qcow2");
        std::fs::write(&image, b"").unwrap();
        let args = vec![
            os("info"),
            os("-f"),
            os("qcow2"),
            os("--output=json"),
            os(&image),
        ];
        assert_eq!(with_secret(&args), args);
        let _s = crate::runner::case_env::scope(Some("p,w"));
        let got = with_secret(&args);
        assert_eq!(
            got,
            vec![
                os("info"),
                os("--object"),
                os("secret,id=conform-sec0,data=p,,w"),
                os("--image-opts"),
                os("--output=json"),
                os(format!(
                    "driver=qcow2,file.filename={},,b.qcow2,encrypt.key-secret=conform-sec0",
                    d.path().join("a").display()
                )),
            ]
        );
    }
}
