//! What a campaign remembers between runs (`OUT/state.json`), how it
//! resumes, and its command-line values (`--shard K/N`, `--duration`).
//!
//! `state.json` is written atomically: the new state goes to
//! `state.json.tmp`, is flushed to disk (`fsync`), the current file
//! becomes `state.json.prev` and the new one is renamed into place (then
//! the directory is flushed). Each copy carries a checksum (`checksum`:
//! the SHA-256 of the state's compact JSON without it), and is read only
//! as a regular file within [`input::STATE_CAP`]. A `state.json` that is
//! missing or damaged (not UTF-8, does not parse, wrong checksum, not a
//! regular file: cut short by a crash of the disk or of something else
//! that wrote it) is set aside as `state.json.damaged` and the campaign
//! resumes from `state.json.prev` with a warning; every finding saved
//! under `OUT/findings/` is counted in the recovered state, so none is
//! saved over and none is lost. When no good copy is left (both damaged,
//! or the state missing and its previous copy damaged), the campaign
//! refuses to start and leaves both files as they are: it never starts
//! afresh over a state it cannot read.

use crate::runner::corpus::input;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A `--shard` or `--duration` value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("expected K/N, e.g. 2/4")]
    ShardForm,
    #[error("bad shard index {0:?}")]
    ShardIndex(String),
    #[error("bad shard count {0:?}")]
    ShardCount(String),
    #[error("shard {0} must satisfy 1 <= K <= N")]
    ShardRange(String),
    #[error("bad duration {0:?}")]
    Duration(String),
    #[error("bad duration unit in {0:?} (use s, m or h)")]
    DurationUnit(String),
}

/// Which slice of the case sequence this process runs (1-based `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Whether this shard runs case `index`: shards take the case indices
    /// in turn.
    pub fn runs(&self, index: u64) -> bool {
        index % self.count == self.index - 1
    }
}

impl std::str::FromStr for Shard {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Shard, ArgError> {
        let (k, n) = s.split_once('/').ok_or(ArgError::ShardForm)?;
        let (index, count): (u64, u64) = (
            k.parse().map_err(|_| ArgError::ShardIndex(k.to_string()))?,
            n.parse().map_err(|_| ArgError::ShardCount(n.to_string()))?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(ArgError::ShardRange(s.to_string()));
        }
        Ok(Shard { index, count })
    }
}

/// Parses `90`, `90s`, `10m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let (num, unit) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| ArgError::Duration(s.to_string()))?;
    let secs = match unit {
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(ArgError::DurationUnit(s.to_string())),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// What the campaign remembers between runs (`OUT/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub implementation: String,
    pub seed: u64,
    pub shard: Option<Shard>,
    /// The next case index to run.
    pub next_index: u64,
    pub cases_run: u64,
    /// Outcomes per kind over all cases run.
    pub outcomes: BTreeMap<String, u64>,
    /// Disagreements per deduplication key (the first one of each is saved).
    pub disagreements: BTreeMap<String, u64>,
    /// SHA-256 (hex) of this state's compact JSON without the checksum,
    /// as written; absent only in states written before checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The state file's siblings: the previous good copy, the next one being
/// written, and a damaged one set aside.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// What reading one copy of the state found.
enum Found {
    Good(State),
    Missing,
    Damaged(String),
}

/// Reads the state at `path`: a regular file within [`input::STATE_CAP`],
/// UTF-8, JSON of a [`State`] whose checksum matches.
fn read_state(path: &Path) -> Found {
    let bytes = match input::read_capped(path, input::STATE_CAP, "a campaign state") {
        Ok(b) => b,
        Err(e)
            if e.open_error().map(std::io::Error::kind) == Some(std::io::ErrorKind::NotFound) =>
        {
            return Found::Missing
        }
        Err(e) => return Found::Damaged(e.to_string()),
    };
    let text = match input::utf8(bytes, path) {
        Ok(t) => t,
        Err(e) => return Found::Damaged(e.to_string()),
    };
    let s: State = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => return Found::Damaged(format!("{} does not parse ({e})", path.display())),
    };
    match &s.checksum {
        Some(c) if *c != s.digest() => Found::Damaged(format!(
            "{} does not match its checksum (damaged)",
            path.display()
        )),
        _ => Found::Good(s),
    }
}

impl State {
    /// Takes the next case index that `shard` runs (every index without
    /// one): the state moves past it, and past the other shards' indices
    /// before it.
    pub fn take_index(&mut self, shard: Option<Shard>) -> u64 {
        loop {
            let index = self.next_index;
            self.next_index += 1;
            if shard.is_none_or(|sh| sh.runs(index)) {
                return index;
            }
        }
    }

    /// The state at `path` when it belongs to the same implementation,
    /// seed and shard (an error when it belongs to another campaign), or
    /// a fresh one when there is none. A damaged `path` is recovered from
    /// its previous good copy (see the module doc), with a warning on
    /// standard error.
    pub fn resume(
        path: &Path,
        implementation: &str,
        seed: u64,
        shard: Option<Shard>,
    ) -> Result<State> {
        let prev = sibling(path, ".prev");
        let fresh = || State {
            implementation: implementation.to_string(),
            seed,
            shard,
            ..State::default()
        };
        let mut s = match (read_state(path), read_state(&prev)) {
            (Found::Good(s), _) => s,
            (Found::Missing, Found::Missing) => fresh(),
            (damaged, Found::Good(s)) => {
                let why = match &damaged {
                    Found::Damaged(why) => {
                        let aside = sibling(path, ".damaged");
                        std::fs::rename(path, &aside)
                            .with_context(|| format!("cannot move {} aside", path.display()))?;
                        why.clone()
                    }
                    _ => format!("{} is missing", path.display()),
                };
                eprintln!(
                    "campaign: warning: {why}; resuming from {} ({} cases run)",
                    prev.display(),
                    s.cases_run
                );
                s
            }
            (damaged, prev_copy) => {
                let why = match damaged {
                    Found::Damaged(why) => why,
                    _ => format!("{} is missing", path.display()),
                };
                let prev_why = match prev_copy {
                    Found::Damaged(why) => why,
                    _ => format!("{} is missing", prev.display()),
                };
                anyhow::bail!(
                    "{why}, and there is no good previous copy ({prev_why}); both files were left \
                     as they are: move them away to start afresh"
                )
            }
        };
        if s.checksum.is_none() && path.exists() {
            eprintln!(
                "campaign: warning: {} carries no checksum (written by an older version); it gets one when next saved",
                path.display()
            );
        }
        if s.implementation != implementation || s.seed != seed || s.shard != shard {
            anyhow::bail!(
                "{} belongs to another campaign (implementation {}, seed {}); use a new --out",
                path.display(),
                s.implementation,
                s.seed
            );
        }
        // Findings saved after the state last was: known, never saved over.
        let findings = path.parent().unwrap_or(Path::new(".")).join("findings");
        if let Ok(list) = std::fs::read_dir(&findings) {
            for e in list.flatten() {
                if e.path().join("finding.json").is_file() {
                    let key = e.file_name().to_string_lossy().into_owned();
                    s.disagreements.entry(key).or_insert(1);
                }
            }
        }
        Ok(s)
    }

    /// The SHA-256 (hex) of this state's compact JSON without its
    /// checksum.
    fn digest(&self) -> String {
        use sha2::Digest;
        let bare = State {
            checksum: None,
            ..self.clone()
        };
        let json = serde_json::to_vec(&bare).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(json))
    }

    /// Saves the state to `path` atomically, with its checksum (see the
    /// module doc).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = sibling(path, ".tmp");
        let sealed = State {
            checksum: Some(self.digest()),
            ..self.clone()
        };
        let text = serde_json::to_string_pretty(&sealed)? + "\n";
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            if path.exists() {
                std::fs::rename(path, sibling(path, ".prev"))?;
            }
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        written.with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory and the `state.json` in it.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        (d, path)
    }

    /// The state at `path` of a `qemu` campaign with seed 7, unsharded.
    fn resume(path: &Path) -> Result<State> {
        State::resume(path, "qemu", 7, None)
    }

    #[test]
    fn a_damaged_state_is_recovered_from_its_previous_copy_with_every_finding() {
        let (d, path) = scratch();
        let mut s = resume(&path).unwrap();
        s.next_index = 10;
        s.cases_run = 10;
        s.write(&path).unwrap();
        s.next_index = 11;
        s.cases_run = 11;
        s.disagreements.insert("mismatch-a".into(), 1);
        s.write(&path).unwrap();
        // A finding saved after the last good write, then a torn state.
        let f = d.path().join("findings").join("crash-b");
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("finding.json"), "{}").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let r = resume(&path).unwrap();
        assert_eq!(r.next_index, 10);
        assert_eq!(r.disagreements.get("crash-b"), Some(&1));
        assert!(sibling(&path, ".damaged").is_file());
        // Both copies damaged: an error, not a fresh start over them.
        std::fs::write(&path, "{").unwrap();
        std::fs::write(sibling(&path, ".prev"), "").unwrap();
        let e = resume(&path).unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
    }

    #[test]
    fn a_changed_state_fails_its_checksum_and_no_damaged_pair_restarts() {
        let (_d, path) = scratch();
        let mut s = resume(&path).unwrap();
        s.cases_run = 5;
        s.write(&path).unwrap();
        s.cases_run = 6;
        s.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"checksum\""), "{text}");
        // A valid JSON edit that the checksum catches: back to `.prev`.
        std::fs::write(&path, text.replace("\"cases_run\": 6", "\"cases_run\": 9")).unwrap();
        assert_eq!(resume(&path).unwrap().cases_run, 5);
        // Missing state, damaged previous copy: refused, the copy kept.
        let prev = sibling(&path, ".prev");
        std::fs::write(&prev, b"{\xff}").unwrap();
        let _ = std::fs::remove_file(&path);
        let e = resume(&path).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        assert_eq!(std::fs::read(&prev).unwrap(), b"{\xff}");
    }
}
