//! The live QEMU campaigns' own commands: `campaign --impl qemu-live
//! --backup-chains` (random backup chains, a progress line, the summary
//! as text or `--json`) and `campaign --replay PATH` (one sequence or chain
//! step by step against the model).

use crate::campaign::backup::{self, BackupOptions};
use crate::campaign::replay;
use crate::campaign::Plan;
use crate::cli::CampaignArgs;
use crate::runner::Limits;
use anyhow::Result;
use std::path::Path;
use std::time::Duration;

fn limits(args: &CampaignArgs) -> Limits {
    Limits {
        timeout: Duration::from_secs_f64(args.timeout),
        memory_bytes: None,
    }
}

/// `campaign --replay PATH [--json]`: exit 0 when every step agrees with
/// the model, 2 when one does not (a finding that still reproduces).
pub fn replay(args: &CampaignArgs, path: &Path) -> Result<i32> {
    let program = crate::runner::adapters::qemu::Tool::StorageDaemon.locate()?;
    let r = replay::replay(&program, path, &limits(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", replay::render(&r));
    }
    Ok(if r.failed { 2 } else { 0 })
}

/// `campaign --impl qemu-live --backup-chains`.
pub fn backup_chains(args: &CampaignArgs) -> Result<i32> {
    if args.implementation != "qemu-live" {
        anyhow::bail!("--backup-chains needs --impl qemu-live (qemu-storage-daemon)");
    }
    let program = crate::runner::adapters::qemu::Tool::StorageDaemon.locate()?;
    let before = count_dirs(&args.out.join("findings"));
    let opts = BackupOptions {
        plan: Plan {
            shard: None,
            ..args.plan()
        },
        limits: limits(args),
        bare: args.bare,
        progress: Some(Duration::from_secs(10)),
    };
    let s = backup::run(&program, &opts)?;
    let new = count_dirs(&args.out.join("findings")).saturating_sub(before);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    }
    let t = |k: &str| s.totals.get(k).copied().unwrap_or(0);
    eprintln!(
        "backup chains: {} this run in {:.0} s; in total {} chains ({} pass, {} finding, {} error, {} not reproduced), {} incrementals ({} failed or cancelled jobs before them, {} written to while they ran), {} backup points restored, {} bytes compared ({} extra bytes held beyond the model's)",
        s.chains_this_run,
        s.seconds,
        t("chains"),
        t("pass"),
        t("finding"),
        t("error"),
        t(crate::campaign::sequences::NOT_REPRODUCED),
        t("incrementals"),
        t("failed-jobs"),
        t("written-during"),
        t("restored"),
        t("bytes-compared"),
        t("extra-bytes"),
    );
    let modes: Vec<String> = s
        .totals
        .iter()
        .filter_map(|(k, n)| k.strip_prefix("mode:").map(|m| format!("{n} {m}")))
        .collect();
    eprintln!("  modes: {}", modes.join(", "));
    for (key, n) in &s.findings {
        eprintln!(
            "  {n:>5} x {key}  -> {}/findings/{key}/",
            args.out.display()
        );
    }
    eprintln!("  summary: {}", args.out.join("summary.json").display());
    Ok(super::campaign_exit::end_status(args, new))
}

fn count_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
