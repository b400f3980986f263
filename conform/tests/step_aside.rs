//! Programs that wait aside (`runner::process::slots`) and the order of
//! a run's work (`runner::schedule`) change when things run, never an
//! outcome: a program that spins until its time limit is still a `hang`
//! at exactly that limit, contained and cleaned up as before, while the
//! run's other work goes on beside it at a lower priority; and the same
//! implementations over the shared corpus, the hangs of `dissect@3.21`
//! and `libqcow` among them, give the same outcome for every (case,
//! implementation) pair with stepping aside, the longest-first order and
//! stalls (`runner::process::stall`) as without.

use conform::runner::{self, OutcomeKind, RunOptions, Scheduling};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_qcow2-conform");

fn opts(timeout: Duration, jobs: usize, scheduling: Scheduling) -> RunOptions {
    RunOptions {
        limits: runner::Limits {
            timeout,
            memory_bytes: None,
        },
        jobs,
        writes: true,
        progress: false,
        scheduling,
    }
}

/// Processes whose command line holds `needle`, with their nice values.
fn running(needle: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        let Ok(c) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let c = String::from_utf8_lossy(&c).replace('\0', " ");
        if !c.contains(needle) {
            continue;
        }
        // Field 19 of stat is the nice value; the fields after the
        // command's `(name)` start at field 3.
        let nice = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                rest.split_whitespace().nth(16)?.parse().ok()
            })
            .unwrap_or(0);
        out.push((format!("{name}: {c}"), nice));
    }
    out
}

#[test]
fn a_spinning_program_waits_aside_and_is_still_a_hang_at_exactly_its_limit() {
    let d = tempfile::tempdir().unwrap();
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::env::set_var("TMPDIR", &tmp);
    let corpus = d.path().join("corpus");
    let out = Command::new(BIN)
        .args([
            "generate", "--valid", "--seed", "2", "--count", "6", "--out",
        ])
        .arg(&corpus)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let script = d.path().join("spin.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\ncapabilities) echo '{\"protocol\":1,\"capabilities\":[\"observe\"]}';;\n\
         observe) while :; do :; done;;\nesac\n",
    )
    .unwrap();
    let spin = runner::adapter_from_spec(&format!("exec:sh {}", script.display())).unwrap();
    let limit = Duration::from_secs(3);
    let grace = Duration::from_millis(300);
    // No stalls: this spin would be one (`conform/tests/stall.rs`); here
    // it runs to its limit.
    let scheduling = Scheduling {
        max_waiting: 6,
        grace,
        stall: None,
        ..Scheduling::default()
    };
    // While the run goes: the nice values of the spinning programs.
    let done = AtomicBool::new(false);
    let needle = script.display().to_string();
    let (report, wall, nices) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                seen.extend(running(&needle).into_iter().map(|(_, n)| n));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        let start = Instant::now();
        let report = runner::run_corpus(&corpus, &[spin], &opts(limit, 1, scheduling)).unwrap();
        let wall = start.elapsed();
        done.store(true, Ordering::SeqCst);
        (report, wall, watcher.join().unwrap())
    });
    assert_eq!(report.cases.len(), 6);
    for case in &report.cases {
        let r = &case.results[0];
        assert_eq!(
            r.outcome.kind,
            OutcomeKind::Hang,
            "{}: {:?}",
            case.id,
            r.outcome
        );
        assert!(r.observation.timed_out, "{}", case.id);
        let ms = r.observation.duration_ms;
        assert!(
            (3000..4000).contains(&ms),
            "{}: ended after {ms} ms, the limit is 3000 ms",
            case.id
        );
    }
    // One worker: in place the six hangs take 6 x 3 s one after another;
    // aside, each holds the worker only for its grace time.
    assert!(
        wall < Duration::from_secs(12),
        "six 3 s hangs on one worker took {wall:?}: they did not wait aside"
    );
    assert!(
        nices.contains(&19),
        "no spinning program was seen at nice 19: {nices:?}"
    );
    // Nothing left running, no temporary file left.
    assert_eq!(running(&needle), Vec::<(String, i64)>::new());
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, Vec::<PathBuf>::new());
}

/// (case, implementation) -> (outcome, cause as JSON).
type Outcomes = BTreeMap<(String, String), (OutcomeKind, String)>;

/// The [`Outcomes`] of one run of
/// `specs` over the shared corpus with a 10 s limit and 2 workers, checked
/// to list the cases in corpus order and the results in `specs` order.
fn outcomes(specs: &[&str], scheduling: Scheduling) -> (Outcomes, runner::report::RunReport) {
    std::env::set_var("QCOW2_CONFORM_BIN", BIN);
    let adapters: Vec<_> = specs
        .iter()
        .map(|s| runner::adapter_from_spec(s).unwrap_or_else(|e| panic!("{s}: {e:#}")))
        .collect();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let o = opts(Duration::from_secs(10), 2, scheduling);
    let start = Instant::now();
    let report = runner::run_corpus(&corpus, &adapters, &o).unwrap();
    eprintln!("{specs:?} in {:.1?}", start.elapsed());
    assert!(report.corpus_unchanged, "{:?}", report.corpus_changes);
    let text = std::fs::read_to_string(corpus.join("manifest.json")).unwrap();
    let manifest = generator::Manifest::from_json(&text).unwrap();
    let ids: Vec<&str> = manifest.cases.iter().map(|c| c.id.as_str()).collect();
    let got: Vec<&str> = report.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(got, ids, "the report lists the cases in corpus order");
    let mut all = BTreeMap::new();
    for case in &report.cases {
        let in_order = case
            .results
            .iter()
            .map(|r| r.implementation.as_str())
            .eq(specs.iter().copied());
        assert!(in_order, "{}: results not in --impl order", case.id);
        for r in &case.results {
            let cause = serde_json::to_string(&r.outcome.cause).unwrap();
            all.insert(
                (case.id.clone(), r.implementation.clone()),
                (r.outcome.kind, cause),
            );
        }
    }
    (all, report)
}

#[test]
fn every_outcome_is_the_same_with_and_without_stepping_aside_ordering_and_stalls() {
    // dissect@3.21 hangs on the three extended-L2 cases and libqcow on
    // `qemu/backing-short`: with stalls on (the default) each is ended
    // after 2 s of spinning instead of at the limit.
    let specs = ["dissect@3.21", "libqcow", "qcow2-rs"];
    let (before, first) = outcomes(&specs, Scheduling::in_place());
    let hangs: Vec<&(String, String)> = before
        .iter()
        .filter(|(_, (k, _))| *k == OutcomeKind::Hang)
        .map(|(key, _)| key)
        .collect();
    assert!(
        hangs.len() >= 4,
        "dissect@3.21 hangs on the extended-L2 cases, libqcow on a short backing file: {hangs:?}"
    );
    // The limit is a third of run's default, so is the grace time.
    let mut scheduling = Scheduling {
        grace: Duration::from_secs(2),
        ..Scheduling::default()
    };
    for case in &first.cases {
        for r in &case.results {
            scheduling.estimates.insert(
                (case.id.clone(), r.implementation.clone()),
                r.observation.duration_ms,
            );
        }
    }
    let (after, second) = outcomes(&specs, scheduling);
    // Every hang of the second run was a stall, seen before the limit
    // (how long before depends on the machine's load).
    for case in &second.cases {
        for r in &case.results {
            if r.outcome.kind == OutcomeKind::Hang {
                let spun = r.observation.stalled_ms;
                assert!(
                    spun.is_some_and(|ms| ms >= 2000) && r.observation.duration_ms < 10_000,
                    "{} {}: not ended as a stall: {:?} after {} ms",
                    case.id,
                    r.implementation,
                    spun,
                    r.observation.duration_ms
                );
            }
        }
    }
    let differ: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k:?}: {v:?} then {:?}", after.get(k)))
        .collect();
    assert_eq!(before.len(), after.len());
    assert!(
        differ.is_empty(),
        "outcomes changed:\n{}",
        differ.join("\n")
    );
}
