//! `qcow2-conform campaign --impl qemu` against the real QEMU: finds
//! disagreements, saves each minimised image with the model's verdict and a
//! reproducer, resumes where it stopped, and honours --shard.

use std::path::Path;
use std::process::Command;

fn campaign(out: &Path, extra: &[&str]) {
    let st = Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args([
            "campaign",
            "--impl",
            "qemu",
            "--seed",
            "1",
            "--duration",
            "5m",
            "--read-only",
            "--out",
        ])
        .arg(out)
        .args(extra)
        .status()
        .unwrap();
    assert!(st.success());
}

fn state(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap()
}

#[test]
fn finds_minimises_saves_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("camp");
    campaign(&out, &["--max-cases", "15"]);
    assert_eq!(state(&out)["cases_run"], 15);
    campaign(&out, &["--max-cases", "15"]);
    let s = state(&out);
    assert_eq!(s["cases_run"], 30, "the second run resumed: {s}");
    assert_eq!(s["next_index"], 30);
    let findings: Vec<_> = std::fs::read_dir(out.join("findings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        !findings.is_empty(),
        "QEMU disagrees on some of the first 30 cases (e.g. extra data): {s}"
    );
    for f in findings {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.join("finding.json")).unwrap())
                .unwrap();
        let key = meta["key"].as_str().unwrap();
        assert!(key.starts_with(meta["outcome"].as_str().unwrap()), "{meta}");
        assert!(
            meta["minimised_nonzero_bytes"].as_u64() <= meta["original_nonzero_bytes"].as_u64()
        );
        // The saved image still gets the verdict recorded with it.
        let r = spec_model::check_path(f.join("image.qcow2")).unwrap();
        assert_eq!(r.verdict.as_str(), meta["expected"]["verdict"], "{key}");
        assert!(meta["reproduce"].as_array().unwrap().len() >= 2);
    }
}

#[test]
fn shards_split_the_case_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shard");
    campaign(&out, &["--max-cases", "4", "--shard", "2/3"]);
    let s = state(&out);
    assert_eq!(s["cases_run"], 4);
    // Cases 1, 4, 7, 10 (0-based) belong to shard 2 of 3.
    assert_eq!(s["next_index"], 11, "{s}");
    let other = Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args([
            "campaign",
            "--impl",
            "qemu",
            "--seed",
            "2",
            "--max-cases",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        other.status.code(),
        Some(1),
        "another seed refuses the same state"
    );
    assert!(String::from_utf8_lossy(&other.stderr).contains("another campaign"));
}
