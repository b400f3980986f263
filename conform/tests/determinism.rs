//! Two runs over the shared corpus give the same outcome for every
//! implementation and case: the machine's QEMU and the crate adapters
//! (imago, qcow2-rs, qcow2, qcow), each run with the write check and 2
//! workers, compared case by case. An implementation whose outcome depended
//! on timing or on the run's order would show here (qcow2-rs's outcomes
//! once split between `crash` and `hang` by how qcow2-conform was built:
//! the workspace now builds the implementations under test with overflow
//! checks in every profile, see `Cargo.toml`).

use std::collections::BTreeMap;

#[path = "common/matrix_run.rs"]
mod matrix_run;

const IMPLEMENTATIONS: [&str; 5] = ["qemu", "imago", "qcow2-rs", "qcow2", "qcow"];

/// (implementation, case) -> outcome of one run over the corpus.
fn run_once() -> BTreeMap<(String, String), String> {
    let report = matrix_run::run_shared_corpus(&IMPLEMENTATIONS);
    report
        .cases
        .iter()
        .flat_map(|c| {
            c.results.iter().map(|r| {
                (
                    (r.implementation.clone(), c.id.clone()),
                    r.outcome.kind.as_str().to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn two_runs_over_the_corpus_agree_case_by_case() {
    let first = run_once();
    let second = run_once();
    assert_eq!(first.len(), second.len());
    let cases = first.len() / IMPLEMENTATIONS.len();
    assert!(cases >= 100, "only {cases} cases per implementation");
    let differ: Vec<String> = first
        .iter()
        .filter(|(k, v)| second.get(*k) != Some(*v))
        .map(|((i, c), v)| {
            format!(
                "{c} [{i}]: {v}, then {:?}",
                second.get(&(i.clone(), c.clone()))
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} outcomes differ between two runs:\n{}",
        differ.len(),
        differ.join("\n")
    );
    // Something real was compared: every outcome kind the crates and QEMU
    // show today is there, not a column of errors.
    let kinds: std::collections::BTreeSet<&str> = first.values().map(String::as_str).collect();
    for k in ["pass", "strict", "crash", "corrupting"] {
        assert!(kinds.contains(k), "no {k} outcome at all: {kinds:?}");
    }
    assert!(!kinds.contains("error"), "set-up errors: {kinds:?}");
}
