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
//! judgement, the deduplication key), `minimise`, `findings` (saving),
//! `coverage` and `guided` (`--coverage-guided`: QEMU's gcov counters read
//! after each case, the cases that reach new arcs kept as seeds).

pub mod backup;
mod candidates;
pub mod coverage;
mod findings;
pub mod guided;
mod judging;
mod minimise;
mod plan;
pub mod replay;
pub mod sequences;
pub mod shrink;
mod state;

pub use candidates::{candidate, expected_from_model, Candidate, ImageRecipe, Realised};
pub use findings::Finding;
pub use judging::{judge, key};
pub use minimise::{minimise, Minimised, MINIMISE_BUDGET};
pub use plan::{Budget, Plan};
pub use state::{parse_duration, ArgError, Shard, State};

use crate::runner::{adapters::Adapter, judge::OutcomeKind, RunOptions};
use anyhow::{Context, Result};
pub use findings::NOT_REPRODUCED;
use findings::{nonzero_bytes, save_if_reproduced, Original};
use judging::judge_bytes;
use std::path::PathBuf;
use std::time::Instant;

/// Options of a campaign.
pub struct CampaignOptions {
    pub plan: Plan,
    pub run: RunOptions,
    pub progress: bool,
    /// Keep the cases that reach new arcs of QEMU's bitmap code as seeds
    /// ([`guided`], [`coverage`]); needs a gcov build of QEMU.
    pub coverage_guided: bool,
}

/// A guided campaign's counters and seeds.
struct Guide {
    tracker: coverage::Tracker,
    pool: guided::Pool,
    /// Cases that reached new arcs.
    new_arcs_cases: u64,
    /// Cases made from a seed.
    derived: u64,
}

impl Guide {
    /// Reads the counters beneath `GCOV_PREFIX` when it is set, else
    /// makes every program write them beneath `OUT/gcov`.
    fn start(out: &std::path::Path) -> Result<Guide> {
        let prefix = match std::env::var_os("GCOV_PREFIX") {
            Some(p) => PathBuf::from(p),
            None => {
                // Absolute: programs run in their case's directory.
                let p = out.join("gcov");
                std::fs::create_dir_all(&p)
                    .and_then(|()| p.canonicalize())
                    .with_context(|| format!("cannot create {}", p.display()))?
            }
        };
        crate::runner::process::set_gcov_prefix(&prefix);
        let mut tracker = coverage::Tracker::new(&prefix);
        // What earlier runs left counts as reached.
        tracker.poll()?;
        Ok(Guide {
            tracker,
            pool: guided::Pool::default(),
            new_arcs_cases: 0,
            derived: 0,
        })
    }

    /// `OUT/coverage.json`: seeds, cases, and the arcs reached per file.
    fn write(&self, out: &std::path::Path, cases: u64) -> Result<()> {
        let files: Vec<serde_json::Value> = self
            .tracker
            .summary()
            .into_iter()
            .map(|(f, run, total)| serde_json::json!({"file": f, "arcs_run": run, "arcs": total}))
            .collect();
        let v = serde_json::json!({
            "cases": cases,
            "cases_from_seeds": self.derived,
            "cases_reaching_new_arcs": self.new_arcs_cases,
            "seeds": self.pool.len(),
            "gcov_prefix": self.tracker.prefix(),
            "files": files,
        });
        let path = out.join("coverage.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }
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
    let b = &opts.plan;
    let (mut state, state_path) = b.start(adapter.name())?;
    let scratch = crate::runner::process::temp_dirs::scratch("campaign")?;
    let bar = indicatif::ProgressBar::new_spinner();
    if !opts.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(crate::runner::report::terminal::progress_style(
        "{spinner} campaign {pos} cases {rate} {msg}",
    ));
    let mut guide = if opts.coverage_guided {
        Some(Guide::start(&b.out)?)
    } else {
        None
    };
    // Under the sandbox the programs may write their counters.
    let _counters = guide
        .as_ref()
        .map(|g| crate::runner::process::sandbox::writable(g.tracker.prefix()));
    let start = Instant::now();
    let mut ran = 0u64;
    let mut new_findings = Vec::new();
    let mut not_reproduced = Vec::new();
    while b.budget.more(start, ran) {
        let index = state.take_index(b.shard);
        let derived = guide.as_ref().and_then(|g| g.pool.derive(b.seed, index));
        if let (Some(g), true) = (guide.as_mut(), derived.is_some()) {
            g.derived += 1;
        }
        let Some(c) = derived.or_else(|| candidate(b.seed, index)) else {
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
        if let Some(g) = guide.as_mut() {
            if g.tracker.poll()? > 0 {
                g.new_arcs_cases += 1;
                g.pool.add(c.recipe.clone());
            }
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
        if save_if_reproduced(adapter, &b.out, scratch.path(), &k, original, m, &opts.run)? {
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
    if let Some(g) = &guide {
        g.write(&b.out, ran)?;
    }
    Ok(RunSummary {
        state,
        cases_this_run: ran,
        new_findings,
        not_reproduced,
    })
}
