//! The CI recipe end to end, with the real QEMU: `scripts/ci.sh` over the
//! bundled corpus held to the checked-in `expectations/qemu.toml` passes;
//! with one expectation altered it fails naming that case (and JUnit has
//! exactly that one failure); `report diff` of the two reports shows no
//! change, and of a report with one outcome edited shows that change and
//! exits 1.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

#[path = "common/cli.rs"]
mod cli;
#[path = "common/junit.rs"]
mod junit;
use cli::{output_text as text, workspace as root, BIN};

fn ci_sh(expect: &Path, out: &Path) -> Output {
    Command::new("bash")
        .arg(root().join("scripts/ci.sh"))
        .args(["--impl", "qemu", "--bin", BIN, "--expect"])
        .arg(expect)
        .arg("--out")
        .arg(out)
        // One worker: the run takes about as long (its slowest case sets
        // the pace) and leaves the other tests' time limits their cores.
        .args(["--", "--jobs", "1"])
        .current_dir(root())
        .output()
        .expect("run scripts/ci.sh")
}

fn diff(old: &Path, new: &Path) -> Output {
    Command::new(BIN)
        .args(["report", "diff"])
        .arg(old)
        .arg(new)
        .output()
        .unwrap()
}

#[test]
fn ci_script_holds_qemu_to_the_checked_in_expectations() {
    let tmp = tempfile::tempdir().unwrap();
    let expect = root().join("expectations/qemu.toml");
    let a = tmp.path().join("a");
    let o = ci_sh(&expect, &a);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for f in ["report.json", "junit.xml", "report.html"] {
        assert!(a.join(f).is_file(), "{f} missing");
    }

    // One expectation altered: a known `lenient` case now expected to pass.
    let text_expect = std::fs::read_to_string(&expect).unwrap();
    let line = text_expect
        .lines()
        .find(|l| l.ends_with("= \"lenient\""))
        .expect("QEMU has a known lenient case");
    let case = line.split('"').nth(1).unwrap().to_owned();
    let altered = tmp.path().join("altered.toml");
    std::fs::write(
        &altered,
        text_expect.replace(line, &line.replace("\"lenient\"", "\"pass\"")),
    )
    .unwrap();
    let b = tmp.path().join("b");
    let o = ci_sh(&altered, &b);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "regressed qemu {case}: expected pass, now lenient"
        )),
        "{out}"
    );
    // JUnit: exactly that one failure.
    let j = junit::read(&b.join("junit.xml"));
    assert_eq!(j["failures"], 1, "{j}");
    assert_eq!(j["errors"], 0, "{j}");
    let failing: Vec<&str> = j["suites"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| junit::tag(c) == "failure")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing, [case.as_str()]);

    // Two reports of the same corpus: no change (timings and temporary
    // paths differ).
    let (ra, rb) = (a.join("report.json"), b.join("report.json"));
    assert_ne!(
        std::fs::read(&ra).unwrap(),
        std::fs::read(&rb).unwrap(),
        "the reports differ at least in timings"
    );
    let o = diff(&ra, &rb);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no change"), "{}", text(&o));

    // One outcome edited: that change, exit 1.
    let mut report: Value = serde_json::from_slice(&std::fs::read(&rb).unwrap()).unwrap();
    let edited = report["cases"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["results"][0]["outcome"]["kind"] == "pass")
        .unwrap();
    let edited_id = edited["id"].as_str().unwrap().to_owned();
    edited["results"][0]["outcome"]["kind"] = "strict".into();
    let rc = tmp.path().join("edited.json");
    std::fs::write(&rc, serde_json::to_vec(&report).unwrap()).unwrap();
    let o = diff(&ra, &rc);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        shown.contains(&format!("regressed qemu {edited_id}: pass -> strict")),
        "{shown}"
    );
    assert_eq!(
        shown.lines().filter(|l| l.contains(" -> ")).count(),
        1,
        "{shown}"
    );
    // --json: the same change, machine-readable.
    let o = Command::new(BIN)
        .args(["report", "diff", "--json"])
        .arg(&ra)
        .arg(&rc)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["regressions"], 1);
    assert_eq!(d["changes"][0]["case"], edited_id.as_str());
    assert_eq!(d["changes"][0]["old"], "pass");
    assert_eq!(d["changes"][0]["new"], "strict");
}
