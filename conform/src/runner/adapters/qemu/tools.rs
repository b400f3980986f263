//! Finding QEMU's command-line tools (`qemu-img`, `qemu-io`, `qemu-nbd`),
//! as one [`Toolset`] (the machine's, or one installation prefix such as
//! the QEMU 7.2 that `scripts/setup.sh` unpacks), building their argument
//! lists, and reading a failure from their output.
//!
//! A missing tool is an error that names the tool and how to point at it
//! (an environment variable such as `QEMU_IMG_PROG`, or the prefix that
//! lacks it), never a silent skip.

use crate::runner::adapter::Identity;
use crate::runner::process::{self, Limits, Proc};
use anyhow::{bail, Context, Result};
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

/// One installation of QEMU's tools, and how to run them: each tool's
/// path, and the private library directories of a prefix (put on
/// `LD_LIBRARY_PATH` for every program the set runs).
#[derive(Debug, Clone)]
pub struct Toolset {
    pub img: PathBuf,
    pub io: PathBuf,
    pub nbd: PathBuf,
    /// `qemu-storage-daemon`, when the installation has one (`qemu-live`).
    pub storage_daemon: Option<PathBuf>,
    /// The prefix the tools come from; `None` for the machine's own
    /// (environment overrides or `PATH`).
    pub prefix: Option<PathBuf>,
    /// Library directories of the prefix that exist, searched first.
    pub lib_dirs: Vec<PathBuf>,
}

impl Toolset {
    /// The machine's tools: each from its environment override
    /// (`QEMU_IMG_PROG` etc.) or `PATH` ([`Tool::locate`]).
    pub fn from_path() -> Result<Toolset> {
        Ok(Toolset {
            img: Tool::Img.locate()?,
            io: Tool::Io.locate()?,
            nbd: Tool::Nbd.locate()?,
            storage_daemon: Tool::StorageDaemon.locate().ok(),
            prefix: None,
            lib_dirs: Vec::new(),
        })
    }

    /// The tools of an installation prefix: `DIR/bin/qemu-img` etc. (a
    /// `./configure --prefix=DIR` build), or `DIR/usr/bin/...` (a Debian
    /// package unpacked with `dpkg -x` into `DIR`). Its `lib`, `lib64` and
    /// `lib/<triple>` directories (and those of `DIR` for an unpacked
    /// package) are searched for libraries before the system's.
    pub fn from_prefix(dir: &Path) -> Result<Toolset> {
        let bin_of = |p: &Path| p.join("bin").join(Tool::Img.program());
        let prefix = if is_executable(&bin_of(dir)) {
            dir.to_path_buf()
        } else if is_executable(&bin_of(&dir.join("usr"))) {
            dir.join("usr")
        } else {
            bail!(
                "no QEMU in {}: neither bin/qemu-img nor usr/bin/qemu-img is there \
                 (scripts/setup.sh unpacks QEMU 7.2 for `qemu@7.2`)",
                dir.display()
            );
        };
        let find = |tool: Tool| -> Result<PathBuf> {
            let p = prefix.join("bin").join(tool.program());
            if is_executable(&p) {
                Ok(p)
            } else {
                bail!("the QEMU prefix {} has no bin/{tool}", prefix.display())
            }
        };
        let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
        let mut roots = vec![prefix.clone()];
        if prefix != dir {
            roots.push(dir.to_path_buf());
        }
        let lib_dirs = roots
            .iter()
            .flat_map(|r| [r.join("lib").join(&triple), r.join("lib"), r.join("lib64")])
            .filter(|d| d.is_dir())
            .collect();
        Ok(Toolset {
            img: find(Tool::Img)?,
            io: find(Tool::Io)?,
            nbd: find(Tool::Nbd)?,
            storage_daemon: find(Tool::StorageDaemon).ok(),
            prefix: Some(prefix),
            lib_dirs,
        })
    }

    /// The path of `tool` in this set.
    pub fn path(&self, tool: Tool) -> &Path {
        match tool {
            Tool::Img => &self.img,
            Tool::Io => &self.io,
            Tool::Nbd => &self.nbd,
            // A set without a daemon names the program, whose start then
            // fails with its name.
            Tool::StorageDaemon => self
                .storage_daemon
                .as_deref()
                .unwrap_or(Path::new("qemu-storage-daemon")),
        }
    }

    /// `program` (one of this set's tools) with `args` under `limits`, as
    /// [`process::command`] builds it, run in the case's directory
    /// ([`in_case_dir`]) and with the prefix's libraries first on
    /// `LD_LIBRARY_PATH`.
    pub fn command(
        &self,
        program: &Path,
        args: &[OsString],
        limits: &Limits,
    ) -> std::process::Command {
        let reads: Vec<PathBuf> = self.prefix.iter().chain(&self.lib_dirs).cloned().collect();
        let mut cmd = in_case_dir(process::command_reading(
            program.as_os_str(),
            args,
            limits,
            &reads,
        ));
        if !self.lib_dirs.is_empty() {
            let mut dirs = self.lib_dirs.clone();
            if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                dirs.extend(std::env::split_paths(&old));
            }
            if let Ok(joined) = std::env::join_paths(dirs) {
                cmd.env("LD_LIBRARY_PATH", joined);
            }
        }
        cmd
    }

    /// The first line of `qemu-img --version` (e.g. `qemu-img version
    /// 10.0.2 (Debian ...)`).
    pub fn version_line(&self) -> Result<String> {
        let limits = Limits {
            timeout: std::time::Duration::from_secs(30),
            memory_bytes: None,
        };
        let p = process::run(
            self.command(&self.img, &[os("--version")], &limits),
            limits.timeout,
        )
        .with_context(|| format!("cannot run {} --version", self.img.display()))?;
        match p.stdout.lines().next() {
            Some(l) if p.success() => Ok(l.to_owned()),
            _ => bail!(
                "{} --version failed: {}",
                self.img.display(),
                p.describe_end()
            ),
        }
    }

    /// What this QEMU is, for reports and expectations: `QEMU`, the
    /// version number and the full `qemu-img --version` line.
    pub fn identity(&self) -> Identity {
        let line = self.version_line().ok();
        Identity {
            product: Some("QEMU".into()),
            version: self.version().ok(),
            detail: line,
        }
    }

    /// The version number of `qemu-img --version` (`10.0.2`).
    pub fn version(&self) -> Result<String> {
        let line = self.version_line()?;
        match line
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
        {
            Some(v) => Ok(v.to_owned()),
            None => bail!("no version number in {line:?}"),
        }
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
        .filter(|l| !crate::runner::process::is_sanitizer_note(l))
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
/// ([`crate::runner::process::case_env::dir`]): QEMU resolves a relative external
/// data file name against its working directory, not the image's.
pub(crate) fn in_case_dir(cmd: std::process::Command) -> std::process::Command {
    crate::runner::process::case_env::run_in_dir(cmd)
}

/// The `--object` ID the runner gives the passphrase of an encrypted image.
const SECRET_ID: &str = "conform-sec0";

/// A tool's arguments with the case image's graph pinned
/// ([`super::pin`]), and the image's path to show where QEMU echoes the
/// pinned filename.
#[derive(Debug, Clone)]
pub(crate) struct Pinned {
    pub args: Vec<OsString>,
    /// The image's path as the caller gave it (`None`: no image argument).
    pub image: Option<String>,
}

impl Pinned {
    /// `p`'s messages (standard error) with the pinned filename turned
    /// back into the image's path ([`super::pin::unpin`]), so that they
    /// read as they did when QEMU was given the bare path. Standard output
    /// is left alone: it is JSON the adapter parses (where a filename
    /// appears escaped inside a string) or counts.
    pub fn unpin(&self, p: &mut Proc) {
        if let Some(shown) = &self.image {
            p.stderr = super::pin::unpin(&p.stderr, shown);
        }
    }
}

/// `args` with the image pinned: the first existing file after each
/// `-f qcow2` (the image) becomes `json:{...}` naming its whole graph
/// ([`super::pin::graph`]): its `file`, `backing` (`null` for `qemu-img
/// info` and `qemu-img bitmap`, which open no backing file and refuse one
/// named) and `data-file`. When the running case has a secret
/// ([`crate::runner::process::case_env`]), `--object secret,id=...,data=SECRET`
/// goes before `-f` and the image's options get `encrypt.key-secret`.
/// `Err` when the image names a file the graph may not follow: the tool
/// must not be started.
pub(crate) fn pinned(args: &[OsString]) -> Result<Pinned, super::pin::PinError> {
    use super::pin::{self, Backing};
    let secret = crate::runner::process::case_env::current();
    let backing = if args.first().is_some_and(|a| a == "info" || a == "bitmap") {
        Backing::Skip
    } else {
        Backing::Open
    };
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut image = None;
    let mut want_image = false;
    for (i, a) in args.iter().enumerate() {
        if a == "-f" && args.get(i + 1).is_some_and(|f| f == "qcow2") {
            if let Some(s) = &secret {
                out.push(os("--object"));
                out.push(os(format!(
                    "secret,id={SECRET_ID},data={}",
                    s.replace(',', ",,")
                )));
            }
            want_image = true;
        } else if want_image && Path::new(a).is_file() {
            let path = Path::new(a);
            let mut opts = pin::graph(path)?.options(backing);
            if secret.is_some() {
                opts.insert("encrypt.key-secret".into(), SECRET_ID.into());
            }
            out.push(os(pin::json_filename(&opts)));
            image.get_or_insert_with(|| path.to_string_lossy().into_owned());
            want_image = false;
            continue;
        }
        out.push(a.clone());
    }
    Ok(Pinned { args: out, image })
}

/// QEMU's version as `qemu-img --version` tells it: `10.0.2` from the
/// first line `qemu-img version 10.0.2 (Debian ...)`, the line as detail.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_gets_its_graph_and_the_secret() {
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
        let file = serde_json::json!({"driver": "file", "filename": image.to_str().unwrap()});
        let plain = pinned(&args).unwrap();
        assert_eq!(plain.args[..4], args[..4]);
        let opts: serde_json::Value = serde_json::from_str(
            plain.args[4]
                .to_str()
                .unwrap()
                .strip_prefix("json:")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            opts,
            serde_json::json!({"driver": "qcow2", "file": file, "backing": null})
        );
        let _s = crate::runner::process::case_env::scope(Some("p,w"));
        let got = pinned(&args).unwrap();
        assert_eq!(
            got.args[..3],
            [
                os("info"),
                os("--object"),
                os("secret,id=conform-sec0,data=p,,w")
            ]
        );
        assert_eq!(got.args[3..5], [os("-f"), os("qcow2")]);
        assert!(got.args[6]
            .to_str()
            .unwrap()
            .contains(r#""encrypt.key-secret":"conform-sec0""#));
        assert_eq!(got.image.as_deref(), image.to_str());
    }
}
