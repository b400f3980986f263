//! The live-QEMU conformance matrix: `run --impl qemu-live` over the whole
//! corpus, pinned as the insta snapshot `snapshots/qemu-live-matrix.snap`
//! beside the offline `qemu` matrix. Every difference between the two is
//! explained in `docs/findings.md` ("Live QEMU").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

#[test]
fn qemu_live_conformance_matrix() {
    let live = conform::runner::adapter_from_spec("qemu-live")
        .expect("qemu-storage-daemon is installed (scripts/setup.sh)");
    let opts = conform::runner::RunOptions {
        limits: conform::runner::Limits::default(),
        jobs: 0,
        writes: true,
        progress: false,
        scheduling: Default::default(),
    };
    let report = conform::runner::run_corpus(&corpus(), &[live], &opts).unwrap();
    assert!(report.corpus_unchanged, "{:?}", report.corpus_changes);
    let matrix: BTreeMap<String, String> = report
        .cases
        .iter()
        .map(|c| (c.id.clone(), c.results[0].outcome.kind.as_str().to_string()))
        .collect();
    let version = std::process::Command::new("qemu-storage-daemon")
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s.bind(|| {
        insta::assert_json_snapshot!(
            "qemu-live-matrix",
            serde_json::json!({"qemu-storage-daemon": version, "outcomes": matrix})
        );
    });
}
