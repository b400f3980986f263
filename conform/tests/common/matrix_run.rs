//! One run of the shared corpus under several implementations, as the
//! pinned-matrix and determinism tests make it: the implementations named
//! as `run --impl` names them (each must be installed: `scripts/setup.sh`),
//! 2 workers, the write check on, the corpus untouched.
#![allow(dead_code)]

use std::path::Path;

/// Every implementation of the wider matrix, as `run --impl` names them;
/// `scripts/setup.sh` installs each.
pub const IMPLEMENTATIONS: [&str; 9] = [
    "qemu",
    "qemu@7.2",
    "qcow",
    "libqcow",
    "libqcow@20260703",
    "imago",
    "qcow2-rs",
    "qcow2",
    "dissect@3.21",
];

/// The report of `run --impl SPEC... --corpus corpus --jobs 2`.
pub fn run_shared_corpus(specs: &[&str]) -> conform::runner::report::RunReport {
    // The probe process is the binary under test (a test's own executable
    // cannot run `adapter-probe`).
    std::env::set_var("QCOW2_CONFORM_BIN", env!("CARGO_BIN_EXE_qcow2-conform"));
    let adapters: Vec<_> = specs
        .iter()
        .map(|spec| {
            conform::runner::adapter_from_spec(spec)
                .unwrap_or_else(|e| panic!("{spec} is installed by scripts/setup.sh: {e:#}"))
        })
        .collect();
    let opts = conform::runner::RunOptions {
        limits: conform::runner::Limits::default(),
        jobs: 2,
        writes: true,
        progress: false,
        scheduling: Default::default(),
    };
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let start = std::time::Instant::now();
    let report = conform::runner::run_corpus(&corpus, &adapters, &opts).unwrap();
    eprintln!(
        "{} cases x {} implementations in {:.1?}",
        report.cases.len(),
        specs.len(),
        start.elapsed()
    );
    assert!(report.corpus_unchanged, "{:?}", report.corpus_changes);
    report
}
