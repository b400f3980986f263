//! The live path against the real `qemu-storage-daemon`: bitmaps made and
//! changed over QMP, guest writes and backup reads over the suite's own
//! NBD client, clean shutdowns and `kill -9` crashes, every result judged
//! by the semantic model (`spec_model::semantics`) and the format model.
//! A missing daemon fails these tests; it never skips them.

#[path = "common/live.rs"]
mod live;
#[path = "common/qemu.rs"]
mod qemu;

use conform::runner::adapters::qemu_live::daemon::Daemon;
use conform::runner::adapters::qemu_live::session::{read_file, Session};
use live::{limits, qsd};
use qemu::CreateOpts;
use spec_model::semantics::{granules, Disk, Expect, Op};
use spec_model::Model;
use std::path::{Path, PathBuf};

fn image(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("live.qcow2");
    qemu::create(&p, size, &CreateOpts::cluster_size(65536)).unwrap();
    p
}

/// The daemon on a fresh image of `size` bytes in `dir` (made if missing).
fn session(dir: &Path, size: u64) -> Session {
    std::fs::create_dir_all(dir).unwrap();
    Session::open(&qsd(), &image(dir, size), &limits()).unwrap()
}

fn add(name: &str, gbits: u8, persistent: bool, disabled: bool) -> Op {
    Op::Add {
        name: name.into(),
        gbits,
        persistent,
        disabled,
    }
}

fn w(offset: u64, len: u64) -> Op {
    Op::Write { offset, len }
}

/// Runs `ops`, asserting no step finds a problem.
fn steps(s: &mut Session, ops: &[Op]) {
    for op in ops {
        let p = s.step(op).unwrap();
        assert!(p.is_empty(), "after {op:?}: {p:#?}");
    }
}

#[test]
fn bits_persist_exactly_across_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 << 20);
    let mut s = Session::open(&qsd(), &img, &limits()).unwrap();
    s.contents = conform::runner::adapters::qemu_live::oracle::Contents::HashAndNbd;
    steps(
        &mut s,
        &[
            add("coarse", 16, true, false),
            add("fine", 12, true, false),
            add("off", 14, true, true),
            add("temp", 16, false, false),
            w(1000, 70_000),
            Op::WriteZeroes {
                offset: 3 << 20,
                len: 4096,
            },
            Op::Discard {
                offset: 5 << 20,
                len: 65536,
            },
            Op::Disable {
                name: "fine".into(),
            },
            w(7 << 20, 1),
            Op::Merge {
                target: "off".into(),
                sources: vec!["coarse".into(), "fine".into()],
            },
        ],
    );
    let want = s.model.clone();
    assert!(!want.bitmaps["coarse"].bits.is_empty());
    // Judged on the file by the format model, then reopened and compared.
    let p = s.restart().unwrap();
    assert!(p.is_empty(), "{p:#?}");
    // The reopened daemon serves the stored bits to a backup client.
    let d = s.daemon().unwrap();
    for (name, b) in &want.bitmaps {
        if name == "temp" {
            continue;
        }
        let ranges = d.read_dirty(name).unwrap().unwrap();
        assert_eq!(ranges, b.dirty_ranges(want.size), "{name}");
    }
    // While it runs, the file marks every loaded bitmap in_use.
    assert!(read_file(&img).unwrap().bitmaps.values().all(|b| b.in_use));
    s.close().unwrap();
    // After its clean shutdown the file holds exactly the bits.
    let file = read_file(&img).unwrap();
    assert_eq!(
        file.bitmaps.len(),
        3,
        "the non-persistent bitmap is not stored"
    );
    for (name, b) in &file.bitmaps {
        assert!(!b.in_use && b.usable, "{name}");
        assert_eq!(b.bits.as_ref(), Some(&want.bitmaps[name].bits), "{name}");
        assert_eq!(b.auto, want.bitmaps[name].enabled, "{name}");
    }
}

#[test]
fn a_crash_leaves_in_use_bitmaps_that_a_reopen_marks_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 4 << 20);
    let mut s = Session::open(&qsd(), &img, &limits()).unwrap();
    steps(&mut s, &[add("old", 16, true, false), w(0, 100)]);
    assert!(s.restart().unwrap().is_empty());
    steps(&mut s, &[add("new", 16, true, false), w(1 << 20, 100)]);
    let p = s.crash().unwrap();
    assert!(p.is_empty(), "{p:#?}");
    // The format model: valid, "old" present but in_use and unusable,
    // "new" absent.
    let m = Model::open(std::fs::File::open(&img).unwrap()).unwrap();
    let r = m.report().clone();
    assert_eq!(r.verdict, spec_model::Verdict::Valid, "{:#?}", r.findings);
    assert_eq!(r.bitmaps.len(), 1);
    assert_eq!(r.bitmaps[0].name, "old");
    assert!(r.bitmaps[0].flags.in_use && !r.bitmaps[0].usable);
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule.to_string() == "bitmaps.dir.in-use"));
    // The reopened daemon reports it inconsistent (the session compared
    // that already), and refuses every use but removal.
    assert!(s.model.bitmaps["old"].inconsistent);
    for op in [
        Op::Clear { name: "old".into() },
        Op::Enable { name: "old".into() },
        Op::Merge {
            target: "old".into(),
            sources: vec!["old".into()],
        },
    ] {
        assert!(matches!(s.model.expect(&op), Expect::Refuse(_)));
        let p = s.step(&op).unwrap();
        assert!(p.is_empty(), "{op:?}: {p:#?}");
    }
    let d = s.daemon().unwrap();
    assert!(
        d.read_dirty("old").unwrap().is_err(),
        "QEMU exported an in_use bitmap"
    );
    steps(&mut s, &[Op::Remove { name: "old".into() }]);
    s.close().unwrap();
}

#[test]
fn an_incremental_backup_read_of_corpus_bitmaps_equals_the_model() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus.join("manifest.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for case in manifest["cases"].as_array().unwrap() {
        let e = &case["expected"];
        let usable = e["bitmaps"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["usable"] == true));
        if e["verdict"] != "valid"
            || !usable
            || case.get("companions").is_some()
            || case.get("secret").is_some()
        {
            continue;
        }
        let copy = dir.path().join("case.qcow2");
        std::fs::copy(corpus.join(case["file"].as_str().unwrap()), &copy).unwrap();
        let mut m = Model::open(std::fs::File::open(&copy).unwrap()).unwrap();
        let names: Vec<(usize, String, bool)> = m
            .report()
            .bitmaps
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.name.clone(), b.usable))
            .collect();
        let Ok(mut d) = Daemon::start(&qsd(), &copy, &limits()) else {
            continue; // QEMU refuses some valid images (docs/findings.md)
        };
        for (i, name, usable) in names {
            if !usable {
                continue;
            }
            let want = m.dirty_ranges(i).unwrap().unwrap();
            match d.read_dirty(&name).unwrap() {
                Ok(got) => {
                    assert_eq!(got, want, "{} bitmap {name:?}", case["id"]);
                    compared += 1;
                }
                Err(e) => eprintln!("{}: QEMU refused to export {name:?}: {e}", case["id"]),
            }
        }
        let p = d.quit();
        assert_eq!(p.status, Some(0), "{}: {}", case["id"], p.stderr);
        if compared >= 12 {
            break;
        }
    }
    assert!(compared >= 12, "only {compared} bitmaps compared");
}

#[test]
fn qemu_debug_hash_is_content_sha256_exactly_when_the_data_fills_whole_words() {
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB at 2^16: 1024 bits, 128 bytes (whole words); at 2^20: 64
    // bits, 8 bytes; at 2^21: 32 bits, 4 bytes (padded); at 2^13: 8192 bits.
    // 64 MiB + 512 at 2^16: 1025 bits, 129 bytes (padded).
    for (size, gbits) in [
        (64u64 << 20, 16u8),
        (64 << 20, 20),
        (64 << 20, 21),
        ((64 << 20) + 512, 16),
        (3 << 20, 18),
    ] {
        let sub = dir.path().join(format!("{size}-{gbits}"));
        std::fs::create_dir_all(&sub).unwrap();
        let img = image(&sub, size);
        let mut s = Session::open(&qsd(), &img, &limits()).unwrap();
        steps(
            &mut s,
            &[
                add("h", gbits, true, false),
                w(0, 1),
                w(size / 2 + 3, 70_000),
                w(size - 1, 1),
            ],
        );
        let b = s.model.bitmaps["h"].clone();
        let n = granules::nbits(size, gbits);
        let qemu = s.daemon().unwrap().debug_sha256("h").unwrap().unwrap();
        assert_eq!(Some(qemu.clone()), b.qemu_debug_sha256(size));
        let content = b.content_sha256(size).unwrap();
        assert_eq!(
            qemu == content,
            granules::qemu_hash_is_content(n),
            "size {size} 2^{gbits}: {n} bits"
        );
        // After a clean shutdown the format model's content_sha256 is the
        // model's.
        s.close().unwrap();
        let mut m = Model::open(std::fs::File::open(&img).unwrap()).unwrap();
        assert_eq!(
            m.report().bitmaps[0].contents.content_sha256.as_deref(),
            Some(content.as_str())
        );
        let _ = m.dirty_ranges(0);
    }
}

/// A double of the model that forgets guest writes.
fn forgets_writes(d: &mut Disk, op: &Op) {
    if !matches!(op, Op::Write { .. }) {
        d.apply(op);
    }
}

/// A double of the model that gets a new bitmap's granularity wrong.
fn wrong_granularity(d: &mut Disk, op: &Op) {
    d.apply(op);
    if let Op::Add { name, .. } = op {
        if let Some(b) = d.bitmaps.get_mut(name) {
            b.gbits += 1;
        }
    }
}

#[test]
fn the_oracle_catches_a_wrong_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(dir.path(), 4 << 20);
    s.predict = forgets_writes;
    assert!(s.step(&add("a", 16, true, false)).unwrap().is_empty());
    let p = s.step(&w(100, 1)).unwrap();
    assert!(p.iter().any(|m| m.contains("debug hash")), "{p:#?}");
    s.close().unwrap();

    let sub = dir.path().join("g");
    let mut s = session(&sub, 4 << 20);
    s.predict = wrong_granularity;
    let p = s.step(&add("a", 16, true, false)).unwrap();
    assert!(p.iter().any(|m| m.contains("granularity")), "{p:#?}");
    s.close().unwrap();

    // And the file judge catches a file that does not hold the model's bits.
    let sub = dir.path().join("f");
    let mut s = session(&sub, 4 << 20);
    steps(&mut s, &[add("a", 16, true, false), w(0, 1)]);
    s.model.bitmaps.get_mut("a").unwrap().bits.push((9, 10));
    let p = s.restart().unwrap();
    assert!(p.iter().any(|m| m.contains("set granules")), "{p:#?}");
}

#[test]
fn the_daemon_leaves_no_sockets_or_processes_behind() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 1 << 20);
    let d = Daemon::start(&qsd(), &img, &limits()).unwrap();
    let sock_dir = d.dir().to_owned();
    assert!(sock_dir.join("qmp.sock").exists());
    let p = d.kill();
    assert_eq!(
        (p.status, p.timed_out),
        (None, false),
        "{}",
        p.describe_end()
    );
    assert!(!sock_dir.exists(), "{} left behind", sock_dir.display());
    let d = Daemon::start(&qsd(), &img, &limits()).unwrap();
    let sock_dir = d.dir().to_owned();
    drop(d);
    assert!(!sock_dir.exists());
    // Refusal: a file that is not an image.
    let junk = dir.path().join("junk.qcow2");
    std::fs::write(&junk, b"not an image").unwrap();
    let e = Daemon::start(&qsd(), &junk, &limits())
        .err()
        .expect("refused");
    assert!(
        e.to_string().to_lowercase().contains("qcow2") || e.to_string().contains("format"),
        "{e}"
    );
}

#[test]
fn a_live_resize_keeps_bits_and_leaves_the_grown_area_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), (3 << 20) + 512);
    let mut s = Session::open(&qsd(), &img, &limits()).unwrap();
    s.contents = conform::runner::adapters::qemu_live::oracle::Contents::HashAndNbd;
    steps(
        &mut s,
        &[
            add("a", 16, true, false),
            w(0, 1),
            w(3 << 20, 512),
            Op::Resize { size: 8 << 20 },
        ],
    );
    // The grown area is open in the model; QEMU's bits there are read
    // over NBD and accepted either way.
    assert_eq!(s.model.bitmaps["a"].unspecified, vec![(49, 128)]);
    steps(
        &mut s,
        &[w(7 << 20, 1), Op::Resize { size: 1 << 20 }, w(0, 1 << 20)],
    );
    assert_eq!(s.model.bitmaps["a"].bits, vec![(0, 16)]);
    let p = s.restart().unwrap();
    assert!(p.is_empty(), "{p:#?}");
    s.close().unwrap();
    assert_eq!(read_file(&img).unwrap().size, 1 << 20);
}

#[test]
fn the_same_sequences_offline_match_the_model() {
    use conform::campaign::sequences::{offline::run_offline, Sequence, Step};
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for i in 0..6 {
        let seq = Sequence::random(1, i);
        let work = dir.path().join(i.to_string());
        std::fs::create_dir_all(&work).unwrap();
        let r = run_offline(&seq, &work, &limits()).unwrap();
        assert!(!r.failed(), "sequence {i}: {r:#?}");
        ran += r.operations;
        assert!(seq.steps.iter().any(|s| matches!(s, Step::Op { .. })));
    }
    assert!(ran > 20, "{ran} operations");
}

#[test]
fn a_version_2_image_refuses_persistent_bitmaps_as_the_model_requires() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v2.qcow2");
    let opts = CreateOpts {
        cluster_size: Some(65536),
        compat: Some("0.10".into()),
        ..CreateOpts::default()
    };
    qemu::create(&img, 1 << 20, &opts).unwrap();
    let mut s = Session::open(&qsd(), &img, &limits()).unwrap();
    let persistent = add("p", 16, true, false);
    assert!(matches!(s.model.expect(&persistent), Expect::Refuse(_)));
    // QEMU refuses it and the model requires the refusal: no problem. A
    // model that let it succeed would report "QEMU refused ... which must
    // succeed" here.
    steps(&mut s, &[persistent, add("t", 16, false, false), w(0, 1)]);
    let file = s.close().unwrap();
    assert!(file.bitmaps.is_empty(), "{:?}", file.bitmaps);
}
