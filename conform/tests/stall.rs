//! Stalls (`runner::process::stall`): a program that spins without a
//! read, a write or a wait is ended as a `hang` after the run's stall
//! time of processor time, long before its limit, with nothing left
//! behind; a program that keeps reading and writing, or that sleeps, is
//! never a stall and runs to its limit as before. That the matrix's real
//! hangs give the same outcomes with and without stalls is checked in
//! `step_aside.rs`.

use conform::runner::{self, OutcomeKind, RunOptions, Scheduling};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_qcow2-conform");

/// A corpus of `n` valid images in `dir`.
fn corpus(dir: &Path, n: u32) -> PathBuf {
    let corpus = dir.join("corpus");
    let out = Command::new(BIN)
        .args(["generate", "--valid", "--seed", "3", "--count"])
        .arg(n.to_string())
        .arg("--out")
        .arg(&corpus)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    corpus
}

/// An exec adapter whose `observe` runs `body` in `sh`.
fn adapter(dir: &Path, name: &str, body: &str) -> (Box<dyn runner::Adapter>, String) {
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\ncapabilities) echo '{{\"protocol\":1,\"capabilities\":[\"observe\"]}}';;\n\
             observe) {body};;\nesac\n"
        ),
    )
    .unwrap();
    let spec = format!("exec:sh {}", script.display());
    (
        runner::adapter_from_spec(&spec).unwrap(),
        script.display().to_string(),
    )
}

fn run(
    corpus: &Path,
    a: Box<dyn runner::Adapter>,
    limit: Duration,
    stall: Option<Duration>,
) -> runner::report::RunReport {
    let o = RunOptions {
        limits: runner::Limits {
            timeout: limit,
            memory_bytes: None,
        },
        jobs: 2,
        writes: false,
        progress: false,
        scheduling: Scheduling {
            stall,
            ..Scheduling::default()
        },
    };
    runner::run_corpus(corpus, &[a], &o).unwrap()
}

/// Processes whose command line holds `needle`.
fn running(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(needle).then_some(c)
        })
        .collect()
}

#[test]
fn a_spinning_program_is_a_hang_after_the_stall_time_not_at_its_limit() {
    let d = tempfile::tempdir().unwrap();
    let corpus = corpus(d.path(), 4);
    let (spin, needle) = adapter(d.path(), "spin", "while :; do :; done");
    let report = run(
        &corpus,
        spin,
        Duration::from_secs(60),
        Some(Duration::from_millis(700)),
    );
    for case in &report.cases {
        let r = &case.results[0];
        assert_eq!(
            r.outcome.kind,
            OutcomeKind::Hang,
            "{}: {:?}",
            case.id,
            r.outcome
        );
        let spun = r.observation.stalled_ms.expect("ended as a stall");
        assert!(spun >= 700, "{}: spun only {spun} ms", case.id);
        assert!(
            r.observation.duration_ms < 20_000,
            "{}: a stall of 0.7 s ended after {} ms",
            case.id,
            r.observation.duration_ms
        );
        assert!(
            r.outcome.detail[0].contains("without a read, a write or a wait"),
            "{:?}",
            r.outcome.detail
        );
    }
    assert_eq!(running(&needle), Vec::<String>::new(), "left running");
}

#[test]
fn a_program_that_reads_and_writes_or_sleeps_runs_to_its_limit() {
    let d = tempfile::tempdir().unwrap();
    let corpus = corpus(d.path(), 2);
    for (name, body) in [
        // Busy, but every loop reads and writes.
        (
            "busy",
            "while :; do head -c 65536 /dev/zero | cksum >/dev/null; done",
        ),
        // Spends no processor time at all.
        ("sleep", "sleep 100"),
    ] {
        let (a, needle) = adapter(d.path(), name, body);
        let report = run(
            &corpus,
            a,
            Duration::from_secs(3),
            Some(Duration::from_millis(300)),
        );
        for case in &report.cases {
            let r = &case.results[0];
            assert_eq!(
                r.outcome.kind,
                OutcomeKind::Hang,
                "{name} {}: {:?}",
                case.id,
                r.outcome
            );
            assert_eq!(
                r.observation.stalled_ms, None,
                "{name} {}: called a stall",
                case.id
            );
            assert!(
                r.observation.duration_ms >= 3000,
                "{name} {}: ended after {} ms, before its 3 s limit",
                case.id,
                r.observation.duration_ms
            );
        }
        assert_eq!(
            running(&needle),
            Vec::<String>::new(),
            "{name}: left running"
        );
    }
}

#[test]
fn run_stall_zero_turns_stalls_off_and_a_bad_value_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let corpus = corpus(d.path(), 1);
    let script = d.path().join("spin.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\ncapabilities) echo '{\"protocol\":1,\"capabilities\":[\"observe\"]}';;\n\
         observe) while :; do :; done;;\nesac\n",
    )
    .unwrap();
    let json = d.path().join("r.json");
    let impl_arg = format!("exec:sh {}", script.display());
    let go = |stall: &str| {
        Command::new(BIN)
            .args(["run", "--impl", &impl_arg, "--corpus"])
            .arg(&corpus)
            .args(["--timeout", "3", "--fail-on", "none"])
            .arg(format!("--stall={stall}"))
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap()
    };
    let out = go("0");
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let obs = &report["cases"][0]["results"][0]["observation"];
    assert_eq!(obs["timed_out"], true, "{obs}");
    assert!(
        obs.get("stalled_ms").is_none(),
        "--stall 0 called a stall: {obs}"
    );
    assert!(obs["duration_ms"].as_u64().unwrap() >= 3000, "{obs}");
    let out = go("-1");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--stall"),
        "{out:?}"
    );
}
