//! Stalls (`runner::process::stall`): a program that spins without a
//! read, a write or a wait is ended as a `hang` after the run's stall
//! time of processor time, long before its limit, with nothing left
//! behind; a program that keeps reading and writing, or that sleeps, is
//! never a stall and runs to its limit as before. That the matrix's real
//! hangs give the same outcomes with and without stalls is checked in
//! `step_aside.rs`.

#[path = "common/cli.rs"]
mod cli;

use cli::{generated_corpus, output_text, run_report, sh_program, stdout_if_exit};
use conform::runner::{self, OutcomeKind, RunOptions, Scheduling};
use std::path::Path;
use std::time::Duration;

const OBSERVE_ONLY: &str = r#""capabilities":["observe"]"#;

/// The shell program `dir/NAME.sh` whose `observe` runs `body`.
fn program(dir: &Path, name: &str, body: &str) -> String {
    sh_program(
        dir,
        &format!("{name}.sh"),
        OBSERVE_ONLY,
        &format!("observe) {body};;"),
    )
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

/// Runs the exec program `spec` over `corpus` (2 workers, `limit`,
/// `stall`); each case must be a `hang` that was (`Some`) or was not
/// (`None`) a stall, ended within `ended` (milliseconds), with nothing of
/// the program left running.
fn expect_hangs(
    corpus: &Path,
    spec: &str,
    limit: Duration,
    stall: Option<Duration>,
    stalled: Option<u64>,
    ended: std::ops::Range<u64>,
) {
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
    let a = runner::adapter_from_spec(spec).unwrap();
    let report = runner::run_corpus(corpus, &[a], &o).unwrap();
    for case in &report.cases {
        let r = &case.results[0];
        let what = format!("{spec} {}: {:?}", case.id, r.outcome);
        assert_eq!(r.outcome.kind, OutcomeKind::Hang, "{what}");
        assert!(r.observation.timed_out, "{what}");
        match (stalled, r.observation.stalled_ms) {
            (Some(at_least), Some(spun)) => {
                assert!(spun >= at_least, "{what}: spun only {spun} ms");
                assert!(
                    r.outcome.detail[0].contains("without a read, a write or a wait"),
                    "{what}"
                );
            }
            (None, None) => {}
            (want, got) => panic!("{what}: stalled {got:?}, wanted {want:?}"),
        }
        let ms = r.observation.duration_ms;
        assert!(
            ended.contains(&ms),
            "{what}: ended after {ms} ms, not in {ended:?}"
        );
    }
    let script = spec.rsplit(' ').next().unwrap();
    assert_eq!(
        running(script),
        Vec::<String>::new(),
        "{spec}: left running"
    );
}

#[test]
fn a_spinning_program_is_a_hang_after_the_stall_time_not_at_its_limit() {
    let (d, corpus) = generated_corpus("corpus", &["--valid", "--seed", "3", "--count", "4"]);
    let spin = program(d.path(), "spin", "while :; do :; done");
    let stall = Duration::from_millis(700);
    expect_hangs(
        &corpus,
        &spin,
        Duration::from_secs(60),
        Some(stall),
        Some(700),
        700..20_000,
    );
}

#[test]
fn a_program_that_reads_and_writes_or_sleeps_runs_to_its_limit() {
    let (d, corpus) = generated_corpus("corpus", &["--valid", "--seed", "3", "--count", "2"]);
    for (name, body) in [
        // Busy, but every loop reads and writes.
        (
            "busy",
            "while :; do head -c 65536 /dev/zero | cksum >/dev/null; done",
        ),
        // Spends no processor time at all.
        ("sleep", "sleep 100"),
    ] {
        let spec = program(d.path(), name, body);
        let stall = Some(Duration::from_millis(300));
        expect_hangs(
            &corpus,
            &spec,
            Duration::from_secs(3),
            stall,
            None,
            3000..10_000,
        );
    }
}

#[test]
fn run_stall_zero_turns_stalls_off_and_a_bad_value_is_refused() {
    let (d, corpus) = generated_corpus("corpus", &["--valid", "--seed", "3", "--count", "1"]);
    let spin = program(d.path(), "spin", "while :; do :; done");
    let json = d.path().join("r.json");
    let args = [
        "--impl",
        &spin,
        "--timeout",
        "3",
        "--fail-on",
        "none",
        "--stall=0",
    ];
    let report = run_report(&corpus, &json, &args);
    let obs = &report["cases"][0]["results"][0]["observation"];
    assert_eq!(obs["timed_out"], true, "{obs}");
    assert!(
        obs.get("stalled_ms").is_none(),
        "--stall 0 called a stall: {obs}"
    );
    assert!(obs["duration_ms"].as_u64().unwrap() >= 3000, "{obs}");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args(["run", "--impl", &spin, "--corpus"])
        .arg(&corpus)
        .arg("--stall=-1")
        .output()
        .unwrap();
    stdout_if_exit(&refused, 1);
    assert!(output_text(&refused).contains("--stall"), "{refused:?}");
}
