//! `qcow2-conform corpus build | verify | pack`, and the `SHA256SUMS` file
//! that `build` writes (`generate` streams its own) and `verify` checks.
//! `build` also writes the vendor kit ([`super::corpus_kit`]); `pack`
//! verifies first and refuses a corpus that fails. A corpus to verify or
//! pack is untrusted: every path it names is opened beneath it as a regular
//! file ([`input::open_beneath`]), and the tarball holds only files that
//! SHA256SUMS lists and that hash as it says.

use super::corpus_kit;
use crate::cli::CorpusCommand;
use crate::runner::{corpus::input, report::sanitise};
use anyhow::{bail, Context, Result};
use generator::corpus;
use generator::files::{self, write_sparse, Hashing};
use generator::{Manifest, ManifestCase};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
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
            Ok(ManifestCase::in_images(
                case.id,
                &case.file_name,
                case.expected,
                case.description,
            ))
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

/// Compares the model's report of one image with its manifest entry (the
/// image opened beneath `dir`, a regular file, without waiting).
pub fn verify_case(dir: &Path, case: &ManifestCase) -> CaseCheck {
    let mut problems = Vec::new();
    match input::open_beneath(dir, Path::new(&case.file)) {
        Err(e) => problems.push(format!("cannot check: {e}")),
        Ok(f) => match spec_model::check(f) {
            Err(e) => problems.push(format!("cannot check: {e}")),
            Ok(r) => problems.extend(case.expected.differences(&r).iter().map(|d| d.to_string())),
        },
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
    /// Files whose SHA-256 differs, that are missing, that cannot be read
    /// inside the corpus as regular files, or that the manifest names (or
    /// the kit holds) but SHA256SUMS does not list.
    pub file_problems: Vec<String>,
    /// Every path SHA256SUMS lists, with its SHA-256 there.
    pub listed: BTreeMap<String, String>,
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

/// `DIR/NAME` as text: a regular file beneath `dir`, within `cap` bytes.
fn read_in(dir: &Path, name: &str, cap: u64, what: &'static str) -> Result<String> {
    let path = dir.join(name);
    let bytes = input::open_beneath(dir, Path::new(name))
        .and_then(|f| input::read_file_capped(f, &path, cap, what))
        .and_then(|b| input::utf8(b, &path))?;
    Ok(bytes)
}

/// The SHA-256 of `DIR/NAME`, opened beneath `dir` as a regular file
/// without waiting ([`input::open_beneath`]).
fn sha256_in(dir: &Path, name: &str) -> Result<String> {
    let f = input::open_beneath(dir, Path::new(name))?;
    files::sha256_reader(f, Hashing::Plain)
        .with_context(|| format!("cannot read {}", dir.join(name).display()))
}

/// The files a packed corpus holds besides SHA256SUMS: every image and
/// companion, the manifest and the kit, sorted.
fn packed_files(manifest: &Manifest) -> Vec<String> {
    let mut files = case_files(manifest);
    files.push("manifest.json".into());
    files.extend(corpus_kit::names().map(String::from));
    files.sort();
    files.dedup();
    files
}

/// Checks every file listed in `DIR/SHA256SUMS` and every case's verdict,
/// rules and contents against the model. Every path is opened beneath
/// `dir` ([`input::open_beneath`]): a listed path that is absolute, holds
/// `..`, leads out through a symbolic link or is not a regular file (a
/// FIFO, a device) is a file problem, named without a hash. Every image,
/// companion and manifest must be listed, and so must every kit file
/// present (`README.md`, `PROTOCOL.md`, the examples): `pack` puts exactly
/// these in the tarball.
pub fn verification(dir: &Path) -> Result<Verification> {
    let text = read_in(dir, "manifest.json", input::MANIFEST_CAP, "a manifest")?;
    let manifest = Manifest::from_json(&text)?;
    let sums = read_in(dir, "SHA256SUMS", input::SUMS_CAP, "SHA256SUMS")?;
    let mut file_problems = Vec::new();
    let mut listed = BTreeMap::new();
    for line in sums.lines() {
        let Some((hash, file)) = line.split_once("  ") else {
            bail!(
                "malformed SHA256SUMS line {:?}",
                sanitise::one_line(&line.chars().take(200).collect::<String>())
            );
        };
        if listed.insert(file.to_string(), hash.to_string()).is_some() {
            file_problems.push(format!("{file}: listed twice in SHA256SUMS"));
            continue;
        }
        match sha256_in(dir, file) {
            Ok(h) if h == hash => {}
            Ok(h) => file_problems.push(format!("{file}: SHA-256 {h}, SHA256SUMS says {hash}")),
            Err(e) => file_problems.push(format!("{file}: {e:#}")),
        }
    }
    for f in packed_files(&manifest) {
        let kit = corpus_kit::names().any(|k| k == f);
        let present = || std::fs::symlink_metadata(dir.join(&f)).is_ok();
        if !listed.contains_key(&f) && (!kit || present()) {
            file_problems.push(format!("{f}: not listed in SHA256SUMS"));
        }
    }
    let checks: Vec<CaseCheck> = manifest
        .cases
        .par_iter()
        .map(|c| verify_case(dir, c))
        .collect();
    Ok(Verification {
        checks,
        file_problems,
        listed,
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
            println!("FILE  {}", sanitise::one_line(p));
        }
        for c in &bad {
            let line = format!("{}: {}", c.id, c.problems.join("; "));
            println!("CASE  {}", sanitise::one_line(&line));
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
    let text = read_in(dir, "manifest.json", input::MANIFEST_CAP, "a manifest")?;
    let manifest = Manifest::from_json(&text)?;
    let name = format!("qcow2-conform-corpus-{}", env!("CARGO_PKG_VERSION"));
    std::fs::create_dir_all(out)?;
    let tarball = out.join(format!("{name}.tar.gz"));
    let mut files = packed_files(&manifest);
    files.push("SHA256SUMS".into());
    files.sort();
    let written = write_tarball(dir, &tarball, &name, &files, &v.listed);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tarball);
        return Err(e);
    }
    let sum = format!("{}  {name}.tar.gz\n", sha256_file(&tarball)?);
    std::fs::write(out.join(format!("{name}.tar.gz.sha256")), &sum)?;
    eprintln!("corpus pack: {} ({} files)", tarball.display(), files.len());
    print!("{sum}");
    Ok(0)
}

/// Writes the tarball of `files` (each opened beneath `dir` as a regular
/// file, hashed, and packed from the same open file, which must still hash
/// as SHA256SUMS says), every name under `name/`.
fn write_tarball(
    dir: &Path,
    tarball: &Path,
    name: &str,
    files: &[String],
    listed: &BTreeMap<String, String>,
) -> Result<()> {
    use std::io::Seek;
    let file = std::fs::File::create(tarball)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for f in files {
        let mut opened = input::open_beneath(dir, Path::new(f)).map_err(|e| {
            anyhow::anyhow!("{e} (`qcow2-conform corpus build` writes every file a corpus packs)")
        })?;
        if f != "SHA256SUMS" {
            let h = files::sha256_reader(&mut opened, Hashing::Plain)?;
            if listed.get(f) != Some(&h) {
                bail!("{f} changed while it was packed: its SHA-256 is not what SHA256SUMS says");
            }
            opened.rewind()?;
        }
        tar.append_file(format!("{name}/{f}"), &mut opened)?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}
