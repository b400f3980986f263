//! The sequence campaign (`campaign --impl qemu-live --sequences`):
//! random operation sequences ([`gen`]) with clean restarts and `kill -9`
//! crashes, each run on a fresh image in a real `qemu-storage-daemon`
//! with the semantic model as the oracle ([`run`]). A failing sequence is
//! shrunk to the fewest steps that still fail the same way and saved with
//! its QMP transcript and a shell reproducer ([`findings`]). Resumes from
//! `OUT/state.json` and shards (`--shard K/N`) like the image campaign;
//! `state.json`'s `outcomes` counts `pass` and `finding` sequences and the
//! `operations`, `restarts` and `crashes` run.

pub mod findings;
pub mod gen;
pub mod offline;
pub mod run;

pub use findings::{key, minimise, SeqFinding};
pub use gen::{Sequence, Step};
pub use run::{run_bare, run_sequence, SeqResult, MODEL};

use super::{Shard, State};
use crate::runner::process::Limits;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The name `state.json` records for this campaign (live and offline).
pub const CAMPAIGN: [&str; 2] = ["qemu-live-sequences", "qemu-offline-sequences"];

/// Runs the minimiser may spend on one finding.
pub const MINIMISE_RUNS: usize = 150;

/// Options of a sequence campaign.
pub struct SequenceOptions {
    pub seed: u64,
    pub duration: Duration,
    pub max_sequences: Option<u64>,
    pub shard: Option<Shard>,
    pub out: PathBuf,
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

/// Runs sequences until the duration or budget is spent; `program` is
/// `qemu-storage-daemon`.
pub fn run(program: &Path, opts: &SequenceOptions) -> Result<State> {
    let found = opts.out.join("findings");
    std::fs::create_dir_all(&found)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let state_path = opts.out.join("state.json");
    let mut state = State::resume(
        &state_path,
        CAMPAIGN[usize::from(opts.offline)],
        opts.seed,
        opts.shard,
    )?;
    let qemu = version(program, &opts.limits);
    let start = Instant::now();
    let mut ran = 0u64;
    // SIGINT/SIGTERM end the loop after the current sequence (its daemon
    // stopped, state saved); scratch directories of campaigns and runs
    // that died (kill -9) are removed.
    crate::runner::signals::install();
    crate::runner::temp_dirs::sweep();
    while start.elapsed() < opts.duration
        && opts.max_sequences.is_none_or(|m| ran < m)
        && crate::runner::signals::stop_requested().is_none()
    {
        let index = state.next_index;
        state.next_index += 1;
        if let Some(sh) = opts.shard {
            if index % sh.count != sh.index - 1 {
                continue;
            }
        }
        let seq = Sequence::random(opts.seed, index);
        let work = crate::runner::temp_dirs::scratch("seq")?;
        let _w = crate::runner::sandbox::writable(work.path());
        if opts.bare {
            let ops = run_bare(program, &seq, work.path(), &opts.limits)?;
            ran += 1;
            state.cases_run += 1;
            *state.outcomes.entry("operations".to_owned()).or_default() += ops;
            state.write(&state_path)?;
            continue;
        }
        let r = if opts.offline {
            offline::run_offline(&seq, work.path(), &opts.limits)?
        } else {
            run_sequence(program, &seq, work.path(), &opts.limits, MODEL)?
        };
        ran += 1;
        state.cases_run += 1;
        let count = |state: &mut State, k: &str, n: u64| {
            *state.outcomes.entry(k.to_owned()).or_default() += n
        };
        let done = r
            .at_step
            .map_or(seq.steps.len(), |i| (i + 1).min(seq.steps.len()));
        let restarts = seq.steps[..done]
            .iter()
            .filter(|s| matches!(s, Step::Restart))
            .count();
        let crashes = seq.steps[..done]
            .iter()
            .filter(|s| matches!(s, Step::Crash))
            .count();
        count(&mut state, "operations", r.operations);
        count(&mut state, "restarts", restarts as u64);
        count(&mut state, "crashes", crashes as u64);
        count(&mut state, if r.failed() { "finding" } else { "pass" }, 1);
        if r.failed() {
            let k = key(&r);
            let n = state.disagreements.entry(k.clone()).or_default();
            *n += 1;
            if *n == 1 && opts.minimise {
                let (minimised, mr) = minimise(&seq, r.clone(), MINIMISE_RUNS, |cand| {
                    let w = crate::runner::temp_dirs::scratch("seq").ok()?;
                    let _w = crate::runner::sandbox::writable(w.path());
                    if opts.offline {
                        return offline::run_offline(cand, w.path(), &opts.limits).ok();
                    }
                    run_sequence(program, cand, w.path(), &opts.limits, MODEL).ok()
                });
                let f = SeqFinding {
                    key: k,
                    seed: opts.seed,
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
                };
                findings::save(&found, &f, &mr)?;
            }
        }
        state.write(&state_path)?;
    }
    state.write(&state_path)?;
    Ok(state)
}

/// Replays a saved finding's minimised sequence (a regression file or
/// `findings/KEY/finding.json`): the result and whether it still fails
/// the same way.
pub fn replay(program: &Path, finding: &Path, limits: &Limits) -> Result<(SeqResult, bool)> {
    let text = std::fs::read_to_string(finding)
        .with_context(|| format!("cannot read {}", finding.display()))?;
    let f: SeqFinding =
        serde_json::from_str(&text).with_context(|| finding.display().to_string())?;
    let work = crate::runner::temp_dirs::scratch("seq")?;
    let _w = crate::runner::sandbox::writable(work.path());
    let r = run_sequence(program, &f.minimised, work.path(), limits, MODEL)?;
    let same = r.failed() && key(&r) == f.key;
    Ok((r, same))
}
