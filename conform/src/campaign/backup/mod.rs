//! The backup-chain campaign (`campaign --impl qemu-live --backup-chains`):
//! random chains ([`chain::Chain::random`], the modes taking turns), each
//! run on a fresh image in a real `qemu-storage-daemon`, restored and
//! compared at every backup point ([`chain::run_chain`], [`restore`]). A
//! failing chain is run again on a fresh image and, when it fails the
//! same way, minimised ([`minimise`]) and saved under `OUT/findings/KEY/`
//! (`chain.json` the minimised chain, `original.json`, `result.json`,
//! `transcript.qmp`, `repro.sh`), else kept under
//! `OUT/not-reproduced/KEY/`. A daemon that never listens (twice) makes the
//! chain an `error`, never a finding. Resumes from `OUT/state.json`;
//! `OUT/summary.json` holds the counts of every run so far.

pub mod chain;
pub mod gen;
pub mod restore;

use super::{Plan, State};
use crate::campaign::sequences::{key, SeqResult};
use crate::campaign::shrink::Shrink;
use crate::runner::process::Limits;
use anyhow::Result;
use chain::{run_chain, Chain, ChainOptions, ChainResult};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The name `state.json` records for this campaign.
pub const CAMPAIGN: &str = "qemu-live-backup-chains";

/// Options of a backup-chain campaign.
pub struct BackupOptions {
    /// Its `shard` is `None`: chains are not sharded.
    pub plan: Plan,
    pub limits: Limits,
    /// Only the operations, nothing checked (benchmark baseline).
    pub bare: bool,
    /// A progress line on stderr every this often (`None`: quiet).
    pub progress: Option<Duration>,
}

/// What a campaign has done (this run and all runs), as
/// `OUT/summary.json` holds it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub qemu: Option<String>,
    pub seconds: f64,
    /// Chains run this run.
    pub chains_this_run: u64,
    /// Every count of `state.json` (all runs): `chains`, `pass`,
    /// `finding`, `error`, `not-reproduced`, `incrementals`, `restored`,
    /// `bytes-compared`, `extra-bytes`, `failed-jobs` (injected failures
    /// and cancels), `written-during` (jobs the guest wrote while they
    /// ran), `mode:NAME`.
    pub totals: BTreeMap<String, u64>,
    /// Failures per key (all runs).
    pub findings: BTreeMap<String, u64>,
}

/// A chain failure's key: the sequence campaign's rule on the first
/// problem, prefixed `chain-`.
pub fn chain_key(r: &ChainResult) -> String {
    let k = key(&SeqResult {
        problems: r.problems.clone(),
        error: r.error.clone(),
        ..SeqResult::default()
    });
    format!("chain-{}", k.trim_start_matches("seq-"))
}

/// Runs chains until the duration or budget is spent.
pub fn run(program: &Path, opts: &BackupOptions) -> Result<Summary> {
    let b = &opts.plan;
    let (mut state, state_path) = b.start(CAMPAIGN)?;
    let qemu = super::sequences::version(program, &opts.limits);
    let start = Instant::now();
    let mut last = Instant::now();
    let mut ran = 0u64;
    let copts = ChainOptions {
        limits: opts.limits,
        tamper: None,
        bare: opts.bare,
    };
    while b.budget.more(start, ran) {
        let index = state.take_index(b.shard);
        let c = Chain::random(b.seed, index);
        let r = run_fresh(program, &c, copts)?;
        ran += 1;
        state.cases_run += 1;
        let mut count = |k: &str, n: u64| *state.outcomes.entry(k.to_owned()).or_default() += n;
        count("chains", 1);
        count(&format!("mode:{}", c.mode.name()), 1);
        for (k, n) in r.counts.named() {
            count(k, n);
        }
        if r.unstarted.is_some() {
            count("error", 1);
        } else if !r.failed() {
            count("pass", 1);
        } else {
            count("finding", 1);
            let k = chain_key(&r);
            let n = state.disagreements.entry(k.clone()).or_default();
            *n += 1;
            if *n == 1 && !opts.bare {
                let again = run_fresh(program, &c, copts)?;
                let reproduced = again.failed() && chain_key(&again) == k;
                if reproduced {
                    let (small, sr) = minimise(program, &c, r.clone(), MINIMISE_RUNS, copts);
                    save(&b.out, &k, &small, &sr, Some(&c), None)?;
                } else {
                    save(&b.out, &k, &c, &r, None, Some(&again))?;
                }
                if !reproduced {
                    state.disagreements.remove(&k);
                    *state
                        .outcomes
                        .entry(super::sequences::NOT_REPRODUCED.to_owned())
                        .or_default() += 1;
                }
            }
        }
        state.write(&state_path)?;
        if let Some(every) = opts.progress {
            if last.elapsed() >= every {
                last = Instant::now();
                eprintln!("{}", progress_line(&state, start.elapsed()));
            }
        }
    }
    state.write(&state_path)?;
    let summary = Summary {
        seed: b.seed,
        qemu,
        seconds: start.elapsed().as_secs_f64(),
        chains_this_run: ran,
        totals: state.outcomes.clone(),
        findings: state.disagreements.clone(),
    };
    std::fs::write(
        b.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    Ok(summary)
}

/// One line of progress: chains, incrementals, bytes compared, findings.
pub fn progress_line(state: &State, took: Duration) -> String {
    let o = |k: &str| state.outcomes.get(k).copied().unwrap_or(0);
    format!(
        "backup chains: {} run ({} pass, {} finding, {} error), {} incrementals, {} points restored, {:.1} MiB compared, {:.0?}",
        o("chains"),
        o("pass"),
        o("finding"),
        o("error"),
        o("incrementals"),
        o("restored"),
        o("bytes-compared") as f64 / f64::from(1 << 20),
        took
    )
}

/// The runs a chain finding's minimiser may spend.
pub const MINIMISE_RUNS: usize = 40;

/// Shrinks failing chain `c` (its first result `first`) while it still
/// fails with the same key, within `budget` runs ([`Shrink`], as the
/// sequences are shrunk; candidates from [`Chain::shrunk`]).
pub fn minimise(
    program: &Path,
    c: &Chain,
    first: ChainResult,
    budget: usize,
    o: ChainOptions,
) -> (Chain, ChainResult) {
    let want = chain_key(&first);
    Shrink::new(c.clone(), first, budget).passes(
        |c, r| c.shrunk(r.at_point),
        |c| run_fresh(program, c, o).ok(),
        |r| r.failed() && chain_key(r) == want,
    )
}

/// Runs `c` in a fresh scratch directory.
pub fn run_fresh(program: &Path, c: &Chain, o: ChainOptions) -> Result<ChainResult> {
    let work = crate::runner::process::temp_dirs::scratch("chain")?;
    let _w = crate::runner::process::sandbox::writable(work.path());
    Ok(run_chain(program, c, work.path(), o)?)
}

/// Saves a failing chain (minimised, `original` the chain as drawn)
/// under `OUT/findings/KEY/`, or, with the result of a replay that failed
/// differently, under `OUT/not-reproduced/KEY/`.
fn save(
    out: &Path,
    k: &str,
    c: &Chain,
    r: &ChainResult,
    original: Option<&Chain>,
    replay: Option<&ChainResult>,
) -> Result<()> {
    let dir = out
        .join(if replay.is_some() {
            "not-reproduced"
        } else {
            "findings"
        })
        .join(k);
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("chain.json"),
        serde_json::to_string_pretty(c)? + "\n",
    )?;
    let mut shown = r.clone();
    shown.transcript.clear();
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(&shown)? + "\n",
    )?;
    std::fs::write(dir.join("transcript.qmp"), r.transcript.join("\n") + "\n")?;
    if let Some(o) = original {
        std::fs::write(
            dir.join("original.json"),
            serde_json::to_string_pretty(o)? + "\n",
        )?;
    }
    if let Some(again) = replay {
        std::fs::write(
            dir.join("replay.json"),
            serde_json::to_string_pretty(again)? + "\n",
        )?;
    }
    super::sequences::findings::write_replay_script(&dir, &format!("backup chain finding {k}"))?;
    Ok(())
}
