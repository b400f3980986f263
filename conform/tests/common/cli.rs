//! Running the `qcow2-conform` binary from integration tests: generating a
//! corpus, running implementations over it with the corpus checked byte for
//! byte before and after, and reading the JSON report. Included with
//! `#[path = "common/cli.rs"] mod cli;` by the tests that need it.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_qcow2-conform");

/// The workspace's root directory (where `corpus/`, `scripts/` and
/// `.venv/` are).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conform/ has a parent")
        .to_owned()
}

/// Every file below `dir` (directories walked, not listed), sorted.
pub fn tree_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// SHA-256 of every file below `dir`, by path.
pub fn tree_hashes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    use sha2::Digest;
    tree_files(dir)
        .into_iter()
        .map(|p| {
            let h = sha2::Sha256::digest(std::fs::read(&p).unwrap()).to_vec();
            (p, h)
        })
        .collect()
}

/// Runs `cmd`, which must exit 0; its output otherwise shows in the
/// failure message.
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `qcow2-conform generate ARGS --out OUT`.
pub fn generate(out: &Path, args: &[&str]) {
    run_ok(
        Command::new(BIN)
            .arg("generate")
            .args(args)
            .arg("--out")
            .arg(out),
    );
}

/// `qcow2-conform run --corpus CORPUS --json JSON ARGS`: must exit 0 and
/// leave the corpus byte for byte as it was. Returns the JSON report.
pub fn run_report(corpus: &Path, json: &Path, args: &[&str]) -> Value {
    let before = tree_hashes(corpus);
    run_ok(
        Command::new(BIN)
            .arg("run")
            .arg("--corpus")
            .arg(corpus)
            .arg("--json")
            .arg(json)
            .args(args),
    );
    assert_eq!(
        before,
        tree_hashes(corpus),
        "the corpus changed during the run"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(report["corpus_unchanged"], true);
    report
}

/// The `.tar.gz` files in `dir` (none when it does not exist).
pub fn tarballs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
                .collect()
        })
        .unwrap_or_default()
}

/// The name `report` keys the results of `--impl SPEC` by: an exec
/// program's own (found beside the template that started it in the
/// provenance), a built-in adapter's spec itself.
pub fn implementation_key(report: &Value, spec: &str) -> String {
    report["provenance"]["implementations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["detail"] == spec)
        .and_then(|i| i["name"].as_str())
        .unwrap_or(spec)
        .to_owned()
}
