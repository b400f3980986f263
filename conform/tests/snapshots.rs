//! insta snapshots, kept in `snapshots/` at the workspace root: `check
//! --json` and `dump --json` of every corpus case, and the QEMU conformance
//! matrix (case to outcome) from the runner. A change of the model, the
//! corpus or the QEMU version shows as a snapshot diff to review
//! (`cargo insta review`); CI runs `cargo insta test --check`.

use generator::Manifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

fn manifest() -> Manifest {
    Manifest::from_json(&std::fs::read_to_string(corpus().join("manifest.json")).unwrap()).unwrap()
}

/// Snapshot names: the case ID with `/` as `--`.
fn name(kind: &str, id: &str) -> String {
    format!("{kind}@{}", id.replace('/', "--"))
}

#[test]
fn check_and_dump_of_every_corpus_case() {
    settings().bind(|| {
        for case in manifest().cases {
            let path = corpus().join(&case.file);
            let model = spec_model::Model::open(std::fs::File::open(&path).unwrap()).unwrap();
            insta::assert_json_snapshot!(name("check", &case.id), model.report());
            let dump = spec_model::dump::dump(model.analysis());
            insta::assert_json_snapshot!(name("dump", &case.id), dump);
        }
    });
}

#[test]
fn qemu_conformance_matrix() {
    let qemu = conform::runner::adapter_from_spec("qemu")
        .expect("qemu-img, qemu-io and qemu-nbd are installed");
    let opts = conform::runner::RunOptions {
        limits: conform::runner::Limits::default(),
        jobs: 0,
        writes: true,
        progress: false,
    };
    let report = conform::runner::run_corpus(&corpus(), &[qemu], &opts).unwrap();
    assert!(report.corpus_unchanged, "{:?}", report.corpus_changes);
    let matrix: BTreeMap<String, String> = report
        .cases
        .iter()
        .map(|c| (c.id.clone(), c.results[0].outcome.kind.as_str().to_string()))
        .collect();
    let version = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    settings().bind(|| {
        insta::assert_json_snapshot!(
            "qemu-matrix",
            serde_json::json!({"qemu": version, "outcomes": matrix})
        );
    });
}
