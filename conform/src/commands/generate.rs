//! `qcow2-conform generate`: deterministic images plus `manifest.json` and
//! `SHA256SUMS` (so that `corpus verify` checks the output), streamed: each
//! image is written as soon as it is made, and the manifest and checksums
//! one entry at a time, so memory stays bounded by a batch of images
//! whatever `--count` is.

use crate::cli::{GenerateArgs, Profile};
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use generator::cases::{self, Case};
use generator::files::{self, write_sparse};
use generator::manifest::{Generation, ManifestWriter};
use generator::{Config, ManifestCase};
use indicatif::ProgressBar;
use std::path::Path;

fn config(p: Profile) -> Config {
    match p {
        Profile::Spec => Config::default(),
        Profile::Qemu => Config::qemu(),
        Profile::Small => Config::small(),
    }
}

/// What one run of consecutive case indices makes.
enum Kind {
    Valid,
    Revision(spec_model::Revision),
    /// Mutants cycling through the mutations, numbered from `offset`.
    Mutants {
        mutations: Vec<&'static generator::mutate::Mutation>,
        offset: u64,
    },
}

/// The cases the arguments ask for, in manifest order: runs of `count`
/// cases of each kind. Nothing is made here: each case is made, written
/// and dropped by [`run`], so memory does not grow with `--count`.
fn plan(args: &GenerateArgs) -> Result<Vec<Kind>> {
    let mut kinds = Vec::new();
    // With no kind given: `count` valid images and `count` mutants.
    let want_mix = !(args.valid || args.mutants || args.rule.is_some() || args.revision.is_some());
    let want_valid = args.valid || want_mix;
    if want_valid {
        kinds.push(Kind::Valid);
    }
    if let Some(rev) = args.revision {
        kinds.push(Kind::Revision(rev));
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
        kinds.push(Kind::Mutants { mutations, offset });
    }
    Ok(kinds)
}

/// Case `i` of a run of `kind`.
fn make(kind: &Kind, args: &GenerateArgs, cfg: &Config, i: u64) -> Result<Case> {
    match kind {
        Kind::Valid => {
            cases::valid(args.seed, i, cfg).with_context(|| format!("building valid case {i}"))
        }
        Kind::Revision(rev) => cases::revision(*rev, args.seed, i, cfg)
            .with_context(|| format!("rendering {rev} case {i}")),
        Kind::Mutants { mutations, offset } => {
            let m = mutations[(i as usize) % mutations.len()];
            let index = offset + i;
            cases::mutant(m, args.seed, index, cfg)
                .with_context(|| format!("making mutant {} (case {index})", m.id))
        }
    }
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
        tool: crate::runner::report::provenance::tool_version(),
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

/// One case made and written: its manifest entry and its image's SHA-256.
struct Written {
    entry: ManifestCase,
    sha256: String,
}

/// Makes case `i` of `kind`, writes its image under `OUT/images/` and
/// keeps only its manifest entry and checksum (the image's bytes are
/// dropped here).
fn make_and_write(kind: &Kind, args: &GenerateArgs, cfg: &Config, i: u64) -> Result<Written> {
    use sha2::Digest;
    let case = make(kind, args, cfg, i)?;
    let path = args.out.join("images").join(&case.file_name);
    write_sparse(&path, &case.bytes).with_context(|| format!("cannot write {}", path.display()))?;
    let sha256 = hex::encode(sha2::Sha256::digest(&case.bytes));
    Ok(Written {
        entry: ManifestCase::in_images(case.id, &case.file_name, case.expected, case.description),
        sha256,
    })
}

/// Makes every case, a few per worker at a time in manifest order, and
/// streams `manifest.json` and `SHA256SUMS` as they come: memory holds
/// one image per worker and one batch of manifest entries, whatever
/// `--count` is.
pub fn run(args: &GenerateArgs) -> Result<i32> {
    use rayon::prelude::*;
    use std::io::Write as _;
    let kinds = plan(args)?;
    let cfg = config(args.profile);
    prepare_out(&args.out, args.force)?;
    let total = args.count.saturating_mul(kinds.len() as u64);
    let bar = ProgressBar::new(total);
    bar.set_style(crate::runner::report::terminal::progress_style(
        "{prefix} [{bar:30}] {pos}/{len} {rate} {msg}",
    ));
    bar.set_prefix("generate");
    let path = args.out.join("manifest.json");
    let sums_path = args.out.join("SHA256SUMS");
    let create = |p: &Path| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .with_context(|| format!("cannot write {}", p.display()))
    };
    let generation = generation(args);
    let mut manifest = ManifestWriter::new(create(&path)?, Some(&generation))?;
    let mut sums = create(&sums_path)?;
    let batch = (rayon::current_num_threads() as u64 * 4).max(8);
    for kind in &kinds {
        let mut start = 0;
        while start < args.count {
            let end = (start + batch).min(args.count);
            let made: Vec<Written> = (start..end)
                .into_par_iter()
                .map(|i| {
                    let w = make_and_write(kind, args, &cfg, i);
                    bar.inc(1);
                    w
                })
                .collect::<Result<_>>()?;
            for w in made {
                manifest.push(&w.entry)?;
                writeln!(sums, "{}  {}", w.sha256, w.entry.file)?;
            }
            start = end;
        }
    }
    bar.finish_and_clear();
    let (_, count) = manifest.finish()?;
    let hash = files::sha256_file(&path, files::Hashing::Plain)
        .with_context(|| format!("cannot read {}", path.display()))?;
    writeln!(sums, "{hash}  manifest.json")?;
    sums.flush()
        .with_context(|| format!("cannot write {}", sums_path.display()))?;
    if args.json {
        let mut f = std::fs::File::open(&path)?;
        std::io::copy(&mut f, &mut std::io::stdout().lock())?;
    } else {
        eprintln!(
            "generate: {count} cases in {} (manifest {})",
            args.out.join("images").display(),
            path.display()
        );
    }
    Ok(0)
}
