//! `qcow2-conform run`: every case of a corpus under real implementations,
//! judged, reported as a terminal matrix, JSON, JUnit and HTML.

use crate::cli::{MatrixRows, RunArgs};
use crate::runner::gate::expect::{Expectations, ANY_VERSION, UNKNOWN_VERSION};
use crate::runner::gate::select::Selection;
use crate::runner::gate::Gate;
use crate::runner::report::provenance::Provenance;
use crate::runner::report::sanitise;
use crate::runner::report::terminal::{self, Rows};
use crate::runner::{self, Limits, OutcomeKind, RunOptions};
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Parses `--fail-on`: comma-separated outcomes, `none`, or `default`
/// (everything but pass and recorded).
pub fn parse_fail_on(s: &str) -> Result<Vec<OutcomeKind>> {
    let mut out = Vec::new();
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match w {
            "none" => {}
            "default" => out.extend(
                OutcomeKind::ALL
                    .into_iter()
                    .filter(|k| k.fails_by_default()),
            ),
            "all" => out.extend(OutcomeKind::ALL),
            w => match OutcomeKind::parse(w) {
                Some(k) => out.push(k),
                None => bail!(
                    "--fail-on: unknown outcome {w:?} (outcomes: {}, or none/default/all)",
                    OutcomeKind::ALL.map(|k| k.as_str()).join(", ")
                ),
            },
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Results, columns and expectations are keyed by each implementation's
/// name (an exec program's own, from `capabilities`): two of one run may
/// not share one.
fn distinct_names(adapters: &[Box<dyn runner::adapter::Adapter>]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for a in adapters {
        if !seen.insert(a.name()) {
            bail!(
                "two implementations of this run are both called {:?}: results and \
                 expectations are keyed by that name (an exec program's `name` from \
                 `capabilities`), so give each its own",
                a.name()
            );
        }
    }
    Ok(())
}

/// `--order-from`, `--step-aside` and `--stall`.
fn scheduling(args: &RunArgs) -> Result<runner::Scheduling> {
    if !(args.stall.is_finite() && args.stall >= 0.0) {
        bail!(
            "--stall {}: give a number of seconds, 0 or more",
            args.stall
        );
    }
    let mut s = runner::Scheduling {
        max_waiting: args.step_aside,
        stall: (args.stall > 0.0).then(|| std::time::Duration::from_secs_f64(args.stall)),
        ..runner::Scheduling::default()
    };
    if let Some(p) = &args.order_from {
        s.estimates = runner::Scheduling::estimates_from_report(p)
            .with_context(|| format!("--order-from {}", p.display()))?;
    }
    Ok(s)
}

pub fn run(args: &RunArgs) -> Result<i32> {
    let fail_on = match &args.fail_on {
        Some(s) => parse_fail_on(s)?,
        None => parse_fail_on("default")?,
    };
    if args.implementations.is_empty() {
        bail!("name at least one implementation with --impl (qemu or exec:TEMPLATE)");
    }
    let memory_bytes = match args.memory_mib {
        0 => None,
        m => Some(m << 20),
    };
    let limits = Limits {
        timeout: Duration::from_secs_f64(args.timeout),
        memory_bytes,
    };
    // Before any program starts (an exec program's `capabilities` too).
    let sandbox = runner::process::sandbox::configure(args.sandbox)?;
    if !sandbox.sandboxed && args.sandbox != runner::process::sandbox::Mode::Off {
        eprintln!("run: WARNING: {}", sandbox.detail);
    }
    let adapters = unique_implementations(&args.implementations)
        .into_iter()
        .map(|s| {
            let opts = runner::adapters::AdapterOptions {
                bitmap_ops: args.bitmap_ops,
                limits: Some(limits),
            };
            runner::adapters::adapter_with_options(s, opts)
        })
        .collect::<Result<Vec<_>>>()?;
    distinct_names(&adapters)?;
    let opts = RunOptions {
        limits,
        jobs: args.jobs.unwrap_or(0),
        writes: !args.read_only,
        progress: std::io::stderr().is_terminal(),
        scheduling: scheduling(args)?,
    };
    let selection = Selection::new(&args.cases, &args.rules, args.rerun.as_deref())?;
    if selection.nothing_to_rerun() {
        eprintln!(
            "run: nothing to rerun: no case failed in {}",
            args.rerun.as_deref().unwrap_or(Path::new("")).display()
        );
        return Ok(0);
    }
    let mut provenance = Provenance::collect(
        &adapters,
        &runner::corpus::hash_tree(&args.corpus)?,
        SystemTime::now(),
    );
    provenance.sandbox = Some(sandbox);
    let expect = match &args.expect {
        Some(p) => Some(load_expectations(p, &provenance)?),
        None => None,
    };
    let mut report = runner::run_selected(&args.corpus, &adapters, &opts, &|c| selection.takes(c))?;
    if report.cases.is_empty() && selection.is_filtered() {
        if let Some((rule, near)) = selection.unknown_rules().into_iter().next() {
            bail!(
                "unknown rule {:?} given to --rule (nearest: {}); `qcow2-conform rules` lists them",
                sanitise::one_line(&rule),
                near.join(", ")
            );
        }
        bail!(
            "no case of {} matches --case/--rule/--rerun",
            args.corpus.display()
        );
    }
    report.provenance = Some(provenance);
    let expect_name = args.expect.as_ref().map(|p| p.display().to_string());
    let gate = Gate {
        fail_on: &fail_on,
        expect: expect.as_ref().zip(expect_name.as_deref()),
    };
    report.gate = Some(gate.summary(&report));
    let rows = match args.matrix {
        MatrixRows::Case => Rows::Case,
        MatrixRows::Rule => Rows::Rule,
        MatrixRows::Auto if report.cases.len() <= 60 => Rows::Case,
        MatrixRows::Auto => Rows::Rule,
    };
    let coloured = terminal::colour_wanted(std::io::stdout().is_terminal());
    print!("{}", terminal::matrix(&report, rows, coloured));
    if let Some(p) = &args.json {
        std::fs::write(p, report.to_json())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.junit {
        std::fs::write(p, runner::report::junit::junit(&report, &gate))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, runner::report::html::html(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.write_expect {
        let mut e = Expectations::load_or_empty(p)?;
        e.record(&report);
        e.save(p)?;
        eprintln!("run: expectations written to {}", p.display());
    }
    if let Some(why) = &report.interrupted {
        eprintln!("run: INCOMPLETE: {why}; the reports were written, unfinished cases are `error`");
        return Ok(1);
    }
    if !report.corpus_unchanged {
        bail!(
            "the corpus changed during the run: {}",
            report.corpus_changes.join("; ")
        );
    }
    let errors: Vec<String> = report
        .cases
        .iter()
        .flat_map(|c| c.results.iter().map(move |r| (c, r)))
        .filter(|(_, r)| r.outcome.kind == OutcomeKind::Error)
        .map(|(c, r)| format!("{} [{}]", c.id, r.implementation))
        .collect();
    if !errors.is_empty() {
        // Not the implementations' fault, but the run is incomplete.
        eprintln!(
            "run: INCOMPLETE: the runner could not set up {} case run(s) (outcome `error`): {}",
            errors.len(),
            sanitise::one_line(&errors.join(", "))
        );
        return Ok(1);
    }
    let results = report.cases.iter().flat_map(|c| c.results.iter());
    let (total, not_pass) = results.fold((0, 0), |(t, n), r| {
        (t + 1, n + usize::from(r.outcome.kind != OutcomeKind::Pass))
    });
    if args.write_expect.is_some() && args.expect.is_none() {
        // A recording run: what it recorded is the point, not a gate.
        eprintln!("run: {total} outcome(s) recorded, {not_pass} of them not pass");
        return Ok(0);
    }
    let failed = report
        .gate
        .as_ref()
        .map(|g| g.failed.clone())
        .unwrap_or_default();
    if failed.is_empty() {
        if let Some(p) = &args.expect {
            eprintln!(
                "run: {total} outcome(s) as expected by {}, {not_pass} of them known non-pass outcomes",
                p.display()
            );
        }
        return Ok(0);
    }
    match &args.expect {
        Some(p) => eprintln!(
            "run: {} result(s) differ from {}:",
            failed.len(),
            p.display()
        ),
        None => {
            let mut kinds: Vec<&str> = failed.iter().map(|f| f.outcome.as_str()).collect();
            kinds.sort();
            kinds.dedup();
            eprintln!("run: failing outcomes: {}", kinds.join(", "));
        }
    }
    if args.expect.is_some() {
        for f in &failed {
            eprintln!("  {}", sanitise::one_line(&f.line()));
        }
    }
    Ok(2)
}

/// Reads `--expect FILE` and checks that it holds a table for every
/// implementation of the run at its version (or `*`).
fn load_expectations(path: &Path, provenance: &Provenance) -> Result<Expectations> {
    let e = Expectations::load(path)?;
    for i in &provenance.implementations {
        let version = i.identity.version.as_deref().unwrap_or(UNKNOWN_VERSION);
        if e.table(&i.name, version).is_none() {
            let held = e.versions(&i.name);
            bail!(
                "{} has no expectations for {} version {version} (it holds {}); record them with --write-expect, or name a table {ANY_VERSION:?} for any version",
                path.display(),
                i.name,
                if held.is_empty() { "none for it".to_owned() } else { held.join(", ") }
            );
        }
    }
    Ok(e)
}

/// The `--impl` values, each once (in first-seen order): naming one twice
/// would give it two columns and double its totals. Each repeat is noted
/// on standard error.
pub fn unique_implementations(specs: &[String]) -> Vec<&String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for s in specs {
        if seen.insert(s) {
            out.push(s);
        } else {
            eprintln!(
                "run: --impl {} is named more than once; it runs once",
                sanitise::one_line(s)
            );
        }
    }
    out
}
