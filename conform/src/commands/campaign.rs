//! `qcow2-conform campaign`: the CLI side of [`crate::campaign`]: runs it,
//! prints a summary, and exits 2 when the run saved new findings (unless
//! `--fail-on-findings none`).

use crate::campaign::{self, CampaignOptions, RunSummary};
use crate::cli::{CampaignArgs, FailOnFindings};
use crate::runner::{self, Limits, RunOptions};
use anyhow::Result;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn run(args: &CampaignArgs) -> Result<i32> {
    let sandbox = runner::process::sandbox::configure(args.sandbox)?;
    if !sandbox.sandboxed && args.sandbox != runner::process::sandbox::Mode::Off {
        eprintln!("campaign: WARNING: {}", sandbox.detail);
    }
    if let Some(path) = &args.replay {
        return super::campaign_live::replay(args, path);
    }
    if args.backup_chains {
        return super::campaign_live::backup_chains(args);
    }
    if args.sequences {
        return sequences(args);
    }
    let adapter = runner::adapter_from_spec(&args.implementation)?;
    let opts = CampaignOptions {
        plan: args.plan(),
        run: RunOptions {
            limits: Limits {
                timeout: Duration::from_secs_f64(args.timeout),
                memory_bytes: None,
            },
            jobs: 1,
            writes: !args.read_only,
            progress: false,
            scheduling: Default::default(),
        },
        progress: std::io::stderr().is_terminal(),
        coverage_guided: args.coverage_guided,
    };
    let start = Instant::now();
    let summary = campaign::run(adapter.as_ref(), &opts)?;
    eprint!("{}", summary_text(&summary, &args.out, start.elapsed()));
    let failing = !summary.new_findings.is_empty() && args.fail_on_findings == FailOnFindings::New;
    if failing {
        eprintln!(
            "campaign: {} new finding(s) saved: exit status 2 (--fail-on-findings none to exit 0)",
            summary.new_findings.len()
        );
    }
    if let Some(why) = runner::process::signals::interrupted() {
        eprintln!("campaign: INCOMPLETE: {why}; the state was saved, the same command resumes");
        return Ok(1);
    }
    Ok(if failing { 2 } else { 0 })
}

/// The summary printed after a campaign: cases and rate, outcomes, and
/// every kind of disagreement (new ones marked) with where it is saved.
pub fn summary_text(s: &RunSummary, out: &Path, took: Duration) -> String {
    let st = &s.state;
    let mut o = String::new();
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 {
        s.cases_this_run as f64 / secs
    } else {
        0.0
    };
    let _ = writeln!(
        o,
        "campaign: {} case(s) this run in {secs:.1} s ({}/s), {} run in total, next case {}",
        s.cases_this_run,
        crate::runner::report::terminal::rate(rate),
        st.cases_run,
        st.next_index
    );
    let outcomes: Vec<String> = st
        .outcomes
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = writeln!(o, "  outcomes (all runs): {}", outcomes.join(", "));
    let _ = writeln!(
        o,
        "  findings: {} new this run, {} kind(s) in total, under {}",
        s.new_findings.len(),
        st.disagreements.len(),
        out.join("findings").display()
    );
    for (key, n) in &st.disagreements {
        let mark = if s.new_findings.contains(key) {
            "NEW"
        } else {
            "   "
        };
        let _ = writeln!(o, "  {mark} {n:>5} x {key}");
    }
    if !s.not_reproduced.is_empty() {
        let _ = writeln!(
            o,
            "  not reproduced (not saved; kept under {}): {}",
            out.join("not-reproduced").display(),
            s.not_reproduced.join(", ")
        );
    }
    o
}

/// `campaign --impl qemu-live[@VERSION] --sequences` (or `--impl qemu`: offline).
fn sequences(args: &CampaignArgs) -> Result<i32> {
    use crate::campaign::sequences::{self, SequenceOptions};
    let spec = args.implementation.as_str();
    let locate = || crate::runner::adapters::qemu::Tool::StorageDaemon.locate();
    let (offline, program) = match (spec, spec.strip_prefix("qemu-live@")) {
        ("qemu-live", _) => (false, locate()?),
        ("qemu", _) => (true, locate()?),
        (_, Some(place)) => {
            let live = crate::runner::adapters::qemu_live::QemuLiveAdapter::at(place)?;
            (false, live.program().to_owned())
        }
        _ => anyhow::bail!(
            "--sequences needs --impl qemu-live[@VERSION] (qemu-storage-daemon) or --impl qemu (qemu-img bitmap and qemu-io)"
        ),
    };
    let opts = SequenceOptions {
        plan: args.plan(),
        limits: Limits {
            timeout: Duration::from_secs_f64(args.timeout),
            memory_bytes: None,
        },
        minimise: !args.no_minimise,
        bare: args.bare,
        offline,
    };
    let start = std::time::Instant::now();
    // The findings this run saves are the directories it adds.
    let saved = |out: &Path| -> std::collections::BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(out.join("findings"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    };
    let before = saved(&args.out);
    let state = sequences::run(&program, &opts)?;
    let new = saved(&args.out).difference(&before).count();
    let o = |k: &str| state.outcomes.get(k).copied().unwrap_or(0);
    eprintln!(
        "sequence campaign: {} sequences ({} in total; {} on two nodes, {} steps across both), {} operations, {} restarts, {} crashes, {} failing, {} not reproduced, in {:.0?}",
        state.cases_run,
        state.next_index,
        o("two-node"),
        o("across-nodes"),
        o("operations"),
        o("restarts"),
        o("crashes"),
        o("finding"),
        o(sequences::NOT_REPRODUCED),
        start.elapsed()
    );
    if o(sequences::NOT_REPRODUCED) > 0 {
        eprintln!(
            "  not reproduced (not saved; logs under {}/not-reproduced/)",
            args.out.display()
        );
    }
    for (key, n) in &state.disagreements {
        eprintln!(
            "  {n:>5} x {key}  -> {}/findings/{key}/",
            args.out.display()
        );
    }
    Ok(super::campaign_exit::end_status(args, new))
}
