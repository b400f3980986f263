//! `run`'s terminal output: the matrix fits the width it is given (five
//! implementations with long names in 80 columns: labelled `[1]`..`[5]`
//! with a legend, every line at most 80 characters, by case and by rule);
//! colour on a terminal (a real pseudo-terminal through util-linux
//! `script`) and none with `NO_COLOR`; `--impl X --impl X` runs X once.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

/// Opens everything, lists no bitmaps: `strict` on valid images with
/// bitmaps (it does not offer them).
const BLIND: &str = "#!/bin/sh\ncase \"$2\" in\n  capabilities) echo '{\"protocol\": 1}' ;;\n  observe) echo 'adapter '$1' looked' >&2; echo '{\"protocol\": 1, \"opened\": true, \"error\": null, \"bitmaps\": []}' ;;\n  *) exit 1 ;;\nesac\n";

fn setup(dir: &Path) -> (PathBuf, Vec<String>) {
    let corpus = dir.join("corpus");
    cli::generate(
        &corpus,
        &["--seed", "4", "--count", "3", "--profile", "qemu"],
    );
    let blind = dir.join("a-rather-long-adapter-name-for-a-vendor-library.sh");
    std::fs::write(&blind, BLIND).unwrap();
    let mut impls = vec!["qemu".to_owned()];
    for v in ["alpha", "bravo", "charlie", "delta"] {
        impls.push(format!("exec:sh {} {v}-edition", blind.display()));
    }
    (corpus, impls)
}

fn run_with(corpus: &Path, impls: &[String], extra: &[&str], columns: &str) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--corpus"])
        .arg(corpus)
        .args(["--fail-on", "none", "--read-only"])
        .args(extra)
        .env("COLUMNS", columns);
    for i in impls {
        cmd.arg("--impl").arg(i);
    }
    String::from_utf8(cli::run_ok(&mut cmd).stdout).unwrap()
}

#[test]
fn the_matrix_fits_the_width() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, impls) = setup(tmp.path());
    for rows in ["case", "rule"] {
        let out = run_with(&corpus, &impls, &["--matrix", rows], "80");
        for line in out.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line:?}\n{out}",
                line.chars().count()
            );
        }
        assert!(out.contains("[1] qemu"), "a legend for the labels:\n{out}");
        assert!(
            out.lines().any(|l| l.trim_start().starts_with("total")),
            "{out}"
        );
        // Every case (or rule) has its row.
        assert!(out.contains("valid/0001") || rows == "rule", "{out}");
        assert!(!out.contains('\x1b'), "no colour into a pipe");
    }
    // Wide enough: the names themselves head the columns.
    let wide = run_with(&corpus, &impls[..2], &[], "250");
    assert!(!wide.contains("[1] qemu"), "{wide}");
    let head = wide.lines().next().unwrap();
    assert!(head.contains("qemu") && head.contains("exec:sh"), "{head}");
}

/// Runs `run` under a pseudo-terminal (`script`), returning what it printed.
fn on_a_tty(corpus: &Path, implementation: &str, no_color: Option<&str>) -> String {
    let line = format!(
        "{BIN} run --corpus '{}' --impl '{implementation}' --fail-on none --read-only",
        corpus.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).env("COLUMNS", "100");
    match no_color {
        Some(v) => cmd.env("NO_COLOR", v),
        None => cmd.env_remove("NO_COLOR"),
    };
    String::from_utf8_lossy(&cli::run_ok(&mut cmd).stdout).into_owned()
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, impls) = setup(tmp.path());
    let coloured = on_a_tty(&corpus, &impls[1], None);
    assert!(coloured.contains("\x1b[32m"), "pass in green:\n{coloured}");
    assert!(
        coloured.contains("\x1b[33mstrict"),
        "strict in yellow:\n{coloured}"
    );
    let plain = on_a_tty(&corpus, &impls[1], Some("1"));
    assert!(plain.contains("strict"), "{plain}");
    assert!(!plain.contains("\x1b["), "NO_COLOR=1:\n{plain}");
    // An empty NO_COLOR does not count (no-color.org).
    let empty = on_a_tty(&corpus, &impls[1], Some(""));
    assert!(empty.contains("\x1b[32m"), "{empty}");
}

#[test]
fn a_repeated_impl_runs_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, impls) = setup(tmp.path());
    let json = tmp.path().join("r.json");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--corpus"])
        .arg(&corpus)
        .args(["--fail-on", "none", "--read-only", "--json"])
        .arg(&json);
    for i in [&impls[1], &impls[1], &impls[2], &impls[1]] {
        cmd.arg("--impl").arg(i);
    }
    let out = cli::run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("named more than once").count(),
        2,
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["implementations"].as_array().unwrap().len(), 2);
    let cases = r["cases"].as_array().unwrap();
    for c in cases {
        assert_eq!(c["results"].as_array().unwrap().len(), 2, "{}", c["id"]);
    }
    let total: u64 = r["totals"][&cli::implementation_key(&r, &impls[1])]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, cases.len(), "totals count each case once");
}
