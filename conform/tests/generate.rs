//! `qcow2-conform generate`: the same arguments give byte-identical trees,
//! and every generated case is judged by the model exactly as its manifest
//! entry expects.

use generator::Manifest;
use std::path::Path;
use std::process::Command;

fn generate(out: &Path, extra: &[&str]) {
    let st = Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args(["generate", "--seed", "11", "--count", "24", "--out"])
        .arg(out)
        .args(extra)
        .status()
        .expect("run qcow2-conform");
    assert!(st.success());
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push((
            e.strip_prefix(dir).unwrap().display().to_string(),
            std::fs::read(&e).unwrap(),
        ));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

/// Generates twice with the same arguments: the trees must be byte for byte
/// the same. Returns the first.
fn generate_deterministic(extra: &[&str]) -> tempfile::TempDir {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    generate(a.path(), extra);
    generate(b.path(), extra);
    assert_eq!(
        tree(a.path()),
        tree(b.path()),
        "generate {extra:?} is deterministic"
    );
    a
}

/// Every case of the manifest in `dir` is judged by the model as expected:
/// same verdict and extension state, every expected rule reported, for
/// invalid cases exactly the expected error rules, and for valid and
/// unspecified cases the expected bitmaps.
fn assert_model_agrees(dir: &Path, count: usize) {
    let m =
        Manifest::from_json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m.cases.len(), count);
    for case in &m.cases {
        let r = spec_model::check_path(dir.join(&case.file)).unwrap();
        let e = &case.expected;
        let differences: Vec<String> = e.differences(&r).iter().map(|d| format!("{d:#}")).collect();
        assert!(
            differences.is_empty(),
            "{}: {}: {:#?}",
            case.id,
            differences.join("; "),
            r.findings
        );
        if e.verdict == spec_model::Verdict::Invalid {
            let mut want: Vec<&str> = e.rules.iter().map(String::as_str).collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(
                r.rules_with(spec_model::Severity::Error),
                want,
                "{}",
                case.id
            );
        } else {
            assert!(
                e.bitmaps.is_some(),
                "{}: valid and unspecified cases list bitmaps",
                case.id
            );
        }
    }
}

#[test]
fn mutants_and_rule_filters_are_judged_as_their_manifest_says() {
    let a = generate_deterministic(&["--mutants"]);
    assert_model_agrees(a.path(), 24);
    let c = tempfile::tempdir().unwrap();
    generate(c.path(), &["--rule", "bitmaps.dir.name-unique"]);
    assert_model_agrees(c.path(), 24);
    let m = Manifest::from_json(&std::fs::read_to_string(c.path().join("manifest.json")).unwrap())
        .unwrap();
    assert!(m
        .cases
        .iter()
        .all(|k| k.id.starts_with("bitmaps.dir.name-unique/")));
    let d = tempfile::tempdir().unwrap();
    generate(d.path(), &[]);
    assert_model_agrees(d.path(), 48);
}

#[test]
fn an_unknown_rule_is_a_clear_error() {
    let a = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args(["generate", "--rule", "bitmaps.no-such-rule", "--out"])
        .arg(a.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bitmaps.no-such-rule"));
}

#[test]
fn same_arguments_give_identical_trees_and_the_model_agrees() {
    let a = generate_deterministic(&["--valid"]);
    assert_model_agrees(a.path(), 24);
}

#[test]
fn refuses_a_non_empty_directory_without_force() {
    let a = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("keep.txt"), "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args(["generate", "--count", "1", "--valid", "--out"])
        .arg(a.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert!(a.path().join("keep.txt").exists(), "nothing was deleted");
}
