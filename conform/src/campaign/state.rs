//! What a campaign remembers between runs (`OUT/state.json`), how it
//! resumes, and its command-line values (`--shard K/N`, `--duration`).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
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

impl State {
    /// The state at `path` when it belongs to the same implementation,
    /// seed and shard (an error when it belongs to another campaign), or
    /// a fresh one when there is none.
    pub fn resume(
        path: &Path,
        implementation: &str,
        seed: u64,
        shard: Option<Shard>,
    ) -> Result<State> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let s: State = serde_json::from_str(&text).context("state.json")?;
                if s.implementation == implementation && s.seed == seed && s.shard == shard {
                    Ok(s)
                } else {
                    anyhow::bail!(
                        "{} belongs to another campaign (implementation {}, seed {}); use a new --out",
                        path.display(),
                        s.implementation,
                        s.seed
                    );
                }
            }
            Err(_) => Ok(State {
                implementation: implementation.to_string(),
                seed,
                shard,
                ..State::default()
            }),
        }
    }

    /// Saves the state to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}
