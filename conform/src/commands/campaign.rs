//! `qcow2-conform campaign`: the CLI side of [`crate::campaign`].

use crate::campaign::{self, CampaignOptions};
use crate::cli::CampaignArgs;
use crate::runner::{self, Limits, RunOptions};
use anyhow::Result;
use std::io::IsTerminal;
use std::time::Duration;

pub fn run(args: &CampaignArgs) -> Result<i32> {
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
    if let Some(why) = runner::signals::interrupted() {
        eprintln!("campaign: INCOMPLETE: {why}; the state was saved, the same command resumes");
        return Ok(1);
    }
    Ok(0)
}
