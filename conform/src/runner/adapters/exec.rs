//! Any program as an implementation under test, through the exec protocol
//! (version 1, documented in `corpus/README.md`, "The exec protocol"):
//!
//! - `PROGRAM capabilities` (optional) prints
//!   `{"protocol": 1, "capabilities": ["observe", "write"]}`;
//! - `PROGRAM observe IMAGE` prints one JSON object
//!   `{"protocol": 1, "opened": bool, "error": string|null, "bitmaps": [...]}`;
//! - `PROGRAM write IMAGE OFFSET LEN` (optional) writes `LEN` bytes of guest
//!   data at virtual offset `OFFSET` and prints
//!   `{"protocol": 1, "ok": bool, "error": string|null}`.
//!
//! `PROGRAM` is a command template: words split as a shell would (quotes
//! group, no expansion), the verb and its arguments appended.

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
    identity: Identity,
}

#[derive(Debug, Deserialize)]
struct CapabilitiesReply {
    protocol: u32,
    #[serde(default)]
    capabilities: Vec<String>,
    /// Optional (protocol 1): the implementation's own name and version.
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

impl ExecAdapter {
    /// An adapter for `template`; asks the program for its capabilities.
    pub fn new(template: &str) -> Result<ExecAdapter> {
        let argv = split_template(template)?;
        let mut a = ExecAdapter {
            name: format!("exec:{template}"),
            argv,
            can_write: false,
            identity: Identity::default(),
        };
        let limits = Limits {
            timeout: CAPABILITIES_TIMEOUT,
            memory_bytes: None,
        };
        if let Ok(p) = a.run(&["capabilities".into()], &limits) {
            if p.success() {
                if let Ok(r) = parse_reply::<CapabilitiesReply>(&p.stdout) {
                    if r.protocol == PROTOCOL {
                        a.can_write = r.capabilities.iter().any(|c| c == "write");
                        a.identity.product = r.name;
                        a.identity.version = r.version;
                    }
                }
            }
        }
        Ok(a)
    }

    fn run(&self, verb_args: &[OsString], limits: &Limits) -> std::io::Result<Proc> {
        let mut args: Vec<OsString> = self.argv[1..].iter().map(OsString::from).collect();
        args.extend(verb_args.iter().cloned());
        let cmd = process::command(std::ffi::OsStr::new(&self.argv[0]), &args, limits);
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
            read_metadata: true,
            read_bitmap_contents: true,
            write_guest_data: self.can_write,
            ..Capabilities::default()
        }
    }

    fn observe(&self, image: &Path, limits: &Limits) -> Observation {
        let start = Instant::now();
        let mut obs = Observation::default();
        let Some(p) = obs.record_run(self.run(&["observe".into(), image.into()], limits), start)
        else {
            return obs;
        };
        match parse_reply::<ObserveReply>(&p.stdout) {
            Err(e) => obs.protocol_error = Some(format!("{e} ({})", p.describe_end())),
            Ok(r) if r.protocol != PROTOCOL => {
                obs.protocol_error = Some(format!(
                    "protocol {} is not supported (the runner speaks {PROTOCOL})",
                    r.protocol
                ))
            }
            Ok(r) => {
                obs.opened = r.opened;
                obs.error = r.error;
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
}
