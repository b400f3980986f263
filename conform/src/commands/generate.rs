//! `qcow2-conform generate`: deterministic images plus `manifest.json` and
//! `SHA256SUMS` (so that `corpus verify` checks the output).

use crate::cli::{GenerateArgs, Profile};
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use generator::cases::{self, Case};
use generator::files::write_sparse;
use generator::manifest::Generation;
use generator::{Config, Manifest, ManifestCase};
use indicatif::ProgressBar;
use std::path::Path;

fn config(p: Profile) -> Config {
    match p {
        Profile::Spec => Config::default(),
        Profile::Qemu => Config::qemu(),
        Profile::Small => Config::small(),
    }
}

/// One case to make, run on a worker thread.
type Job<'a> = Box<dyn Fn() -> Result<Case> + Sync + 'a>;

/// The cases the arguments ask for, in manifest order.
fn plan(args: &GenerateArgs) -> Result<Vec<Job<'_>>> {
    let cfg = config(args.profile);
    let mut jobs: Vec<Job<'_>> = Vec::new();
    // With no kind given: `count` valid images and `count` mutants.
    let want_mix = !(args.valid || args.mutants || args.rule.is_some() || args.revision.is_some());
    let want_valid = args.valid || want_mix;
    if want_valid {
        for i in 0..args.count {
            let cfg = cfg.clone();
            jobs.push(Box::new(move || {
                cases::valid(args.seed, i, &cfg).with_context(|| format!("building valid case {i}"))
            }));
        }
    }
    if let Some(rev) = args.revision {
        for i in 0..args.count {
            let cfg = cfg.clone();
            jobs.push(Box::new(move || {
                cases::revision(rev, args.seed, i, &cfg)
                    .with_context(|| format!("rendering {rev} case {i}"))
            }));
        }
    }
    let mutations: Vec<&'static generator::mutate::Mutation> = match &args.rule {
        Some(id) => {
            let found = generator::mutate::by_rule(id);
            if found.is_empty() {
                bail!("no mutation targets rule {id:?}; `qcow2-conform rules` lists the rule IDs");
            }
            found
        }
        // Heavy mutations (multi-MiB images) only when asked for by rule.
        None if args.mutants || want_mix => generator::mutate::catalogue()
            .iter()
            .filter(|m| !m.heavy)
            .collect(),
        None => Vec::new(),
    };
    if !mutations.is_empty() {
        let offset = if want_valid { args.count } else { 0 };
        for i in 0..args.count {
            let m = mutations[(i as usize) % mutations.len()];
            let cfg = cfg.clone();
            let index = offset + i;
            jobs.push(Box::new(move || {
                cases::mutant(m, args.seed, index, &cfg)
                    .with_context(|| format!("making mutant {} (case {index})", m.id))
            }));
        }
    }
    Ok(jobs)
}

/// The tool, seed and case-deciding arguments, for the manifest: the
/// same for the same arguments wherever `--out` points.
fn generation(args: &GenerateArgs) -> Generation {
    let mut a = vec![
        "--seed".to_owned(),
        args.seed.to_string(),
        "--count".to_owned(),
        args.count.to_string(),
    ];
    if args.valid {
        a.push("--valid".into());
    }
    if args.mutants {
        a.push("--mutants".into());
    }
    if let Some(r) = &args.rule {
        a.extend(["--rule".into(), r.clone()]);
    }
    if let Some(r) = args.revision {
        a.extend(["--revision".into(), r.to_string()]);
    }
    let profile = args
        .profile
        .to_possible_value()
        .map(|v| v.get_name().to_owned());
    a.extend(["--profile".into(), profile.unwrap_or_default()]);
    Generation {
        tool: crate::runner::provenance::tool_version(),
        seed: args.seed,
        arguments: a,
    }
}

fn prepare_out(out: &Path, force: bool) -> Result<()> {
    let images = out.join("images");
    if out.exists() {
        let has_content = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some();
        if has_content && !force {
            bail!(
                "{} is not empty; pass --force to replace its images/ and manifest.json",
                out.display()
            );
        }
        if images.exists() {
            std::fs::remove_dir_all(&images)
                .with_context(|| format!("cannot clear {}", images.display()))?;
        }
    }
    std::fs::create_dir_all(&images).with_context(|| format!("cannot create {}", images.display()))
}

pub fn run(args: &GenerateArgs) -> Result<i32> {
    let jobs = plan(args)?;
    prepare_out(&args.out, args.force)?;
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(crate::runner::terminal::progress_style(
        "{prefix} [{bar:30}] {pos}/{len} {rate} {msg}",
    ));
    bar.set_prefix("generate");
    use rayon::prelude::*;
    let cases: Vec<Result<Case>> = jobs
        .par_iter()
        .map(|job| {
            let case = job()?;
            let path = args.out.join("images").join(&case.file_name);
            write_sparse(&path, &case.bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            bar.inc(1);
            Ok(case)
        })
        .collect();
    bar.finish_and_clear();
    let mut entries = Vec::with_capacity(cases.len());
    for c in cases {
        let c = c?;
        entries.push(ManifestCase {
            id: c.id,
            file: format!("images/{}", c.file_name),
            expected: c.expected,
            description: c.description,
            companions: Vec::new(),
            secret: None,
        });
    }
    let mut manifest = Manifest::new(entries);
    manifest.generated_by = Some(generation(args));
    let path = args.out.join("manifest.json");
    std::fs::write(&path, manifest.to_json())
        .with_context(|| format!("cannot write {}", path.display()))?;
    super::corpus::write_checksums(&args.out, &manifest, &[])?;
    if args.json {
        print!("{}", manifest.to_json());
    } else {
        eprintln!(
            "generate: {} cases in {} (manifest {})",
            manifest.cases.len(),
            args.out.join("images").display(),
            path.display()
        );
    }
    Ok(0)
}
