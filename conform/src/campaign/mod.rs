//! The differential campaign: structured random images run through an
//! implementation's adapter and judged against the reference model. Case
//! `index` is, by `index % 4`: a valid spec (0), a one-rule mutant (1), a
//! one-rule mutant with 1-4 further random byte edits (2), or a stack of
//! 2-3 distinct catalogue mutations applied to one base spec (3).
//!
//! Every case keeps its [`ImageRecipe`] (base spec, mutation ids, seed, byte
//! edits). Every disagreement is minimised while the implementation keeps
//! disagreeing the same way (same outcome, same deduplication key): first
//! the mutation set and the byte edits (each dropped in turn while one can
//! be; a mutation whose byte change is not needed but whose preparation of
//! the spec is goes into the base spec), then the base spec (quickcheck
//! shrinking plus smaller disks and clusters, `generator::shrink`, the
//! remaining mutations re-applied to each smaller spec), then the bytes
//! (zeroing 512-byte blocks, trimming the tail). The first case of each key
//! is saved with both verdicts, the original and minimised mutation sets,
//! and a reproducer, once the saved image, judged again on a fresh copy,
//! disagrees the same way; a disagreement that does not is kept under
//! `OUT/not-reproduced/KEY/` and counted as `not-reproduced`.
//!
//! Here: the run loop. `state` (`state.json`, resuming, `--shard` and
//! `--duration`), `candidates` (recipes and cases), `judging` (an adapter's
//! judgement, the deduplication key), `minimise`, `findings` (saving).

pub mod backup;
mod candidates;
mod findings;
mod judging;
mod minimise;
pub mod replay;
pub mod sequences;
pub mod shrink;
mod state;

pub use candidates::{candidate, expected_from_model, Candidate, ImageRecipe, Realised};
pub use findings::Finding;
pub use judging::{judge, key};
pub use minimise::{minimise, Minimised, MINIMISE_BUDGET};
pub use state::{parse_duration, ArgError, Shard, State};

use crate::runner::{adapters::Adapter, judge::OutcomeKind, RunOptions};
use anyhow::{Context, Result};
pub use findings::NOT_REPRODUCED;
use findings::{nonzero_bytes, save_if_reproduced, Original};
use judging::judge_bytes;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of a campaign.
pub struct CampaignOptions {
    pub seed: u64,
    pub duration: Duration,
    pub max_cases: Option<u64>,
    pub shard: Option<Shard>,
    pub out: PathBuf,
    pub run: RunOptions,
    pub progress: bool,
}

/// What one campaign run leaves: the state (over every run so far) and the
/// findings this run saved.
pub struct RunSummary {
    pub state: State,
    /// Cases this run judged (the state counts every run).
    pub cases_this_run: u64,
    /// Keys of the findings saved by this run (new kinds of disagreement),
    /// in the order they were found.
    pub new_findings: Vec<String>,
    /// Keys of the disagreements this run did not save because their
    /// saved image, judged again, did not disagree the same way.
    pub not_reproduced: Vec<String>,
}

/// Runs the campaign until the duration or case budget is spent; resumes
/// from `OUT/state.json` when it belongs to the same implementation, seed
/// and shard.
pub fn run(adapter: &dyn Adapter, opts: &CampaignOptions) -> Result<RunSummary> {
    std::fs::create_dir_all(opts.out.join("findings"))
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let state_path = opts.out.join("state.json");
    let mut state = State::resume(&state_path, adapter.name(), opts.seed, opts.shard)?;
    crate::runner::process::signals::install();
    crate::runner::process::temp_dirs::sweep();
    let scratch = crate::runner::process::temp_dirs::scratch("campaign")?;
    let bar = indicatif::ProgressBar::new_spinner();
    if !opts.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(crate::runner::report::terminal::progress_style(
        "{spinner} campaign {pos} cases {rate} {msg}",
    ));
    let start = Instant::now();
    let mut ran = 0u64;
    let mut new_findings = Vec::new();
    let mut not_reproduced = Vec::new();
    while start.elapsed() < opts.duration
        && opts.max_cases.is_none_or(|m| ran < m)
        && crate::runner::process::signals::stop_requested().is_none()
    {
        let index = state.take_index(opts.shard);
        let Some(c) = candidate(opts.seed, index) else {
            continue;
        };
        let r = judge_bytes(
            adapter,
            scratch.path(),
            "case.qcow2",
            &c.bytes,
            &c.expected,
            &opts.run,
        )?;
        if crate::runner::process::signals::stop_requested().is_some() {
            // The case was cut short: not counted, run again on resume.
            state.next_index = index;
            break;
        }
        ran += 1;
        state.cases_run += 1;
        *state
            .outcomes
            .entry(r.outcome.kind.as_str().to_string())
            .or_default() += 1;
        bar.inc(1);
        let kind = r.outcome.kind;
        if matches!(kind, OutcomeKind::Pass | OutcomeKind::Recorded) {
            // Saved after every case, so an interrupted campaign resumes
            // exactly where it stopped.
            state.write(&state_path)?;
            continue;
        }
        let k = key(&r.outcome);
        let n = state.disagreements.entry(k.clone()).or_default();
        *n += 1;
        if *n > 1 {
            state.write(&state_path)?;
            continue;
        }
        bar.set_message(format!("minimising {k}"));
        let original = Original {
            index,
            origin: c.origin.clone(),
            bytes: c.bytes.len() as u64,
            nonzero_bytes: nonzero_bytes(&c.bytes),
            mutations: c.recipe.mutations.clone(),
            byte_edits: c.recipe.edits.len(),
        };
        let m = minimise(
            adapter,
            scratch.path(),
            c,
            &r.outcome,
            &opts.run,
            MINIMISE_BUDGET,
        )?;
        if save_if_reproduced(
            adapter,
            &opts.out,
            scratch.path(),
            &k,
            original,
            m,
            &opts.run,
        )? {
            new_findings.push(k);
        } else {
            // Not saved; a later case with the same key may be.
            *state
                .outcomes
                .entry(NOT_REPRODUCED.to_string())
                .or_default() += 1;
            state.disagreements.remove(&k);
            not_reproduced.push(k);
        }
        bar.set_message(format!(
            "{} kinds of disagreement",
            state.disagreements.len()
        ));
        state.write(&state_path)?;
    }
    bar.finish_and_clear();
    state.write(&state_path)?;
    Ok(RunSummary {
        state,
        cases_this_run: ran,
        new_findings,
        not_reproduced,
    })
}
