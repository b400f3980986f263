//! `qcow2-conform campaign`: the CLI side of [`crate::campaign`].

use crate::campaign::{self, CampaignOptions};
use crate::cli::CampaignArgs;
use crate::runner::{self, Limits, RunOptions};
use anyhow::Result;
use std::io::IsTerminal;
use std::time::Duration;

pub fn run(args: &CampaignArgs) -> Result<i32> {
    if args.sequences {
        return sequences(args);
    }
    let adapter = runner::adapter_from_spec(&args.implementation)?;
    let opts = CampaignOptions {
        seed: args.seed,
        duration: args.duration,
        max_cases: args.max_cases,
        shard: args.shard,
        out: args.out.clone(),
        run: RunOptions {
            limits: Limits {
                timeout: Duration::from_secs_f64(args.timeout),
                memory_bytes: None,
            },
            jobs: 1,
            writes: !args.read_only,
            progress: false,
        },
        progress: std::io::stderr().is_terminal(),
    };
    let state = campaign::run(adapter.as_ref(), &opts)?;
    eprintln!(
        "campaign: {} cases run ({} in total), outcomes {:?}",
        state.cases_run, state.next_index, state.outcomes
    );
    for (key, n) in &state.disagreements {
        eprintln!(
            "  {n:>5} x {key}  -> {}/findings/{key}/",
            args.out.display()
        );
    }
    Ok(0)
}

/// `campaign --impl qemu-live --sequences` (or `--impl qemu`: offline).
fn sequences(args: &CampaignArgs) -> Result<i32> {
    use crate::campaign::sequences::{self, SequenceOptions};
    let offline = match args.implementation.as_str() {
        "qemu-live" => false,
        "qemu" => true,
        _ => anyhow::bail!(
            "--sequences needs --impl qemu-live (qemu-storage-daemon) or --impl qemu (qemu-img bitmap and qemu-io)"
        ),
    };
    let program = crate::runner::adapters::qemu::Tool::StorageDaemon.locate()?;
    let opts = SequenceOptions {
        seed: args.seed,
        duration: args.duration,
        max_sequences: args.max_cases,
        shard: args.shard,
        out: args.out.clone(),
        limits: Limits {
            timeout: Duration::from_secs_f64(args.timeout),
            memory_bytes: None,
        },
        minimise: !args.no_minimise,
        bare: args.bare,
        offline,
    };
    let start = std::time::Instant::now();
    let state = sequences::run(&program, &opts)?;
    let o = |k: &str| state.outcomes.get(k).copied().unwrap_or(0);
    eprintln!(
        "sequence campaign: {} sequences ({} in total), {} operations, {} restarts, {} crashes, {} failing, in {:.0?}",
        state.cases_run,
        state.next_index,
        o("operations"),
        o("restarts"),
        o("crashes"),
        o("finding"),
        start.elapsed()
    );
    for (key, n) in &state.disagreements {
        eprintln!(
            "  {n:>5} x {key}  -> {}/findings/{key}/",
            args.out.display()
        );
    }
    Ok(0)
}
