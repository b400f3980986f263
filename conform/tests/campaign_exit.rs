//! `qcow2-conform campaign`'s exit status and summary: 2 when the run saved
//! a new finding, 0 when it saved none (a resumed run that finds nothing
//! new) or with `--fail-on-findings none`; the summary names every kind of
//! disagreement and marks the new ones. The implementation is a real
//! program through the exec protocol that opens everything and lists no
//! bitmaps, so it disagrees with the model on the first images with bitmaps.

use std::path::Path;
use std::process::{Command, Output};

const BLIND: &str = "#!/bin/sh\ncase \"$1\" in\n  capabilities) echo '{\"protocol\": 1, \"capabilities\": [\"observe\"]}' ;;\n  observe) echo '{\"protocol\": 1, \"opened\": true, \"error\": null, \"bitmaps\": []}' ;;\n  *) exit 1 ;;\nesac\n";

fn campaign(prog: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args(["campaign", "--impl"])
        .arg(format!("exec:sh {}", prog.display()))
        .args(["--seed", "1", "--read-only", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn findings(out: &Path) -> usize {
    std::fs::read_dir(out.join("findings")).unwrap().count()
}

#[test]
fn exit_status_2_on_new_findings_with_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = tmp.path().join("blind.sh");
    std::fs::write(&prog, BLIND).unwrap();

    let out = tmp.path().join("a");
    let first = campaign(&prog, &out, &["--max-cases", "4"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(2), "{stderr}");
    let n = findings(&out);
    assert!(n > 0, "{stderr}");
    assert!(
        stderr.contains(&format!("findings: {n} new this run")),
        "{stderr}"
    );
    assert!(stderr.contains("campaign: 4 case(s) this run"), "{stderr}");
    assert_eq!(stderr.matches(" NEW ").count(), n, "{stderr}");
    assert!(stderr.contains("--fail-on-findings none"), "{stderr}");

    // Resumed without new cases: the findings are old, the exit status 0.
    let again = campaign(&prog, &out, &["--max-cases", "0"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("findings: 0 new this run"), "{stderr}");
    assert!(!stderr.contains(" NEW "), "{stderr}");

    // Turned off: findings saved, exit 0.
    let off = tmp.path().join("b");
    let quiet = campaign(
        &prog,
        &off,
        &["--max-cases", "4", "--fail-on-findings", "none"],
    );
    assert_eq!(
        quiet.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert_eq!(findings(&off), n, "same seed, same findings");
}
