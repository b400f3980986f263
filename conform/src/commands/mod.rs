//! What each subcommand does.

mod campaign;
mod campaign_exit;
mod campaign_live;
mod completions;
mod corpus;
pub mod corpus_kit;
mod generate;
mod report;
pub mod run;

use crate::cli::{Cli, Command};
use crate::runner::corpus::image_state;
use crate::runner::report::sanitise::clean;
use anyhow::{Context, Result};
use spec_model::{rules, Model, Report};
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;

pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Check { image, json } => check(&image, json),
        Command::Dump {
            image,
            json,
            revision,
        } => dump(&image, json, revision),
        Command::Generate(args) => generate::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Campaign(args) => campaign::run(&args),
        Command::Corpus(cmd) => corpus::run(cmd),
        Command::Report(cmd) => report::run(&cmd),
        Command::Rules { json } => {
            print_rules(json)?;
            Ok(0)
        }
        Command::Obligations { json } => {
            print_obligations(json)?;
            Ok(0)
        }
        Command::Completions { shell } => completions::completions(shell),
        Command::Man { out } => completions::man(out.as_deref()),
        Command::AdapterProbe {
            implementation,
            image,
            write,
        } => adapter_probe(&implementation, &image, write.as_deref()),
    }
}

/// The image at `image` analysed by the model: only a regular file, opened
/// non-blocking, its holes skipped (`runner::corpus::image_state::open_model`).
fn open_model(image: &Path) -> Result<Model<File>> {
    image_state::open_model(image).with_context(|| format!("cannot check {}", image.display()))
}

fn check(image: &Path, json: bool) -> Result<i32> {
    let model = open_model(image)?;
    let report = model.report();
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", clean(&human_report(image, report)));
    }
    Ok(report.verdict.exit_code())
}

/// The human form of a verdict: findings by offset, then one line per bitmap.
pub fn human_report(image: &Path, report: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} (bitmaps extension {})",
        image.display(),
        report.verdict.as_str(),
        generator::expected::extension_name(report.bitmaps_extension)
    );
    for f in &report.findings {
        let _ = writeln!(
            o,
            "  {:#010x}  {:<12} {:<36} {}",
            f.offset,
            f.severity.as_str(),
            f.rule.id(),
            f.message
        );
    }
    for b in &report.bitmaps {
        let mut flags = Vec::new();
        if b.flags.in_use {
            flags.push("in_use");
        }
        if b.flags.auto {
            flags.push("auto");
        }
        if b.flags.extra_data_compatible {
            flags.push("extra_data_compatible");
        }
        let content = match (&b.contents.content_sha256, b.contents.set_bits) {
            (Some(h), Some(n)) => format!("{n} bits set, sha256 {h}"),
            _ => "contents not usable".to_string(),
        };
        let _ = writeln!(
            o,
            "  bitmap {:?}: granularity 2^{} ({} bytes), flags [{}], {}, {}",
            b.name,
            b.granularity_bits,
            if b.granularity_bits < 64 {
                (1u128 << b.granularity_bits).to_string()
            } else {
                "?".into()
            },
            flags.join(", "),
            if b.usable { "usable" } else { "not usable" },
            content
        );
    }
    o
}

fn dump(image: &Path, json: bool, revision: spec_model::Revision) -> Result<i32> {
    if revision != spec_model::Revision::Final {
        // Read the image the way a writer of that historical draft laid it
        // out (docs/revisions.md); `check` always judges by the final spec.
        let file = image_state::open_regular(image)
            .with_context(|| format!("cannot open {}", image.display()))?;
        let d = spec_model::drafts::dump_draft(revision, file)
            .with_context(|| format!("cannot read {} as {revision}", image.display()))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            print!("{}", clean(&spec_model::drafts::render(&d)));
        }
        return Ok(0);
    }
    let model = open_model(image)?;
    let d = spec_model::dump::dump(model.analysis());
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", clean(&spec_model::dump::render(&d)));
    }
    Ok(0)
}

fn print_rules(json: bool) -> Result<()> {
    let cat = rules::catalogue();
    if json {
        println!("{}", serde_json::to_string_pretty(&cat)?);
        return Ok(());
    }
    for r in cat {
        println!(
            "{:<38} {:<22} {:<40} {}",
            r.id,
            r.severities.join("/"),
            r.section,
            r.condition
        );
    }
    Ok(())
}

fn print_obligations(json: bool) -> Result<()> {
    let cat = spec_model::obligations::catalogue();
    if json {
        println!("{}", serde_json::to_string_pretty(&cat)?);
        return Ok(());
    }
    for o in cat {
        let stricter = if o.stricter.is_some() {
            " [stricter than the spec]"
        } else {
            ""
        };
        println!(
            "{:<44} {:<42} {:<28} {}{stricter}",
            o.id,
            o.binds.describe(),
            o.section,
            o.sentence
        );
    }
    Ok(())
}

/// `adapter-probe`: prints the probe's JSON report (exit status 0 whenever
/// a report is printed; see `runner::adapters::probe`).
fn adapter_probe(name: &str, image: &Path, write: Option<&[u64]>) -> Result<i32> {
    use crate::runner::adapters::probe;
    let Some(kind) = probe::ProbeKind::from_name(name) else {
        anyhow::bail!("adapter-probe: unknown implementation {name:?}");
    };
    let write = match write {
        Some([o, l]) => Some((*o, *l)),
        Some(_) => anyhow::bail!("adapter-probe: --write takes OFFSET LEN"),
        None => None,
    };
    let report = probe::probe(kind, image, write);
    println!("{}", serde_json::to_string(&report)?);
    if let Some(p) = &report.panic {
        // A panic is a crash: end the way an aborting program does, so
        // that the runner's crash detection sees it.
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        eprintln!("adapter-probe: {name} {p}");
        std::process::abort();
    }
    Ok(0)
}
