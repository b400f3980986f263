//! Real-world image shapes against the real QEMU: the QEMU-made corpus
//! cases (backing chains after commit and rebase, external data files,
//! LUKS) run with their companion files and secret, and QEMU passes each;
//! a case whose companion is missing is the runner's `error`, never
//! `strict`; companion paths that leave the corpus are refused; the model
//! reads guest data through the chains as `qemu-img convert -O raw` does;
//! the bitmaps the script wrote are what the model reads.

use conform::runner::{self, OutcomeKind, RunOptions};
use generator::{Manifest, ManifestCase};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qcow2-conform");

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// The QEMU-made cases of the checked-in corpus.
fn qemu_cases() -> Vec<ManifestCase> {
    let text = std::fs::read_to_string(corpus().join("manifest.json")).unwrap();
    let cases: Vec<ManifestCase> = Manifest::from_json(&text)
        .unwrap()
        .cases
        .into_iter()
        .filter(|c| c.id.starts_with("qemu/"))
        .collect();
    assert_eq!(cases.len(), generator::qemu_made::CASES.len());
    cases
}

/// A corpus of just the QEMU-made cases, in a fresh directory.
fn small_corpus() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let cases = qemu_cases();
    for c in &cases {
        for f in std::iter::once(&c.file).chain(&c.companions) {
            let to = d.path().join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(corpus().join(f), to).unwrap();
        }
    }
    std::fs::write(
        d.path().join("manifest.json"),
        Manifest::new(cases).to_json(),
    )
    .unwrap();
    d
}

fn opts() -> RunOptions {
    RunOptions {
        limits: runner::Limits::default(),
        jobs: 0,
        writes: true,
        progress: false,
        scheduling: Default::default(),
    }
}

fn outcomes(dir: &Path) -> Vec<(String, OutcomeKind, Vec<String>)> {
    let qemu = runner::adapter_from_spec("qemu").expect("QEMU's tools are installed");
    let report = runner::run_corpus(dir, &[qemu], &opts()).unwrap();
    assert!(report.corpus_unchanged, "{:?}", report.corpus_changes);
    report
        .cases
        .iter()
        .map(|c| {
            let r = &c.results[0];
            (c.id.clone(), r.outcome.kind, r.outcome.detail.clone())
        })
        .collect()
}

/// QEMU over the corpus in `dir`, whose `qemu/backing-commit` base is
/// broken: those cases end in `error`, naming `base.qcow2` and `why`;
/// with `others_pass`, every other case passes.
fn backing_commit_is_error(dir: &Path, why: &str, others_pass: bool) {
    for (id, kind, detail) in outcomes(dir) {
        if id.starts_with("qemu/backing-commit") {
            assert_eq!(kind, OutcomeKind::Error, "{id}: {detail:?}");
            assert!(
                detail[0].contains("base.qcow2") && detail[0].contains(why),
                "{detail:?}"
            );
        } else if others_pass {
            assert_eq!(kind, OutcomeKind::Pass, "{id}: {detail:?}");
        }
    }
}

#[test]
fn qemu_passes_every_qemu_made_case() {
    let d = small_corpus();
    for (id, kind, detail) in outcomes(d.path()) {
        assert_eq!(kind, OutcomeKind::Pass, "{id}: {detail:?}");
    }
}

#[test]
fn a_fifo_companion_is_error_and_never_opened() {
    let d = small_corpus();
    let base = d.path().join("images/qemu/backing-commit/base.qcow2");
    std::fs::remove_file(&base).unwrap();
    let made = Command::new("mkfifo").arg(&base).status().unwrap();
    assert!(made.success());
    // Opening the FIFO would block the copy for ever: the run must end.
    backing_commit_is_error(d.path(), "not a regular file", false);
}

#[test]
fn a_missing_companion_is_error_not_strict() {
    let d = small_corpus();
    std::fs::remove_file(d.path().join("images/qemu/backing-commit/base.qcow2")).unwrap();
    backing_commit_is_error(d.path(), "missing", true);
    // `run` says so and exits 1: the run is incomplete.
    let out = Command::new(BIN)
        .args(["run", "--impl", "qemu", "--read-only", "--corpus"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("INCOMPLETE"),
        "{out:?}"
    );
}

#[test]
fn companions_outside_the_image_directory_are_refused() {
    for bad in [
        "/etc/passwd",
        "images/qemu/luks/../../../x",
        "images/other/x",
    ] {
        let d = small_corpus();
        let mut cases = qemu_cases();
        cases[0].companions.push(bad.to_string());
        std::fs::write(
            d.path().join("manifest.json"),
            Manifest::new(cases).to_json(),
        )
        .unwrap();
        let err = runner::corpus::load(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("companion") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}

/// The whole guest disk of `image` as `qemu-img convert -O raw` writes it
/// (run in the image's directory, where QEMU resolves a relative data file
/// name).
fn qemu_raw(image: &Path, out: &Path) -> Vec<u8> {
    let status = Command::new("qemu-img")
        .current_dir(image.parent().unwrap())
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(image)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

#[test]
fn the_model_reads_chains_and_data_files_as_qemu_does() {
    let d = tempfile::tempdir().unwrap();
    for c in qemu_cases().iter().filter(|c| c.secret.is_none()) {
        let image = corpus().join(&c.file);
        let want = qemu_raw(&image, &d.path().join("out.raw"));
        let mut layered = runner::corpus::image_layers::open(&image).unwrap();
        let mut got = vec![0u8; want.len()];
        layered.read(0, &mut got).unwrap();
        assert!(
            got == want,
            "{}: the model's guest data differs from QEMU's",
            c.id
        );
        assert!(want.iter().any(|&b| b != 0), "{}: nothing written", c.id);
    }
}

#[test]
fn the_bitmaps_the_script_wrote_are_what_the_model_reads() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus-src/qemu");
    for c in generator::qemu_made::CASES {
        let report = spec_model::check_path(src.join(c.dir).join(c.image)).unwrap();
        let diff = c.expected().differences(&report);
        assert!(diff.is_empty(), "{}: {diff:?}", c.id());
    }
}
