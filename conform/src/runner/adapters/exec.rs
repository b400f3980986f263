//! Any program as an implementation under test, through the exec protocol
//! (version 1, documented in the corpus's `PROTOCOL.md`):
//!
//! - `PROGRAM capabilities` prints
//!   `{"protocol": 1, "capabilities": ["observe", "write"], "name": ..., "version": ...}`
//!   (`name` and `version` optional); asked once before any case, and a
//!   program that cannot start or does not answer it stops the run
//!   ([`SetupError`]);
//! - `PROGRAM observe IMAGE` prints one JSON object
//!   `{"protocol": 1, "opened": bool, "error": string|null, "bitmaps": [...]}`;
//! - `PROGRAM read IMAGE OFFSET:LEN...` (with the `read` capability and
//!   without `observe`: a program that does not know bitmaps) prints the
//!   SHA-256 of the guest data of each range ([`super::exec_read`]);
//! - `PROGRAM write IMAGE OFFSET LEN` (optional) writes `LEN` bytes of guest
//!   data at virtual offset `OFFSET` and prints
//!   `{"protocol": 1, "ok": bool, "error": string|null}`.
//!
//! `PROGRAM` is a command template: words split as a shell would (quotes
//! group, no expansion), the verb and its arguments appended.

use super::exec_read::{self, ReadReply};
use crate::runner::adapter::{Adapter, Capabilities, Identity, WriteRun};
use crate::runner::observation::{Observation, ObservedBitmap, ObservedFlags};
use crate::runner::process::{self, Limits, Proc};
use anyhow::{bail, Result};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

/// The protocol version this runner speaks.
pub const PROTOCOL: u32 = 1;

/// How long `PROGRAM capabilities` may take.
const CAPABILITIES_TIMEOUT: Duration = Duration::from_secs(10);

/// A program speaking the exec protocol.
pub struct ExecAdapter {
    name: String,
    argv: Vec<String>,
    can_write: bool,
    /// The program does not know bitmaps: it answers `read`, not `observe`.
    reads_guest: bool,
    /// What it calls itself in its `capabilities` answer (optional
    /// `name`/`version` of protocol 1), if it says.
    identity: Identity,
    /// What the template names that the sandbox lets it read (a script
    /// and its directory).
    reads: Vec<std::path::PathBuf>,
}

/// The directories of the template's words that name existing files
/// (an interpreter's script, a configuration file), and the directories
/// it names: readable in the sandbox ([`crate::runner::process::sandbox`]).
fn template_paths(argv: &[String]) -> Vec<std::path::PathBuf> {
    argv.iter()
        .filter(|w| w.contains('/'))
        .filter_map(|w| std::fs::canonicalize(w).ok())
        .filter_map(|p| {
            if p.is_dir() {
                Some(p)
            } else {
                p.parent().map(Path::to_path_buf)
            }
        })
        .collect()
}

/// The name an exec program's results, columns and expectations are
/// keyed by: the `name` of its `capabilities` answer, else `exec:` and its
/// template with every path cut to its file name; either way with each
/// character that is not a letter, a digit or one of `._-+@:` replaced by
/// `_` and at most 64 characters. It never depends on the working
/// directory or on how the program's path is written, and has no spaces
/// (JUnit names).
pub fn implementation_key(product: Option<&str>, argv: &[String]) -> String {
    let raw = match product.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => n.to_owned(),
        None => {
            let words: Vec<&str> = argv
                .iter()
                .map(|w| match w.rsplit_once('/') {
                    Some((_, f)) if !f.is_empty() => f,
                    _ => w.as_str(),
                })
                .collect();
            format!("exec:{}", words.join(" "))
        }
    };
    raw.chars()
        .map(|c| {
            if c.is_alphanumeric() || "._-+@:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Why an exec program cannot be used at all: the run stops before any
/// case (`qcow2-conform run` exits 1 with this one line).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("exec adapter {template:?}: {error}")]
    Start {
        template: String,
        /// The spawn error (it names the command line).
        error: std::io::Error,
    },
    #[error(
        "exec adapter {template:?}: `capabilities` failed ({end}{stderr}); every exec program \
         must answer it (see PROTOCOL.md in the corpus)"
    )]
    Capabilities {
        template: String,
        /// How the program ended.
        end: String,
        /// `: last stderr line`, or empty.
        stderr: String,
    },
    #[error("exec adapter {template:?}: `capabilities` answer unusable: {why}")]
    Answer { template: String, why: String },
}

#[derive(Debug, Deserialize)]
struct CapabilitiesReply {
    protocol: u32,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ObserveReply {
    protocol: u32,
    opened: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, deserialize_with = "crate::runner::capped::bitmaps")]
    bitmaps: Vec<BitmapReply>,
    #[serde(default)]
    cannot_decrypt: bool,
}

#[derive(Debug, Deserialize)]
struct BitmapReply {
    name: String,
    #[serde(default)]
    granularity_bits: Option<u8>,
    #[serde(default)]
    flags: ObservedFlags,
    #[serde(default)]
    usable: bool,
    #[serde(default)]
    content_sha256: Option<String>,
    #[serde(default)]
    set_bits: Option<u64>,
    #[serde(default)]
    dirty_ranges: Option<Vec<(u64, u64)>>,
}

#[derive(Debug, Deserialize)]
struct WriteReply {
    protocol: u32,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

/// Splits a command template into words: whitespace separates, single
/// quotes keep everything, double quotes keep everything but `\"` and
/// `\\`, a backslash outside quotes escapes the next character.
pub fn split_template(t: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = t.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => bail!("unterminated ' in command template {t:?}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => bail!("unterminated \" in command template {t:?}"),
                        },
                        Some(x) => cur.push(x),
                        None => bail!("unterminated \" in command template {t:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(x) => cur.push(x),
                    None => bail!("trailing \\ in command template {t:?}"),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        bail!("empty command template");
    }
    Ok(words)
}

/// A program's stdout held no protocol object.
#[derive(Debug, thiserror::Error)]
#[error("no protocol object on stdout ({whole}); stdout began: {began:?}")]
pub struct NoReply {
    /// Why all of stdout is not the object.
    #[source]
    whole: serde_json::Error,
    /// The first 200 characters of stdout.
    began: String,
}

/// The JSON object a program printed: all of stdout, or else its last
/// non-empty line.
fn parse_reply<T: serde::de::DeserializeOwned>(stdout: &str) -> Result<T, NoReply> {
    match serde_json::from_str::<T>(stdout.trim()) {
        Ok(v) => Ok(v),
        Err(whole) => {
            let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
            match last.map(|l| serde_json::from_str::<T>(l.trim())) {
                Some(Ok(v)) => Ok(v),
                _ => Err(NoReply {
                    whole,
                    began: stdout.chars().take(200).collect(),
                }),
            }
        }
    }
}

/// Why a finished program run gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No answer object on stdout (with how the program ended).
    #[error("{0}")]
    NoAnswer(String),
    /// An answer of a protocol version the runner does not speak.
    #[error("protocol {0} is not supported (the runner speaks {PROTOCOL})")]
    Protocol(u32),
}

/// The answer object of a finished program run, or why it is no usable
/// answer (none on stdout, or of a protocol version the runner does not
/// speak; `version` reads the object's `protocol`).
fn answer<T: serde::de::DeserializeOwned>(
    p: &Proc,
    version: fn(&T) -> u32,
) -> Result<T, AnswerError> {
    let r = parse_reply::<T>(&p.stdout)
        .map_err(|e| AnswerError::NoAnswer(format!("{e} ({})", p.describe_end())))?;
    match version(&r) {
        PROTOCOL => Ok(r),
        v => Err(AnswerError::Protocol(v)),
    }
}

/// The exit statuses by which a shell says a program could not be
/// executed (126) or was not found (127).
const CANNOT_EXECUTE: [i32; 2] = [126, 127];

impl ExecAdapter {
    /// An adapter for `template`; asks the program for its capabilities.
    /// Fails ([`SetupError`]) when the program cannot be started, or its
    /// `capabilities` answer is missing, malformed, of another protocol
    /// version, or comes from a program that crashed, hung or exited with
    /// a non-zero status.
    pub fn new(template: &str) -> Result<ExecAdapter> {
        ExecAdapter::with_limits(
            template,
            &Limits {
                timeout: CAPABILITIES_TIMEOUT,
                memory_bytes: None,
            },
        )
    }

    /// [`ExecAdapter::new`], the `capabilities` call under `limits` (the
    /// run's `--timeout` and `--memory`, as every other call).
    pub fn with_limits(template: &str, limits: &Limits) -> Result<ExecAdapter> {
        let argv = split_template(template)?;
        let reads = template_paths(&argv);
        // A program that is not there cannot start (said before a shell
        // in the template would turn it into exit status 127).
        if crate::runner::process::sandbox::locate(std::ffi::OsStr::new(&argv[0])).is_none() {
            return Err(SetupError::Start {
                template: template.to_owned(),
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("cannot start `{}`: no such program", argv[0]),
                ),
            }
            .into());
        }
        let mut a = ExecAdapter {
            name: format!("exec:{template}"),
            argv,
            can_write: false,
            reads_guest: false,
            identity: Identity::default(),
            reads,
        };
        let p = a
            .run(&["capabilities".into()], limits)
            .map_err(|error| SetupError::Start {
                template: template.to_owned(),
                error,
            })?;
        let last_stderr = p
            .stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| format!(": {}", crate::runner::text::short(l)))
            .unwrap_or_default();
        let cannot_run = p.status.is_some_and(|c| CANNOT_EXECUTE.contains(&c));
        if !p.success() || p.sanitizer().is_some() {
            let end = if cannot_run {
                format!("{}: the program could not be executed", p.describe_end())
            } else {
                p.describe_end()
            };
            return Err(SetupError::Capabilities {
                template: template.to_owned(),
                end,
                stderr: last_stderr,
            }
            .into());
        }
        let r =
            answer::<CapabilitiesReply>(&p, |r| r.protocol).map_err(|why| SetupError::Answer {
                template: template.to_owned(),
                why: why.to_string(),
            })?;
        let has = |c: &str| r.capabilities.iter().any(|x| x == c);
        a.can_write = has("write");
        a.reads_guest = has("read") && !has("observe");
        a.name = implementation_key(r.name.as_deref(), &a.argv);
        a.identity.product = r.name;
        a.identity.version = r.version;
        a.identity.detail = Some(format!("exec:{template}"));
        Ok(a)
    }

    /// The program's own name and version from its `capabilities` answer
    /// (optional fields of protocol 1), for reports.
    pub fn reported(&self) -> (Option<&str>, Option<&str>) {
        (
            self.identity.product.as_deref(),
            self.identity.version.as_deref(),
        )
    }

    /// `PROGRAM read IMAGE OFFSET:LEN...` over the sample ranges, compared
    /// with the model: the observation of a program that does not know
    /// bitmaps.
    fn observe_guest(&self, image: &Path, limits: &Limits) -> Observation {
        let start = Instant::now();
        let mut obs = Observation {
            bitmaps_unaware: true,
            ..Observation::default()
        };
        let expect = exec_read::expectation(image);
        obs.notes.extend(expect.notes.iter().cloned());
        let mut args: Vec<OsString> = vec!["read".into(), image.into()];
        args.extend(exec_read::range_args(&expect.ranges));
        let Some(p) = obs.record_run(self.run(&args, limits), start) else {
            return obs;
        };
        match answer::<ReadReply>(&p, |r| r.protocol) {
            Err(e) => obs.protocol_error = Some(e.to_string()),
            Ok(r) => {
                obs.opened = r.opened;
                obs.error = r.error.clone();
                obs.cannot_decrypt = r.cannot_decrypt && !r.opened;
                if r.opened {
                    obs.guest = Some(exec_read::guest_check(&expect, &r));
                }
            }
        }
        obs
    }

    fn run(&self, verb_args: &[OsString], limits: &Limits) -> std::io::Result<Proc> {
        let mut args: Vec<OsString> = self.argv[1..].iter().map(OsString::from).collect();
        args.extend(verb_args.iter().cloned());
        let cmd = process::command_reading(
            std::ffi::OsStr::new(&self.argv[0]),
            &args,
            limits,
            &self.reads,
        );
        process::run(cmd, limits.timeout)
    }
}

impl Adapter for ExecAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn identity(&self) -> Identity {
        self.identity.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_metadata: !self.reads_guest,
            read_bitmap_contents: !self.reads_guest,
            read_guest_data: self.reads_guest,
            write_guest_data: self.can_write,
            uses_secret: true,
            ..Capabilities::default()
        }
    }

    fn observe(&self, image: &Path, limits: &Limits) -> Observation {
        if self.reads_guest {
            return self.observe_guest(image, limits);
        }
        let start = Instant::now();
        let mut obs = Observation::default();
        let Some(p) = obs.record_run(self.run(&["observe".into(), image.into()], limits), start)
        else {
            return obs;
        };
        match answer::<ObserveReply>(&p, |r| r.protocol) {
            Err(e) => obs.protocol_error = Some(e.to_string()),
            Ok(r) => {
                obs.opened = r.opened;
                obs.error = r.error;
                obs.cannot_decrypt = r.cannot_decrypt && !r.opened;
                obs.bitmaps = r
                    .bitmaps
                    .into_iter()
                    .map(|b| ObservedBitmap {
                        name: b.name,
                        granularity_bits: b.granularity_bits,
                        flags: b.flags,
                        usable: b.usable,
                        content_sha256: b.content_sha256.map(|s| s.to_ascii_lowercase()),
                        set_bits: b.set_bits,
                        dirty_ranges: b.dirty_ranges,
                        dirty_ranges_digest: None,
                        error: None,
                    })
                    .collect();
            }
        }
        obs
    }

    fn write(&self, image: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        let args: Vec<OsString> = vec![
            "write".into(),
            image.into(),
            offset.to_string().into(),
            len.to_string().into(),
        ];
        let p = match self.run(&args, limits) {
            Ok(p) => p,
            Err(e) => {
                return WriteRun {
                    error: Some(e.to_string()),
                    ..WriteRun::default()
                }
            }
        };
        let (ok, error) = if p.timed_out || p.signal.is_some() {
            (false, Some(p.describe_end()))
        } else {
            match parse_reply::<WriteReply>(&p.stdout) {
                Ok(r) if r.protocol == PROTOCOL => (r.ok && p.success(), r.error),
                Ok(r) => (
                    false,
                    Some(format!("protocol {} is not supported", r.protocol)),
                ),
                Err(e) => (false, Some(e.to_string())),
            }
        };
        WriteRun {
            ok,
            error,
            commands: vec![p.command.clone()],
            process: Some(p),
            ..WriteRun::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_templates() {
        assert_eq!(
            split_template(r#"python3 '/a b/x.py' --flag "q\"x" c\ d"#).unwrap(),
            vec!["python3", "/a b/x.py", "--flag", "q\"x", "c d"]
        );
        assert!(split_template("  ").is_err());
        assert!(split_template("'x").is_err());
    }

    #[test]
    fn keys_by_product_name_never_by_path() {
        let argv = |t: &str| split_template(t).unwrap();
        assert_eq!(
            implementation_key(Some("dissect.hypervisor"), &argv("/v/bin/python3 /a/x.py")),
            "dissect.hypervisor"
        );
        assert_eq!(
            implementation_key(None, &argv("venv/bin/python3 ../kit/x.py fast")),
            implementation_key(None, &argv("/opt/venv/bin/python3 /home/x.py fast"))
        );
        assert_eq!(implementation_key(None, &argv("sh x.sh")), "exec:sh_x.sh");
        assert_eq!(implementation_key(Some("my lib\u{1b}"), &[]), "my_lib_");
        assert_eq!(implementation_key(Some(&"n".repeat(99)), &[]).len(), 64);
    }
}
