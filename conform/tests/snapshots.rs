//! insta snapshots, kept in `snapshots/` at the workspace root: `check
//! --json` and `dump --json` of every corpus case, and the pinned matrix
//! (case to outcome) of every implementation, one snapshot per
//! implementation and version (`matrix@IMPL@VERSION`, read by
//! [`conform::matrix`] for `docs/findings.md`). A change of the model, the
//! corpus or an implementation shows as a snapshot diff to review
//! (`cargo insta review`); CI runs `cargo insta test --check`. A machine
//! with another version of an implementation says so and does not fail.

use generator::Manifest;

#[path = "common/matrix_run.rs"]
mod matrix_run;
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

use matrix_run::IMPLEMENTATIONS;

/// `run --impl ... (all nine) --corpus corpus` with 2 workers: every
/// column is filled (every case has an outcome from every implementation,
/// none an `error`: the runner set every case up), the corpus is
/// untouched, and each implementation's column matches its pinned matrix
/// for the version installed (`snapshots/matrix@IMPL@VERSION.snap`). A
/// version with no pinned matrix is reported, not failed: `cargo insta
/// test --accept` pins it.
#[test]
fn pinned_matrix_of_every_implementation() {
    let report = matrix_run::run_shared_corpus(&IMPLEMENTATIONS);
    assert_eq!(report.cases.len(), manifest().cases.len());
    pin_filled_columns(&report, &IMPLEMENTATIONS);
}

/// Each column of `report` (one per spec) against its pinned matrix for
/// the version installed (`snapshots/matrix@IMPL@VERSION.snap`); a version
/// with no pinned matrix is reported, not failed.
fn pin_columns(report: &conform::runner::report::RunReport, specs: &[&str]) {
    let mut missing = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let version = conform::runner::adapters::versions::version_of(spec).unwrap();
        let pinned = conform::matrix::PinnedMatrix {
            implementation: spec.to_string(),
            version: version.clone(),
            outcomes: report
                .cases
                .iter()
                .map(|c| (c.id.clone(), c.results[i].outcome.kind.as_str().to_string()))
                .collect(),
            broken: report
                .cases
                .iter()
                .filter(|c| c.results[i].outcome.kind.as_str() != "pass")
                .filter(|c| !c.results[i].outcome.cause.obligation.is_empty())
                .map(|c| (c.id.clone(), c.results[i].outcome.cause.obligation.clone()))
                .collect(),
        };
        let name = conform::matrix::PinnedMatrix::snapshot_name(spec, &version);
        let known = snapshots_dir().join(format!("{name}.snap")).exists();
        let check = || settings().bind(|| insta::assert_json_snapshot!(name.clone(), pinned));
        if known {
            check();
        } else {
            // Another version than the pinned ones: say so, keep the new
            // matrix for review, do not fail.
            let _ = std::panic::catch_unwind(check);
            missing.push(format!("{spec} {version}"));
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "NOTE: no pinned matrix for {} on this machine (not a failure); to pin this \
             version's: `cargo insta test --accept -p conform --test snapshots`, then \
             `cargo run -p conform --bin findings-tables`",
            missing.join(", ")
        );
    }
}

/// QEMU across versions, oldest first: 5.2 and 10.2 built from Debian's
/// source by `scripts/build-qemu.sh`, 7.2 unpacked by `scripts/setup.sh`,
/// and the machine's own (10.0).
const QEMU_VERSIONS: [&str; 4] = ["qemu@5.2", "qemu@7.2", "qemu", "qemu@10.2"];

/// The same QEMUs live, through their qemu-storage-daemon (7.2's comes
/// from bookworm's qemu-system-common, unpacked by setup). The machine's
/// own live column is pinned by `qemu_live_matrix.rs`.
const QEMU_LIVE_VERSIONS: [&str; 3] = ["qemu-live@5.2", "qemu-live@7.2", "qemu-live@10.2"];

/// The QEMUs that `scripts/build-qemu.sh` builds (not part of setup).
const SOURCE_BUILT: [&str; 4] = ["qemu@5.2", "qemu@10.2", "qemu-live@5.2", "qemu-live@10.2"];

/// `run --impl qemu@5.2 --impl qemu@7.2 --impl qemu --impl qemu@10.2
/// --corpus corpus`: every column filled (no `error`), and each column
/// matches its pinned matrix. A QEMU that `scripts/build-qemu.sh` has not
/// built is left out with a message naming the command that builds it
/// (the only skip); 7.2 and the machine's QEMU must be there.
#[test]
fn pinned_matrix_of_every_qemu_version() {
    pin_every_version(&QEMU_VERSIONS);
}

/// The live columns of the same versions (`run --impl qemu-live@5.2
/// --impl qemu-live@7.2 --impl qemu-live@10.2`), skipped the same way.
#[test]
fn pinned_live_matrix_of_every_qemu_version() {
    pin_every_version(&QEMU_LIVE_VERSIONS);
}

/// Runs the `versions` that are present over the shared corpus and pins
/// each column; a source-built one that is absent is named, not run.
fn pin_every_version(versions: &[&'static str]) {
    let mut specs = Vec::new();
    for &spec in versions {
        let built = conform::runner::adapter_from_spec(spec).is_ok();
        if SOURCE_BUILT.contains(&spec) && !built {
            let version = spec.rsplit('@').next().unwrap_or(spec);
            eprintln!(
                "SKIP {spec}: not built on this machine; `scripts/build-qemu.sh {version}` builds it"
            );
            continue;
        }
        specs.push(spec);
    }
    let report = matrix_run::run_shared_corpus(&specs);
    pin_filled_columns(&report, &specs);
}

/// Every case has a result from each of `specs`, in order, none an
/// `error` (the runner set every case up); then each column against its
/// pinned matrix ([`pin_columns`]).
fn pin_filled_columns(report: &conform::runner::report::RunReport, specs: &[&str]) {
    let mut unfilled = Vec::new();
    for case in &report.cases {
        let names: Vec<&str> = case
            .results
            .iter()
            .map(|r| r.implementation.as_str())
            .collect();
        assert_eq!(names, specs, "{}", case.id);
        unfilled.extend(
            case.results
                .iter()
                .filter(|r| r.outcome.kind.as_str() == "error")
                .map(|r| {
                    format!(
                        "{} [{}]: {}",
                        case.id,
                        r.implementation,
                        r.outcome.detail.join("; ")
                    )
                }),
        );
    }
    assert!(
        unfilled.is_empty(),
        "cases not set up:\n{}",
        unfilled.join("\n")
    );
    pin_columns(report, specs);
}

fn snapshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshots")
}
