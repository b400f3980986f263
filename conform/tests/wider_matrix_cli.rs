//! The command line of the wider matrix, through the binary: `run --impl
//! qemu --impl qemu@7.2 --impl qcow --impl libqcow --impl libqcow@20260703
//! --impl imago --impl qcow2-rs --impl qcow2 --impl dissect@3.21` over a
//! small generated corpus fills every column (the full corpus is run by the
//! pinned-matrix test in `snapshots.rs`). Every implementation comes from
//! `scripts/setup.sh`; a missing one fails the run, and so this test.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/matrix_run.rs"]
mod matrix_run;
use matrix_run::IMPLEMENTATIONS;

#[test]
fn every_column_of_the_wider_matrix_is_filled() {
    let (d, corpus) =
        cli::generated_corpus("c", &["--seed", "11", "--count", "3", "--profile", "qemu"]);
    let mut args = Vec::new();
    for i in IMPLEMENTATIONS {
        args.extend(["--impl", i]);
    }
    args.extend(["--jobs", "2", "--fail-on", "none"]);
    let report = cli::run_report(&corpus, &d.path().join("r.json"), &args);
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6, "3 valid images and 3 mutants");
    for c in cases {
        let got = cli::each_str(&c["results"], "implementation");
        assert_eq!(got, IMPLEMENTATIONS, "{}", c["id"]);
        for r in c["results"].as_array().unwrap() {
            let kind = r["outcome"]["kind"].as_str().unwrap();
            assert_ne!(
                kind, "error",
                "{} [{}]: {}",
                c["id"], r["implementation"], r["outcome"]
            );
        }
    }
}
