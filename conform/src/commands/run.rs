//! `qcow2-conform run`: every case of a corpus under real implementations,
//! judged, reported as a terminal matrix, JSON, JUnit and HTML.

use crate::cli::{MatrixRows, RunArgs};
use crate::runner::report::{self, Rows};
use crate::runner::{self, Limits, OutcomeKind, RunOptions};
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::time::Duration;

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

pub fn run(args: &RunArgs) -> Result<i32> {
    let fail_on = match &args.fail_on {
        Some(s) => parse_fail_on(s)?,
        None => parse_fail_on("default")?,
    };
    if args.implementations.is_empty() {
        bail!("name at least one implementation with --impl (qemu or exec:TEMPLATE)");
    }
    let adapters = args
        .implementations
        .iter()
        .map(|s| {
            let opts = runner::adapters::AdapterOptions {
                bitmap_ops: args.bitmap_ops,
            };
            runner::adapters::adapter_with_options(s, opts)
        })
        .collect::<Result<Vec<_>>>()?;
    let memory_bytes = match args.memory_mib {
        0 => None,
        m => Some(m << 20),
    };
    if memory_bytes.is_some() && which("prlimit").is_none() {
        bail!("--memory needs util-linux `prlimit` on PATH (or pass --memory 0 for no limit)");
    }
    let opts = RunOptions {
        limits: Limits {
            timeout: Duration::from_secs_f64(args.timeout),
            memory_bytes,
        },
        jobs: args.jobs.unwrap_or(0),
        writes: !args.read_only,
        progress: std::io::stderr().is_terminal(),
    };
    let report = runner::run_corpus(&args.corpus, &adapters, &opts)?;
    let rows = match args.matrix {
        MatrixRows::Case => Rows::Case,
        MatrixRows::Rule => Rows::Rule,
        MatrixRows::Auto if report.cases.len() <= 60 => Rows::Case,
        MatrixRows::Auto => Rows::Rule,
    };
    let coloured = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    print!("{}", report::matrix(&report, rows, coloured));
    if let Some(p) = &args.json {
        std::fs::write(p, report.to_json())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.junit {
        std::fs::write(p, report::junit(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, runner::html::html(&report))
            .with_context(|| format!("cannot write {}", p.display()))?;
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
            errors.join(", ")
        );
        return Ok(1);
    }
    let failing: Vec<OutcomeKind> = report
        .kinds()
        .into_iter()
        .filter(|k| fail_on.contains(k))
        .collect();
    if failing.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "run: failing outcomes: {}",
            failing
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(2)
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
