//! `campaign --replay PATH` against the real `qemu-storage-daemon`: each
//! step printed with QEMU's answer and the model's expectation, as text
//! and `--json`; a saved finding replayed through its `repro.sh`, which
//! runs the binary (no socat); and a daemon that never listens retried
//! once, then counted as an `error`, never saved as a finding.

use conform::campaign::sequences::{findings, SeqFinding, SeqResult};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

fn regression() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../fuzz_targets/regressions/qemu-live/seq-qemustoragedaemon-died-killed-by-signal-sigsegv-f90ef56f75.json",
    )
}

fn replay(path: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["campaign", "--replay"])
        .arg(path)
        .args(extra)
        .output()
        .unwrap()
}

const SEQUENCE: &str = r#"{"size": 1048576, "steps": [
 {"step": "op", "op": {"op": "add", "name": "a", "gbits": 16, "persistent": true, "disabled": false}},
 {"step": "op", "op": {"op": "write", "offset": 0, "len": 100}},
 {"step": "op", "op": {"op": "add", "name": "a", "gbits": 16, "persistent": true, "disabled": false}},
 {"step": "restart"},
 {"step": "crash"}
]}"#;

#[test]
fn replay_shows_each_step_against_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("sequence.json");
    std::fs::write(&seq, SEQUENCE).unwrap();
    let o = replay(&seq, &[]);
    let text = cli::stdout_if_exit(&o, 0);
    assert!(text.contains("Bitmap already exists"), "{text}");
    assert!(text.contains("must be refused"), "{text}");
    assert!(text.contains("every step agrees with the model"), "{text}");

    // The same through the directory, as JSON: six steps (five and the
    // final shutdown), all agreeing.
    let o = replay(tmp.path(), &["--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 6, "{v:#}");
    assert!(steps.iter().all(|s| s["agree"] == true), "{v:#}");
    assert_eq!(
        steps[2]["model"].as_str().unwrap().split(' ').next(),
        Some("must")
    );
    assert_eq!(v["failed"], false);
}

#[test]
fn a_finding_replays_through_its_repro_sh() {
    let tmp = tempfile::tempdir().unwrap();
    let f: SeqFinding =
        serde_json::from_str(&std::fs::read_to_string(regression()).unwrap()).unwrap();
    findings::save(tmp.path(), &f, &SeqResult::default()).unwrap();
    let dir = tmp.path().join(&f.key);
    let script = std::fs::read_to_string(dir.join("repro.sh")).unwrap();
    assert!(!script.contains("socat"), "{script}");
    assert!(script.contains("campaign --replay ."), "{script}");
    // Run from elsewhere: the script finds its own directory.
    let o = Command::new("sh")
        .arg(dir.join("repro.sh"))
        .current_dir(tmp.path())
        .env("QCOW2_CONFORM", BIN)
        .output()
        .unwrap();
    let text = cli::stdout_if_exit(&o, 2);
    assert!(text.contains("DISAGREE"), "{text}");
    assert!(text.contains("SIGSEGV"), "{text}");
    assert!(
        text.contains(&format!("reproduced: fails as saved ({})", f.key)),
        "{text}"
    );
    // --json passes through.
    let o = Command::new(dir.join("repro.sh"))
        .arg("--json")
        .env("QCOW2_CONFORM", BIN)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reproduced"], true, "{v:#}");
}

/// A "daemon" that never opens its monitor.
fn sleeper(dir: &Path) -> PathBuf {
    let p = dir.join("sleeping-qsd");
    std::fs::write(&p, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn outcomes(out: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap();
    s["outcomes"].clone()
}

fn saved(out: &Path, what: &str) -> usize {
    std::fs::read_dir(out.join(what)).map_or(0, |d| d.count())
}

#[test]
fn a_daemon_that_never_listens_is_an_error_not_a_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let qsd = sleeper(tmp.path());
    for mode in ["--sequences", "--backup-chains"] {
        let out = tmp.path().join(mode.trim_start_matches('-'));
        let start = std::time::Instant::now();
        let o = Command::new(BIN)
            .args(["campaign", "--impl", "qemu-live", mode, "--max-cases", "2"])
            .args(["--timeout", "1", "--seed", "1", "--out"])
            .arg(&out)
            .env("QSD_PROG", &qsd)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{mode}: {err}");
        let v = outcomes(&out);
        assert_eq!(v["error"], 2, "{mode}: {v:#} {err}");
        assert!(v.get("finding").is_none(), "{mode}: {v:#}");
        assert_eq!(saved(&out, "findings"), 0, "{mode}");
        assert_eq!(saved(&out, "not-reproduced"), 0, "{mode}");
        // Each sequence waited for the daemon twice (1 s each), plus
        // `--version` (1 s).
        assert!(start.elapsed().as_secs_f64() >= 4.0, "{mode}: no retry?");
    }
}

#[test]
fn a_backup_chain_replays_point_by_point() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = r#"{"size": 2097152, "gbits": 16, "persistent": true, "mode": "pull",
        "before": [{"op": "write", "offset": 0, "len": 70000}],
        "rounds": [{"ops": [{"op": "write", "offset": 1048576, "len": 5}], "restart": true},
                   {"ops": [{"op": "write-zeroes", "offset": 0, "len": 4096}]}]}"#;
    std::fs::write(tmp.path().join("chain.json"), chain).unwrap();
    let o = replay(tmp.path(), &["--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "backup-chain");
    let steps = v["steps"].as_array().unwrap();
    // The full backup and two incrementals, each agreeing.
    assert_eq!(steps.len(), 3, "{v:#}");
    assert!(steps.iter().all(|s| s["agree"] == true), "{v:#}");
    assert!(
        steps[1]["model"].as_str().unwrap().contains("65536"),
        "{v:#}"
    );
}
