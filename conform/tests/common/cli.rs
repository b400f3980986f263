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
/// failure message. A program that cannot start fails the test (the tools
/// the tests use are installed by `scripts/setup.sh`).
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} (scripts/setup.sh installs what the tests run): {e}")
    });
    assert!(o.status.success(), "{cmd:?} failed: {}", output_text(&o));
    o
}

/// What a finished program printed: its standard output, then its
/// standard error.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The standard output of `o`, which must have exited with `code` (both
/// streams show in the failure message otherwise).
pub fn stdout_if_exit(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", output_text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `qemu-img create -q -f qcow2 [-o OPTS] PATH SIZE` (no `-o` when `opts`
/// is empty); must succeed.
pub fn qemu_img_create(path: &Path, opts: &str, size: &str) {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if !opts.is_empty() {
        cmd.args(["-o", opts]);
    }
    run_ok(cmd.arg(path).arg(size));
}

/// `qemu-io -f qcow2 -c CMD.. PATH`; must succeed.
pub fn qemu_io(path: &Path, cmds: &[&str]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "qcow2"]);
    for c in cmds {
        cmd.arg("-c").arg(c);
    }
    run_ok(cmd.arg(path));
}

/// An exec-protocol shell program `dir/NAME`, run as `exec:sh PATH`: it
/// answers `capabilities` with `{"protocol":1,CAPS}` and every other verb
/// as the shell `case` branches `branches` say. Returns its `--impl`.
pub fn sh_program(dir: &Path, name: &str, caps: &str, branches: &str) -> String {
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\ncapabilities) echo '{{\"protocol\":1,{caps}}}';;\n{branches}\nesac\n"
        ),
    )
    .unwrap();
    format!("exec:sh {}", script.display())
}

/// The start of a Python exec-protocol program (`PROGRAM MODE VERB ...`):
/// the modules the tests' programs use, and `reply`, which prints an
/// answer and ends the program.
pub const PY_PROLOGUE: &str = r#"
import hashlib, json, os, struct, subprocess, sys, tempfile
mode, verb = sys.argv[1], sys.argv[2]
def reply(o):
    o["protocol"] = 1
    print(json.dumps(o))
    sys.exit(0)
"#;

/// [`PY_PROLOGUE`] and `body` written to `dir/name`, as the command line
/// of an `--impl exec:` in `mode`.
pub fn py_program(dir: &Path, name: &str, body: &str, mode: &str) -> String {
    let script = dir.join(name);
    std::fs::write(&script, format!("{PY_PROLOGUE}{body}")).unwrap();
    format!("exec:python3 {} {mode}", script.to_str().unwrap())
}

/// The outcomes that fail a run under the default `--fail-on`.
pub const FAILING_BY_DEFAULT: [&str; 6] = [
    "lenient",
    "strict",
    "mismatch",
    "corrupting",
    "crash",
    "hang",
];

/// The string `key` of every element of the JSON array `list`.
pub fn each_str<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x[key].as_str().expect("a string"))
        .collect()
}

/// The cases of a JSON run report.
pub fn report_cases(report: &Value) -> &[Value] {
    report["cases"]
        .as_array()
        .expect("a report lists its cases")
}

/// The result of the implementation keyed `implementation` on case `id`
/// of a JSON run report (the test fails when there is none).
pub fn report_result<'a>(report: &'a Value, id: &str, implementation: &str) -> &'a Value {
    let case = report_cases(report)
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no case {id} in the report"));
    case["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["implementation"] == implementation)
        .unwrap_or_else(|| panic!("no result of {implementation} for {id}"))
}

/// Fails when more than `seconds` have passed since `started` (a test
/// that must stay quick).
pub fn assert_within(started: std::time::Instant, seconds: u64) {
    let took = started.elapsed();
    assert!(took.as_secs() < seconds, "took {took:?}");
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

/// A fresh temporary directory holding, as `NAME`, a corpus made by
/// `qcow2-conform generate ARGS`; the directory goes when the returned
/// handle drops.
pub fn generated_corpus(name: &str, args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join(name);
    generate(&corpus, args);
    (tmp, corpus)
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
