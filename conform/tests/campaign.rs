//! `qcow2-conform campaign --impl qemu` against the real QEMU: finds
//! disagreements, saves each minimised image with the model's verdict and a
//! reproducer, resumes where it stopped, and honours --shard. Minimising
//! drops the mutations of a stack that the disagreement does not need
//! (folding into the spec what only their preparation contributed), keeps
//! those it needs, and shrinks the spec and the file.

use conform::campaign::{self, Candidate, ImageRecipe};
use conform::runner::{self, judge::OutcomeKind, Limits, RunOptions};
use generator::cases::spec_from_seed;
use generator::Config;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
            "--fail-on-findings",
            "none",
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
    // Each finding is one cause: its directory is its key, and it carries
    // the readable signature the key is made from. (Which case comes first
    // in a bucket, a stack or a plain mutant, is not pinned.)
    for f in &findings {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.join("finding.json")).unwrap())
                .unwrap();
        let key = f.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(meta["key"], key.as_str());
        let sig = meta["signature"].as_str().unwrap();
        assert!(
            key.starts_with(&format!(
                "{}--{}",
                meta["outcome"].as_str().unwrap(),
                meta["cause"]["check"].as_str().unwrap()
            )),
            "{key} vs {sig}"
        );
    }
    for f in findings {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.join("finding.json")).unwrap())
                .unwrap();
        let key = meta["key"].as_str().unwrap();
        assert!(key.starts_with(meta["outcome"].as_str().unwrap()), "{meta}");
        assert!(
            meta["minimised_nonzero_bytes"].as_u64() <= meta["original_nonzero_bytes"].as_u64()
        );
        // The minimised mutations are a subset of the case's.
        let ids = |k: &str| -> Vec<String> {
            meta[k]
                .as_array()
                .unwrap_or_else(|| panic!("{k} in {meta}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let (all, kept) = (ids("mutations"), ids("minimised_mutations"));
        assert!(kept.iter().all(|m| all.contains(m)), "{meta}");
        assert!(meta["minimised_byte_edits"].as_u64() <= meta["byte_edits"].as_u64());
        assert!(meta["minimised_spec"]["cluster_bits"].is_u64(), "{meta}");
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
    // Cases 1, 4, 7, 10 (0-based) belong to shard 2 of 3 (case kinds
    // cycle with the index modulo 4, independently of the shard).
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

fn qemu_opts() -> RunOptions {
    RunOptions {
        limits: Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: None,
        },
        jobs: 1,
        writes: false,
        progress: false,
        scheduling: Default::default(),
    }
}

/// Builds the stack `ids` on a small base spec, judges it under QEMU and
/// minimises it (a modest budget: these images shrink within a few dozen
/// trials). Returns the case's key and the minimised result.
fn minimise_stack(ids: &[&str], seed: u64) -> (String, Candidate, campaign::Minimised) {
    let adapter = runner::adapter_from_spec("qemu").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recipe = ImageRecipe {
        base: spec_from_seed(seed, &Config::small()),
        mutations: ids.iter().map(|s| s.to_string()).collect(),
        seed,
        edits: Vec::new(),
    };
    let c = Candidate::from_recipe("test", recipe).expect("the stack applies");
    let opts = qemu_opts();
    let r = campaign::judge(adapter.as_ref(), dir.path(), &c, &opts).unwrap();
    let key = campaign::key(&r.outcome);
    let m = campaign::minimise(
        adapter.as_ref(),
        dir.path(),
        c.clone(),
        &r.outcome,
        &opts,
        80,
    )
    .unwrap();
    (key, c, m)
}

fn assert_same_disagreement(key: &str, c: &Candidate, m: &campaign::Minimised) {
    assert_eq!(
        campaign::key(&m.last.outcome),
        key,
        "the minimised image disagrees the same way"
    );
    // The recorded expectation is the model's verdict of the saved bytes.
    let r = spec_model::check_bytes(&m.bytes);
    assert_eq!(r.verdict, m.expected.verdict);
    assert!(
        m.bytes.len() < c.bytes.len() / 8,
        "{} -> {} bytes",
        c.bytes.len(),
        m.bytes.len()
    );
    assert!(m.trials <= 80);
    // The minimised recipe still builds the image the byte reduction
    // started from.
    let again = m.recipe.realise().expect("minimised recipe realises");
    assert!(
        again.bytes.len() >= m.bytes.len(),
        "byte reduction only zeroes and trims"
    );
}

/// The stack of `ids` minimised with `seed` keeps only `kept`, under `key`,
/// and disagrees as the whole stack did.
fn minimises_to_one(ids: &[&str], seed: u64, key: &str, kept: &str) {
    let (got, c, m) = minimise_stack(ids, seed);
    assert_eq!(got, key);
    assert_eq!(m.recipe.mutations, [kept]);
    assert_same_disagreement(&got, &c, &m);
}

#[test]
fn a_stack_is_minimised_to_the_mutation_that_disagrees() {
    // QEMU lists a bitmap whose table lies past the end of the file
    // (lenient); the dirty bit and a leaked header cluster are notes that
    // change neither the outcome nor the key, so minimising drops them.
    let culprit = "bitmaps.table.bounds/past-eof";
    let (key, c, m) = minimise_stack(
        &[
            "header.dirty/set",
            culprit,
            "refcount.leak/header-refcount-2",
        ],
        0,
    );
    assert_eq!(
        key,
        "lenient--used-unusable--bitmaps.never-use-invalid--unusable_bitmaps.table.bounds"
    );
    assert_eq!(m.last.outcome.kind, OutcomeKind::Lenient);
    assert_eq!(m.recipe.mutations, [culprit], "{:?}", m.last.outcome.detail);
    assert_same_disagreement(&key, &c, &m);
    // The base spec shrank too (a smaller disk or smaller clusters).
    let (was, now) = (&c.recipe.base, &m.recipe.base);
    assert!(
        now.size < was.size || now.cluster_bits < was.cluster_bits,
        "size {} -> {}, cluster_bits {} -> {}",
        was.size,
        now.size,
        was.cluster_bits,
        now.cluster_bits
    );

    // Compatible extra data makes QEMU refuse the image whatever else the
    // stack holds (strict). That mutation changes no byte: its preparation
    // (a bitmap with extra data and the compatible flag) is the case, so
    // minimising folds it into the base spec and no mutation is left.
    let (key, c, m) = minimise_stack(
        &["header.dirty/set", "bitmaps.dir.extra-data/compatible"],
        1,
    );
    // One bucket per QEMU check: the flag is not a cause feature (QEMU
    // refuses extra data with or without it, in one message).
    assert!(
        key.starts_with("strict--open--open.conforming--")
            && !key.contains("extra_data_compatible"),
        "{key}"
    );
    assert_eq!(m.recipe.mutations, Vec::<String>::new());
    assert!(
        m.recipe
            .base
            .bitmaps
            .iter()
            .any(|b| b.extra_data_compatible && !b.extra_data.is_empty()),
        "{:?}",
        m.recipe.base.bitmaps
    );
    assert_same_disagreement(&key, &c, &m);
}

#[test]
fn a_name_cut_at_nul_needs_no_unrelated_error() {
    // QEMU lists a bitmap whose name has a NUL byte under the name cut at
    // the NUL: a name mismatch whether the image is otherwise invalid (a
    // duplicated backing format extension) or only unspecified (the NUL),
    // so the unrelated error goes and the NUL stays: without it the names
    // agree (pass).
    minimises_to_one(
        &[
            "ext.duplicate/backing-format-twice",
            "bitmaps.dir.name-bytes/nul",
        ],
        7,
        "mismatch--name-cut--bitmaps.list-as-stored",
        "bitmaps.dir.name-bytes/nul",
    );
}

#[test]
fn mutations_that_do_not_change_the_cause_go() {
    // Two broken bitmap structures, one cause (QEMU uses a bitmap the
    // model calls unusable, for the first broken rule in catalogue order:
    // the directory's padding): the key is the cause, not the rule set, so
    // that one mutation keeps it and the other is dropped.
    minimises_to_one(
        &[
            "bitmaps.table.bounds/past-eof",
            "bitmaps.dir.padding/non-zero",
        ],
        0,
        "lenient--used-unusable--bitmaps.never-use-invalid--unusable_bitmaps.dir.padding",
        "bitmaps.dir.padding/non-zero",
    );
}

#[test]
fn cases_are_deterministic_and_stacks_rebuild_from_their_recipe() {
    let mut stacked = 0;
    for index in 0..24 {
        let a = campaign::candidate(1, index);
        let b = campaign::candidate(1, index);
        let (Some(a), Some(b)) = (a, b) else {
            panic!("case {index} skipped")
        };
        assert_eq!(a.bytes, b.bytes, "case {index}");
        assert_eq!(a.recipe, b.recipe);
        assert_eq!(
            a.recipe.realise().unwrap().bytes,
            a.bytes,
            "case {index}: the recipe rebuilds the image"
        );
        let n = a.recipe.mutations.len();
        match index % 4 {
            0 => assert_eq!((n, a.recipe.edits.len()), (0, 0)),
            1 => assert_eq!((n, a.recipe.edits.len()), (1, 0)),
            2 => assert!(n == 1 && (1..=4).contains(&a.recipe.edits.len())),
            _ => {
                assert!((1..=3).contains(&n), "case {index}: {:?}", a.recipe);
                stacked += usize::from(n >= 2);
            }
        }
    }
    assert!(
        stacked >= 4,
        "most stacks keep 2-3 mutations: {stacked} of 6"
    );
    assert_ne!(
        campaign::candidate(1, 3).unwrap().bytes,
        campaign::candidate(2, 3).unwrap().bytes,
        "the seed changes the cases"
    );
}

/// `campaign --coverage-guided` on the gcov build of QEMU 10.2
/// (`scripts/build-qemu.sh 10.2 --coverage`; skipped with a message when
/// it is not built, the only skip): the programs write their counters
/// beneath `OUT/gcov` under the default sandbox, the campaign reads the
/// `.gcda` files of the bitmap code (every instrumented arc counted, some
/// run), keeps the first cases as seeds and makes later ones from them.
#[test]
fn a_coverage_guided_campaign_reads_qemus_counters_and_keeps_seeds() {
    if runner::adapter_from_spec("qemu@10.2-coverage").is_err() {
        eprintln!("SKIP qemu@10.2-coverage: not built on this machine; `scripts/build-qemu.sh 10.2 --coverage` builds it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("guided");
    let st = Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
        .args([
            "campaign",
            "--impl",
            "qemu@10.2-coverage",
            "--coverage-guided",
        ])
        .args(["--seed", "3", "--max-cases", "6", "--read-only"])
        .args(["--fail-on-findings", "none", "--out"])
        .arg(&out)
        .env_remove("GCOV_PREFIX")
        .status()
        .unwrap();
    assert!(st.success());
    let cov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("coverage.json")).unwrap()).unwrap();
    assert_eq!(cov["cases"], 6, "{cov}");
    let files = cov["files"].as_array().unwrap();
    let bitmap = &files[0];
    assert_eq!(bitmap["file"], "block_qcow2-bitmap.c.gcda", "{cov}");
    let (run, total) = (
        bitmap["arcs_run"].as_u64().unwrap(),
        bitmap["arcs"].as_u64().unwrap(),
    );
    assert!(run > 0 && run < total && total > 100, "{cov}");
    assert!(cov["seeds"].as_u64().unwrap() >= 1, "{cov}");
    assert!(cov["cases_from_seeds"].as_u64().unwrap() >= 1, "{cov}");
    assert!(
        cov["gcov_prefix"].as_str().unwrap().ends_with("gcov"),
        "{cov}"
    );
}
