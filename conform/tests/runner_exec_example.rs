//! `corpus/examples/qemu-img-adapter.py`, an exec-protocol adapter wrapping
//! qemu-img, qemu-nbd and qemu-io, reaches the same outcome as the built-in
//! `--impl qemu` adapter on every case of a generated corpus (valid images
//! and one-rule mutants), with the write check on; and the bitmaps it
//! reports (names, flags, usability, contents) equal QEMU's.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/examples/qemu-img-adapter.py")
}

#[test]
fn exec_example_adapter_agrees_with_the_qemu_adapter() {
    let started = std::time::Instant::now();
    let (tmp, corpus) = cli::generated_corpus(
        "corpus",
        &["--seed", "17", "--count", "14", "--profile", "qemu"],
    );
    let exec = format!("exec:python3 {}", example().display());
    let json = tmp.path().join("report.json");
    cli::run_ok(
        Command::new(BIN)
            .args(["run", "--impl", "qemu", "--impl", &exec, "--corpus"])
            .arg(&corpus)
            .arg("--json")
            .arg(&json)
            .args(["--jobs", "2", "--fail-on", "none"]),
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 28);
    let mut bitmaps_compared = 0;
    let mut writes = 0;
    for c in cases {
        let rs = c["results"].as_array().unwrap();
        assert_eq!(rs.len(), 2);
        let (q, e) = (&rs[0], &rs[1]);
        assert_eq!(q["implementation"], "qemu");
        assert_eq!(e["implementation"], "qemu-img", "keyed by its own name");
        assert_eq!(
            q["outcome"]["kind"], e["outcome"]["kind"],
            "{}: qemu {} vs example {}",
            c["id"], q["outcome"], e["outcome"]
        );
        let (qo, eo) = (&q["observation"], &e["observation"]);
        assert_eq!(qo["opened"], eo["opened"], "{}", c["id"]);
        let strip = |o: &Value| -> Vec<Value> {
            o["bitmaps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    serde_json::json!([
                        b["name"],
                        b["granularity_bits"],
                        b["flags"],
                        b["usable"],
                        b["content_sha256"],
                        b["set_bits"],
                        b["dirty_ranges"]
                    ])
                })
                .collect()
        };
        assert_eq!(strip(qo), strip(eo), "{}", c["id"]);
        bitmaps_compared += qo["bitmaps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["content_sha256"].is_string())
            .count();
        if eo["write"].is_object() {
            writes += 1;
            assert_eq!(qo["write"]["problems"], eo["write"]["problems"]);
        }
    }
    assert!(
        bitmaps_compared >= 5,
        "only {bitmaps_compared} bitmap contents compared"
    );
    assert!(
        writes >= 3,
        "only {writes} write checks through the example"
    );
    cli::assert_within(started, 120);
}

/// `corpus/examples/qcow2-read-adapter.py`, the kit's example `read` adapter (a
/// small stdlib-only qcow2 reader that does not know bitmaps), over the
/// shared corpus: its guest data agrees with the model on every image it
/// opens (no `mismatch`, no `crash`, no `hang`), it refuses only zstd
/// (`strict`, the one thing it does not read), and its encrypted-image
/// refusals, answered `"cannot_decrypt": true`, meet
/// `crypt.refuse-without-key`.
#[test]
fn the_example_read_adapter_reads_what_the_model_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let read =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/examples/qcow2-read-adapter.py");
    let json = tmp.path().join("report.json");
    cli::run_ok(
        Command::new(BIN)
            .args(["run", "--impl"])
            .arg(format!("exec:python3 {}", read.display()))
            .arg("--corpus")
            .arg(cli::workspace().join("corpus"))
            .arg("--json")
            .arg(&json)
            .args(["--jobs", "2", "--fail-on", "none"]),
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let mut not_pass = Vec::new();
    let mut compared = 0;
    let mut luks = 0;
    for c in report["cases"].as_array().unwrap() {
        let r = &c["results"][0];
        assert_eq!(r["implementation"], "tiny-qcow2-reader");
        let kind = r["outcome"]["kind"].as_str().unwrap();
        if !matches!(kind, "pass" | "recorded") {
            not_pass.push(format!("{} {kind}", c["id"].as_str().unwrap()));
        }
        compared += r["observation"]["guest"]["ranges_compared"]
            .as_u64()
            .unwrap_or(0);
        if r["observation"]["cannot_decrypt"] == true {
            luks += 1;
            assert_eq!(kind, "pass", "{}", c["id"]);
            assert_eq!(
                r["outcome"]["cause"]["obligation"], "crypt.refuse-without-key",
                "{}",
                c["id"]
            );
        }
    }
    assert_eq!(not_pass, ["qemu/compressed-zstd strict"]);
    assert!(compared >= 1000, "only {compared} ranges compared");
    assert!(
        luks >= 2,
        "the encrypted cases answered cannot_decrypt: {luks}"
    );
}
