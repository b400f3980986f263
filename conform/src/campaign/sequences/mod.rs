//! The sequence campaign (`campaign --impl qemu-live --sequences`):
//! random operation sequences ([`gen`]) with clean restarts and `kill -9`
//! crashes, each run on a fresh image in a real `qemu-storage-daemon`
//! with the semantic model as the oracle ([`run`]). A failing sequence is
//! shrunk to the fewest steps that still fail the same way and saved with
//! its QMP transcript and a shell reproducer ([`findings`]), but only
//! after the saved sequence, replayed from its `finding.json` on a fresh
//! image, fails the same way again; one that does not is kept under
//! `OUT/not-reproduced/KEY/` with both logs and counted as
//! `not-reproduced`. Resumes from `OUT/state.json` and shards
//! (`--shard K/N`) like the image campaign; `state.json`'s `outcomes`
//! counts `pass` and `finding` sequences, `not-reproduced` findings and
//! the `operations`, `restarts` and `crashes` run.

pub mod findings;
pub mod gen;
pub mod offline;
pub mod run;

pub use findings::{key, minimise, SeqFinding, NOT_REPRODUCED};
pub use gen::{Sequence, Step};
pub use run::{run_bare, run_sequence, SeqResult, SetupError, MODEL};

use super::{Plan, State};
use crate::runner::process::Limits;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Instant;

/// The name `state.json` records for this campaign (live and offline).
pub const CAMPAIGN: [&str; 2] = ["qemu-live-sequences", "qemu-offline-sequences"];

/// Runs the minimiser may spend on one finding.
pub const MINIMISE_RUNS: usize = 150;

/// Options of a sequence campaign.
pub struct SequenceOptions {
    pub plan: Plan,
    pub limits: Limits,
    /// Minimise and save findings (off only for benchmarks).
    pub minimise: bool,
    /// Run the operations with no oracle (benchmark baseline).
    pub bare: bool,
    /// Run the sequences through QEMU's offline tools instead of the
    /// daemon ([`offline`]).
    pub offline: bool,
}

/// The first line of `program --version`.
pub fn version(program: &Path, limits: &Limits) -> Option<String> {
    let p = crate::runner::process::run(
        crate::runner::process::command(program.as_os_str(), &["--version"], limits),
        limits.timeout,
    )
    .ok()?;
    p.stdout.lines().next().map(str::to_owned)
}

/// Runs one sequence on a fresh image in a scratch directory: the live
/// runner or the offline one.
pub type Runner<'a> = dyn FnMut(&Sequence, &Path) -> Result<SeqResult, SetupError> + 'a;

/// Runs sequences until the duration or budget is spent; `program` is
/// `qemu-storage-daemon`.
pub fn run(program: &Path, opts: &SequenceOptions) -> Result<State> {
    let limits = opts.limits;
    let mut runner = |seq: &Sequence, work: &Path| {
        if opts.offline {
            offline::run_offline(seq, work, &limits)
        } else {
            run_sequence(program, seq, work, &limits, MODEL)
        }
    };
    run_with(program, opts, &mut runner)
}

/// [`run`] with the sequences run by `runner` (the campaign's own runner,
/// or one a test wraps around it).
pub fn run_with(program: &Path, opts: &SequenceOptions, runner: &mut Runner) -> Result<State> {
    let b = &opts.plan;
    // SIGINT/SIGTERM end the loop after the current sequence (its daemon
    // stopped, state saved); scratch directories of campaigns and runs
    // that died (kill -9) are removed.
    let (mut state, state_path) = b.start(CAMPAIGN[usize::from(opts.offline)])?;
    let qemu = version(program, &opts.limits);
    let start = Instant::now();
    let mut ran = 0u64;
    while b.budget.more(start, ran) {
        let index = state.take_index(b.shard);
        let seq = Sequence::random(b.seed, index);
        let work = crate::runner::process::temp_dirs::scratch("seq")?;
        let _w = crate::runner::process::sandbox::writable(work.path());
        if opts.bare {
            let ops = run_bare(program, &seq, work.path(), &opts.limits)?;
            ran += 1;
            state.cases_run += 1;
            *state.outcomes.entry("operations".to_owned()).or_default() += ops;
            state.write(&state_path)?;
            continue;
        }
        let r = runner(&seq, work.path())?;
        ran += 1;
        state.cases_run += 1;
        let count = |state: &mut State, k: &str, n: u64| {
            *state.outcomes.entry(k.to_owned()).or_default() += n
        };
        if r.unstarted {
            // The daemon never listened (twice): the harness failed, not
            // QEMU; counted, never saved.
            count(&mut state, "error", 1);
            state.write(&state_path)?;
            continue;
        }
        let done = r
            .at_step
            .map_or(seq.steps.len(), |i| (i + 1).min(seq.steps.len()));
        let restarts = seq.steps[..done]
            .iter()
            .filter(|s| matches!(s, Step::Restart | Step::Terminate))
            .count();
        let crashes = seq.steps[..done]
            .iter()
            .filter(|s| matches!(s, Step::Crash))
            .count();
        count(&mut state, "operations", r.operations);
        count(&mut state, "restarts", restarts as u64);
        count(&mut state, "crashes", crashes as u64);
        if seq.second.is_some() {
            // Sequences on a daemon of two nodes, and their steps that
            // name both nodes at once (merges across, transactions).
            let across = seq.steps[..done]
                .iter()
                .filter(|s| {
                    matches!(s, Step::Nodes { op } if op.nodes().contains(&0) && op.nodes().contains(&1))
                })
                .count();
            count(&mut state, "two-node", 1);
            count(&mut state, "across-nodes", across as u64);
        }
        count(&mut state, if r.failed() { "finding" } else { "pass" }, 1);
        if r.failed() {
            let k = key(&r);
            let n = state.disagreements.entry(k.clone()).or_default();
            *n += 1;
            if *n == 1 && opts.minimise {
                let (minimised, mr) = minimise(&seq, r.clone(), MINIMISE_RUNS, |cand| {
                    let w = crate::runner::process::temp_dirs::scratch("seq").ok()?;
                    let _w = crate::runner::process::sandbox::writable(w.path());
                    runner(cand, w.path()).ok()
                });
                let f = SeqFinding {
                    key: k.clone(),
                    seed: b.seed,
                    index,
                    problems: mr
                        .error
                        .clone()
                        .into_iter()
                        .chain(mr.problems.clone())
                        .collect(),
                    original: seq,
                    minimised,
                    qemu: qemu.clone(),
                    offline: opts.offline,
                };
                let saved = findings::save_if_reproduced(&b.out, &f, &mr, |seq| {
                    let w = crate::runner::process::temp_dirs::scratch("seq")?;
                    let _w = crate::runner::process::sandbox::writable(w.path());
                    Ok(runner(seq, w.path())?)
                })?;
                if !saved {
                    // Not a finding: the key may be found (and saved)
                    // again by a later sequence that reproduces.
                    count(&mut state, NOT_REPRODUCED, 1);
                    state.disagreements.remove(&k);
                }
            }
        }
        state.write(&state_path)?;
    }
    state.write(&state_path)?;
    Ok(state)
}

/// Replays a saved finding's minimised sequence (a regression file or
/// `findings/KEY/finding.json`) the way it was found (live or offline):
/// the result and whether it still fails the same way.
pub fn replay(program: &Path, finding: &Path, limits: &Limits) -> Result<(SeqResult, bool)> {
    let text = std::fs::read_to_string(finding)
        .with_context(|| format!("cannot read {}", finding.display()))?;
    let f: SeqFinding =
        serde_json::from_str(&text).with_context(|| finding.display().to_string())?;
    let work = crate::runner::process::temp_dirs::scratch("seq")?;
    let _w = crate::runner::process::sandbox::writable(work.path());
    let r = if f.offline {
        offline::run_offline(&f.minimised, work.path(), limits)?
    } else {
        run_sequence(program, &f.minimised, work.path(), limits, MODEL)?
    };
    let same = r.failed() && key(&r) == f.key;
    Ok((r, same))
}
