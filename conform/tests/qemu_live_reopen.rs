//! A running node reopened read-only and read-write again (QMP
//! `blockdev-reopen`, the sequences' `Op::Reopen`) against the installed
//! `qemu-storage-daemon`, judged by the semantic model
//! (`spec_model::semantics::reopen`): going read-only stores the
//! persistent bitmaps in the image as a clean close would (the file is
//! read right after the reopen), guest writes are refused meanwhile and a
//! crash leaves the file as the reopen stored it; going read-write marks
//! the stored bitmaps `in_use` in the image again, and writes record
//! again. Models that get either direction wrong are caught.

use conform::campaign::sequences::gen::Shape;
use conform::campaign::sequences::{self, Sequence, Step};
use conform::runner::adapters::qemu::Tool;
use conform::runner::process::Limits;
use spec_model::semantics::{Disk, Op};
use std::path::PathBuf;
use std::time::Duration;

fn qsd() -> PathBuf {
    Tool::StorageDaemon
        .locate()
        .expect("qemu-storage-daemon is required (scripts/setup.sh installs qemu-utils)")
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: None,
    }
}

fn run(seq: &Sequence, predict: fn(&mut Disk, &Op)) -> sequences::SeqResult {
    let work = tempfile::tempdir().unwrap();
    let _w = conform::runner::process::sandbox::writable(work.path());
    sequences::run_sequence(&qsd(), seq, work.path(), &limits(), predict).unwrap()
}

fn op(op: Op) -> Step {
    Step::Op { op }
}

fn add(name: &str, persistent: bool) -> Op {
    Op::Add {
        name: name.into(),
        gbits: 16,
        persistent,
        disabled: false,
    }
}

const RO: Op = Op::Reopen { read_only: true };
const RW: Op = Op::Reopen { read_only: false };

/// Read-only and back, twice, with crashes in both states, on an image
/// holding bitmaps with bits, a disabled one and an `in_use` one.
fn sequence() -> Sequence {
    Sequence {
        size: 1_000_448,
        shape: Shape {
            preload: true,
            ..Shape::default()
        },
        steps: vec![
            op(add("p", true)),
            op(add("t", false)),
            op(Op::Write {
                offset: 4096,
                len: 70_000,
            }),
            op(RO),
            op(Op::Write { offset: 0, len: 1 }),
            op(Op::Clear { name: "p".into() }),
            op(Op::Clear { name: "t".into() }),
            op(add("q", true)),
            op(RO),
            op(RW),
            op(Op::Write {
                offset: 300_000,
                len: 1,
            }),
            op(RW),
            Step::Crash,
            op(RO),
            Step::Crash,
            op(RO),
            op(RW),
            op(Op::Write { offset: 0, len: 1 }),
            Step::Restart,
        ],
    }
}

#[test]
fn reopening_read_only_stores_and_read_write_marks_in_use() {
    let r = run(&sequence(), Disk::apply);
    assert!(!r.failed(), "{r:#?}");
    assert_eq!(r.operations, 16);
    let reopens = r
        .transcript
        .iter()
        .filter(|l| l.starts_with('>') && l.contains("blockdev-reopen"))
        .count();
    assert_eq!(reopens, 7, "{:#?}", r.transcript);
}

#[test]
fn wrong_models_of_a_reopen_are_caught() {
    // A model for which going read-only changes nothing: QEMU refuses the
    // next guest write, which that model requires.
    let r = run(&sequence(), |d, op| {
        if *op != RO {
            d.apply(op)
        }
    });
    assert!(r.failed(), "{r:#?}");
    assert!(
        r.problems.iter().any(|p| p.contains("must succeed")),
        "{r:#?}"
    );
    // A model for which going read-write leaves the image as the
    // read-only reopen stored it: the file read right after the reopen
    // has the bitmaps in_use.
    let r = run(&sequence(), |d, op| {
        d.apply(op);
        if *op == RW {
            d.on_image.clear();
        }
    });
    assert!(r.failed(), "{r:#?}");
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("after the reopen read-write")),
        "{r:#?}"
    );
}
