//! What a campaign remembers between runs (`OUT/state.json`), how it
//! resumes, and its command-line values (`--shard K/N`, `--duration`).
//!
//! `state.json` is written atomically: the new state goes to
//! `state.json.tmp`, is flushed to disk (`fsync`), the current file
//! becomes `state.json.prev` and the new one is renamed into place (then
//! the directory is flushed). A `state.json` that is missing or does not
//! parse (cut short by a crash of the disk or of something else that wrote
//! it) is set aside as `state.json.damaged` and the campaign resumes from
//! `state.json.prev` with a warning; every finding saved under
//! `OUT/findings/` is counted in the recovered state, so none is saved
//! over and none is lost.

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
}

/// The state file's siblings: the previous good copy, the next one being
/// written, and a damaged one set aside.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The state in `path`, if it reads and parses.
fn read_state(path: &Path) -> Option<Result<State, serde_json::Error>> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| serde_json::from_str(&t))
}

impl State {
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
        let mut s = match read_state(path) {
            Some(Ok(s)) => s,
            damaged => {
                let why = match &damaged {
                    Some(Err(e)) => format!("{} does not parse ({e})", path.display()),
                    _ => format!("{} is missing", path.display()),
                };
                match read_state(&prev) {
                    Some(Ok(s)) => {
                        if path.exists() {
                            let aside = sibling(path, ".damaged");
                            std::fs::rename(path, &aside).with_context(|| {
                                format!("cannot move {} aside", path.display())
                            })?;
                        }
                        eprintln!(
                            "campaign: warning: {why}; resuming from {} ({} cases run)",
                            prev.display(),
                            s.cases_run
                        );
                        s
                    }
                    _ if damaged.is_some() => anyhow::bail!(
                        "{why}, and there is no good previous copy ({}); move it away to start afresh",
                        prev.display()
                    ),
                    _ => State {
                        implementation: implementation.to_string(),
                        seed,
                        shard,
                        ..State::default()
                    },
                }
            }
        };
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

    /// Saves the state to `path` atomically (see the module doc).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = sibling(path, ".tmp");
        let text = serde_json::to_string_pretty(self)? + "\n";
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

    #[test]
    fn a_damaged_state_is_recovered_from_its_previous_copy_with_every_finding() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        let mut s = State::resume(&path, "qemu", 7, None).unwrap();
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
        let r = State::resume(&path, "qemu", 7, None).unwrap();
        assert_eq!(r.next_index, 10);
        assert_eq!(r.disagreements.get("crash-b"), Some(&1));
        assert!(sibling(&path, ".damaged").is_file());
        // Both copies damaged: an error, not a fresh start over them.
        std::fs::write(&path, "{").unwrap();
        std::fs::write(sibling(&path, ".prev"), "").unwrap();
        let e = State::resume(&path, "qemu", 7, None).unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
    }
}
