//! No finding of the suite's own making. The offline sequence campaign
//! merges several sources as atomically as QMP does (a merge with a
//! missing source changes nothing), and both campaigns save a finding only
//! after replaying what they saved: a disagreement that does not come back
//! is counted as `not-reproduced`, kept under `OUT/not-reproduced/KEY/`,
//! and not saved. The disagreement is made deterministically: the real
//! QEMU runs every time, and a wrapper perturbs only its first answer (a
//! crash it never had, a problem it never showed).

use conform::campaign::sequences::{
    self, offline::run_offline, SeqResult, Sequence, SequenceOptions, Step,
};
use conform::campaign::{self, Budget, CampaignOptions, Plan, NOT_REPRODUCED};
use conform::runner::adapters::WriteRun;
use conform::runner::{self, Adapter, Capabilities, Limits, Observation, RunOptions};
use spec_model::semantics::Op;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: None,
    }
}

fn op(op: Op) -> Step {
    Step::Op { op }
}

fn add(name: &str, gbits: u8) -> Step {
    op(Op::Add {
        name: name.into(),
        gbits,
        persistent: true,
        disabled: false,
    })
}

fn merge(target: &str, sources: &[&str]) -> Step {
    op(Op::Merge {
        target: target.into(),
        sources: sources.iter().map(|s| s.to_string()).collect(),
    })
}

fn dirs(out: &Path, sub: &str) -> Vec<String> {
    std::fs::read_dir(out.join(sub))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn state(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap()
}

#[test]
fn an_offline_merge_with_a_missing_source_changes_nothing() {
    // x holds bits; t, the target, is disabled so nothing else sets its
    // bits. QMP refuses the merge of [x, missing] as a whole; offline, x
    // must not reach t either. The merge of [x, y] then sets t's bits
    // (at t's coarser granularity), and the staging bitmap is gone.
    let dir = tempfile::tempdir().unwrap();
    let seq = Sequence {
        size: 1 << 20,
        second: None,
        shape: Default::default(),
        steps: vec![
            add("x", 16),
            add("y", 12),
            op(Op::Add {
                name: "t".into(),
                gbits: 18,
                persistent: true,
                disabled: true,
            }),
            op(Op::Write {
                offset: 4096,
                len: 70_000,
            }),
            merge("t", &["x", "missing"]),
            merge("t", &["missing", "x"]),
            merge("t", &["x", "y"]),
        ],
    };
    let r = run_offline(&seq, dir.path(), &limits()).unwrap();
    assert!(!r.failed(), "{r:#?}");
    assert_eq!(r.operations, 7);
    let staged = r
        .transcript
        .iter()
        .filter(|l| l.contains(sequences::offline::MERGE_STAGE))
        .count();
    // Each merge staged and the stage removed; only the last one merged
    // the stage into the target.
    assert_eq!(staged, 2 + 2 + 3, "{r:#?}");
}

/// The seed (of the first 300) whose first sequence is shortest: the
/// minimiser's trials, each a real run, stay few.
fn short_seed() -> u64 {
    (1..300)
        .min_by_key(|s| Sequence::random(*s, 0).steps.len())
        .unwrap()
}

/// A campaign of one case with `seed`, into `out`.
fn one_case(seed: u64, out: &Path) -> Plan {
    Plan {
        seed,
        shard: None,
        out: out.to_owned(),
        budget: Budget {
            duration: Duration::from_secs(600),
            max: Some(1),
        },
    }
}

/// Runs the offline sequence campaign for one sequence with `runner`.
fn sequence_campaign(out: &Path, runner: &mut sequences::Runner) -> conform::campaign::State {
    let qsd = runner::adapters::qemu::Tool::StorageDaemon
        .locate()
        .unwrap();
    let opts = SequenceOptions {
        plan: one_case(short_seed(), out),
        limits: limits(),
        minimise: true,
        bare: false,
        offline: true,
    };
    sequences::run_with(&qsd, &opts, runner).unwrap()
}

#[test]
fn a_sequence_finding_that_does_not_reproduce_is_not_saved() {
    // The sequence passes offline; only the first run of it is reported
    // with a problem QEMU never showed.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("camp");
    let mut calls = 0;
    let mut runner = |seq: &Sequence, work: &Path| {
        calls += 1;
        let mut r: SeqResult = run_offline(seq, work, &limits())?;
        if calls == 1 {
            r.problems = vec!["perturbed first run: bitmap \"a\" is missing".into()];
            r.at_step = Some(seq.steps.len() - 1);
        }
        Ok(r)
    };
    let st = sequence_campaign(&out, &mut runner);
    assert_eq!(st.outcomes.get("finding"), Some(&1), "{:?}", st.outcomes);
    assert_eq!(
        st.outcomes.get(NOT_REPRODUCED),
        Some(&1),
        "{:?}",
        st.outcomes
    );
    assert!(st.disagreements.is_empty(), "{:?}", st.disagreements);
    assert!(dirs(&out, "findings").is_empty());
    let kept = dirs(&out, "not-reproduced");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let k = out.join("not-reproduced").join(&kept[0]);
    for f in ["finding.json", "transcript.qmp", "repro.sh", "replay.json"] {
        assert!(k.join(f).is_file(), "{f} kept in {}", k.display());
    }
    // The reproducer of an offline finding replays with the offline tools.
    let repro = std::fs::read_to_string(k.join("repro.sh")).unwrap();
    assert!(
        repro.contains("qemu-img") && !repro.contains("socat"),
        "{repro}"
    );
    assert_eq!(state(&out)["outcomes"][NOT_REPRODUCED], 1);
}

#[test]
fn a_sequence_finding_that_reproduces_is_saved() {
    // Every run reports the problem: the replay agrees, the finding is
    // saved under findings/ and replays through `sequences::replay`.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("camp");
    let mut runner = |seq: &Sequence, work: &Path| {
        let mut r: SeqResult = run_offline(seq, work, &limits())?;
        r.problems = vec!["always: bitmap \"a\" is missing".into()];
        r.at_step = Some(0);
        Ok(r)
    };
    let st = sequence_campaign(&out, &mut runner);
    assert_eq!(st.outcomes.get(NOT_REPRODUCED), None, "{:?}", st.outcomes);
    let saved = dirs(&out, "findings");
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(dirs(&out, "not-reproduced").is_empty());
    assert!(dirs(&out, "pending").is_empty());
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("findings").join(&saved[0]).join("finding.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["offline"], true);
}

/// QEMU's adapter, with the first observation it makes turned into a
/// crash (signal 9) that QEMU never had.
struct FirstObservationCrashes {
    inner: Box<dyn Adapter>,
    calls: AtomicUsize,
}

impl Adapter for FirstObservationCrashes {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn observe(&self, image_copy: &Path, limits: &Limits) -> Observation {
        let mut o = self.inner.observe(image_copy, limits);
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            o.signal = Some(9);
        }
        o
    }
    fn write(&self, image_copy: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        self.inner.write(image_copy, offset, len, limits)
    }
}

#[test]
fn an_image_finding_that_does_not_reproduce_is_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("camp");
    let adapter = FirstObservationCrashes {
        inner: runner::adapter_from_spec("qemu").unwrap(),
        calls: AtomicUsize::new(0),
    };
    let opts = CampaignOptions {
        plan: one_case(1, &out),
        run: RunOptions {
            limits: limits(),
            jobs: 1,
            writes: false,
            progress: false,
            scheduling: Default::default(),
        },
        progress: false,
        coverage_guided: false,
    };
    let s = campaign::run(&adapter, &opts).unwrap();
    assert!(s.new_findings.is_empty(), "{:?}", s.new_findings);
    assert_eq!(s.not_reproduced.len(), 1, "{:?}", s.not_reproduced);
    assert!(
        s.not_reproduced[0].starts_with("crash"),
        "{:?}",
        s.not_reproduced
    );
    assert!(dirs(&out, "findings").is_empty());
    assert!(dirs(&out, "pending").is_empty());
    let kept = out.join("not-reproduced").join(&s.not_reproduced[0]);
    for f in ["finding.json", "image.qcow2", "replay.json"] {
        assert!(kept.join(f).is_file(), "{f} kept in {}", kept.display());
    }
    assert_eq!(state(&out)["outcomes"][NOT_REPRODUCED], 1);
    assert!(state(&out)["disagreements"].as_object().unwrap().is_empty());
}
