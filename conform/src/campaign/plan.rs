//! What every campaign (images, sequences, backup chains) is given: the
//! seed and shard that say which cases it runs, the directory its state
//! and findings go to ([`Plan`]), and how long and how many ([`Budget`]).

use super::state::{Shard, State};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A campaign's cases, output directory and budget.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub shard: Option<Shard>,
    /// Holds `state.json`, `findings/` and the rest of the campaign's files.
    pub out: PathBuf,
    pub budget: Budget,
}

/// How long a campaign runs and how many cases at the most.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub duration: Duration,
    /// At most this many cases (sequences, chains) this run.
    pub max: Option<u64>,
}

impl Plan {
    /// Creates `OUT/findings`, resumes `OUT/state.json` for `campaign`
    /// (see [`State::resume`]), makes SIGINT and SIGTERM end the run after
    /// the current case, and sweeps the scratch directories of runs that
    /// died. Returns the state and its path.
    pub fn start(&self, campaign: &str) -> Result<(State, PathBuf)> {
        std::fs::create_dir_all(self.out.join("findings"))
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        let path = self.out.join("state.json");
        let state = State::resume(&path, campaign, self.seed, self.shard)?;
        crate::runner::process::signals::install();
        crate::runner::process::temp_dirs::sweep();
        Ok((state, path))
    }
}

impl Budget {
    /// Whether another case may start: time is left since `start`, fewer
    /// than `max` cases ran this run, and no signal asked to stop.
    pub fn more(&self, start: Instant, ran: u64) -> bool {
        start.elapsed() < self.duration
            && self.max.is_none_or(|m| ran < m)
            && crate::runner::process::signals::stop_requested().is_none()
    }
}
