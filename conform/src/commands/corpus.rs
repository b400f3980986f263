//! `qcow2-conform corpus build | verify | pack`, and the `SHA256SUMS` file
//! that `build` and `generate` write and `verify` checks. `build` also
//! writes the vendor kit ([`super::corpus_kit`]); `pack` verifies first and
//! refuses a corpus that fails.

use super::corpus_kit;
use crate::cli::CorpusCommand;
use anyhow::{bail, Context, Result};
use generator::corpus;
use generator::files::{self, write_sparse, Hashing};
use generator::{Manifest, ManifestCase};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

pub fn run(cmd: CorpusCommand) -> Result<i32> {
    match cmd {
        CorpusCommand::Build { dir } => build(&dir),
        CorpusCommand::Verify { dir, json } => verify(&dir, json),
        CorpusCommand::Pack { dir, out } => pack(&dir, &out),
    }
}

/// The file's SHA-256 as `sha256sum` prints it.
fn sha256_file(path: &Path) -> Result<String> {
    files::sha256_file(path, Hashing::Plain)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// Every file of the manifest's cases (images and companions), sorted,
/// each once.
fn case_files(manifest: &Manifest) -> Vec<String> {
    let mut files: Vec<String> = manifest
        .cases
        .iter()
        .flat_map(|c| std::iter::once(&c.file).chain(&c.companions).cloned())
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Writes `DIR/SHA256SUMS`: `sha256sum`-style lines for the manifest,
/// every image and companion, and the `extra` files, sorted.
pub fn write_checksums(dir: &Path, manifest: &Manifest, extra: &[&str]) -> Result<()> {
    let mut files = case_files(manifest);
    files.push("manifest.json".into());
    files.extend(extra.iter().map(|f| f.to_string()));
    files.sort();
    files.dedup();
    let mut out = String::new();
    for f in files {
        out.push_str(&format!("{}  {f}\n", sha256_file(&dir.join(&f))?));
    }
    let path = dir.join("SHA256SUMS");
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}

fn build(dir: &Path) -> Result<i32> {
    let plan = corpus::plan();
    let images = dir.join("images");
    if images.exists() {
        std::fs::remove_dir_all(&images)
            .with_context(|| format!("cannot clear {}", images.display()))?;
    }
    std::fs::create_dir_all(&images)?;
    let bar = indicatif::ProgressBar::new(plan.len() as u64);
    let made: Vec<Result<ManifestCase>> = plan
        .par_iter()
        .map(|(id, source)| {
            let case = corpus::make(id, source)?;
            write_sparse(&images.join(&case.file_name), &case.bytes)?;
            bar.inc(1);
            Ok(ManifestCase {
                id: case.id,
                file: format!("images/{}", case.file_name),
                expected: case.expected,
                description: case.description,
                companions: Vec::new(),
                secret: None,
            })
        })
        .collect();
    bar.finish_and_clear();
    let mut cases = made.into_iter().collect::<Result<Vec<_>>>()?;
    cases.extend(copy_qemu_made(&images)?);
    let manifest = Manifest::new(cases);
    std::fs::write(dir.join("manifest.json"), manifest.to_json())?;
    corpus_kit::write(dir)?;
    let kit: Vec<&str> = corpus_kit::names().collect();
    write_checksums(dir, &manifest, &kit)?;
    let bytes: u64 = case_files(&manifest)
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!(
        "corpus: {} cases, {:.1} MiB of images, in {}",
        manifest.cases.len(),
        bytes as f64 / (1 << 20) as f64,
        dir.display()
    );
    Ok(0)
}

/// Where the checked-in QEMU-made cases are: `$QCOW2_CONFORM_QEMU_CASES`,
/// else `corpus-src/qemu` of the workspace this binary was built from.
fn qemu_made_source() -> std::path::PathBuf {
    match std::env::var_os("QCOW2_CONFORM_QEMU_CASES") {
        Some(p) if !p.is_empty() => p.into(),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus-src/qemu"),
    }
}

/// Copies the QEMU-made cases ([`generator::qemu_made`]) into
/// `images/qemu/<dir>/` and returns their manifest entries.
fn copy_qemu_made(images: &Path) -> Result<Vec<ManifestCase>> {
    let source = qemu_made_source();
    let mut out = Vec::new();
    for c in generator::qemu_made::CASES {
        let to = images.join("qemu").join(c.dir);
        std::fs::create_dir_all(&to)?;
        for f in std::iter::once(&c.image).chain(c.companions) {
            let from = source.join(c.dir).join(f);
            let dest = to.join(f);
            // A companion may lie in a subdirectory (`sub/base.qcow2`).
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            files::sparse_copy(&from, &dest).with_context(|| {
                format!(
                    "cannot copy the QEMU-made case file {} (set QCOW2_CONFORM_QEMU_CASES \
                     to the corpus-src/qemu directory)",
                    from.display()
                )
            })?;
        }
        let rel = |f: &str| format!("images/qemu/{}/{f}", c.dir);
        out.push(ManifestCase {
            id: c.id(),
            file: rel(c.image),
            expected: c.expected(),
            description: c.description.to_string(),
            companions: c.companions.iter().map(|f| rel(f)).collect(),
            secret: c.secret.map(str::to_owned),
        });
    }
    Ok(out)
}

/// The result of verifying one case.
#[derive(Debug, Serialize)]
pub struct CaseCheck {
    pub id: String,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// Compares the model's report of one image with its manifest entry.
pub fn verify_case(dir: &Path, case: &ManifestCase) -> CaseCheck {
    let mut problems = Vec::new();
    match spec_model::check_path(dir.join(&case.file)) {
        Err(e) => problems.push(format!("cannot check: {e}")),
        Ok(r) => problems.extend(case.expected.differences(&r).iter().map(|d| d.to_string())),
    }
    CaseCheck {
        id: case.id.clone(),
        ok: problems.is_empty(),
        problems,
    }
}

/// What `corpus verify` found.
pub struct Verification {
    pub checks: Vec<CaseCheck>,
    /// Files whose SHA-256 differs, that are missing, or that the manifest
    /// names but SHA256SUMS does not list.
    pub file_problems: Vec<String>,
}

impl Verification {
    pub fn failures(&self) -> Vec<&CaseCheck> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }

    pub fn ok(&self) -> bool {
        self.file_problems.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// `N cases, N disagree with the model, N file problems`.
    pub fn summary(&self) -> String {
        format!(
            "{} cases, {} disagree with the model, {} file problems",
            self.checks.len(),
            self.failures().len(),
            self.file_problems.len()
        )
    }
}

/// Checks every file listed in `DIR/SHA256SUMS` and every case's verdict,
/// rules and contents against the model.
pub fn verification(dir: &Path) -> Result<Verification> {
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .with_context(|| format!("cannot read {}/manifest.json", dir.display()))?;
    let manifest = Manifest::from_json(&text)?;
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .with_context(|| format!("cannot read {}/SHA256SUMS", dir.display()))?;
    let mut file_problems = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for line in sums.lines() {
        let Some((hash, file)) = line.split_once("  ") else {
            bail!("malformed SHA256SUMS line {line:?}");
        };
        listed.insert(file.to_string());
        match sha256_file(&dir.join(file)) {
            Ok(h) if h == hash => {}
            Ok(h) => file_problems.push(format!("{file}: SHA-256 {h}, SHA256SUMS says {hash}")),
            Err(e) => file_problems.push(format!("{file}: {e:#}")),
        }
    }
    for f in case_files(&manifest) {
        if !listed.contains(&f) {
            file_problems.push(format!("{f}: not listed in SHA256SUMS"));
        }
    }
    if !listed.contains("manifest.json") {
        file_problems.push("manifest.json: not listed in SHA256SUMS".into());
    }
    let checks: Vec<CaseCheck> = manifest
        .cases
        .par_iter()
        .map(|c| verify_case(dir, c))
        .collect();
    Ok(Verification {
        checks,
        file_problems,
    })
}

fn verify(dir: &Path, json: bool) -> Result<i32> {
    let v = verification(dir)?;
    let bad = v.failures();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "cases": v.checks.len(),
                "file_problems": v.file_problems,
                "failures": bad,
            }))?
        );
    } else {
        for p in &v.file_problems {
            println!("FILE  {p}");
        }
        for c in &bad {
            println!("CASE  {}: {}", c.id, c.problems.join("; "));
        }
        println!("corpus verify: {}", v.summary());
    }
    Ok(if v.ok() { 0 } else { 2 })
}

fn pack(dir: &Path, out: &Path) -> Result<i32> {
    let v = verification(dir)?;
    if !v.ok() {
        let first: Vec<String> = v
            .file_problems
            .iter()
            .cloned()
            .chain(
                v.failures()
                    .iter()
                    .map(|c| format!("{}: {}", c.id, c.problems.join("; "))),
            )
            .take(3)
            .collect();
        bail!(
            "refusing to pack {}: corpus verify fails ({}; first: {}); rebuild it with `qcow2-conform corpus build`",
            dir.display(),
            v.summary(),
            first.join(" | ")
        );
    }
    let text = std::fs::read_to_string(dir.join("manifest.json"))?;
    let manifest = Manifest::from_json(&text)?;
    let name = format!("qcow2-conform-corpus-{}", env!("CARGO_PKG_VERSION"));
    std::fs::create_dir_all(out)?;
    let tarball = out.join(format!("{name}.tar.gz"));
    let file = std::fs::File::create(&tarball)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut files = case_files(&manifest);
    files.extend(["manifest.json", "SHA256SUMS"].map(String::from));
    files.extend(corpus_kit::names().map(String::from));
    files.sort();
    for f in &files {
        let p = dir.join(f);
        if !p.exists() {
            bail!(
                "{} is missing: `qcow2-conform corpus build` writes it",
                p.display()
            );
        }
        tar.append_path_with_name(&p, format!("{name}/{f}"))?;
    }
    tar.into_inner()?.finish()?;
    let sum = format!("{}  {name}.tar.gz\n", sha256_file(&tarball)?);
    std::fs::write(out.join(format!("{name}.tar.gz.sha256")), &sum)?;
    eprintln!("corpus pack: {} ({} files)", tarball.display(), files.len());
    print!("{sum}");
    Ok(0)
}
