//! Backup jobs while things happen, against the real
//! `qemu-storage-daemon` (issue 22): guest writes issued while an
//! incremental's job runs (the backup holds the disk as it was when the
//! job started; the bitmap records the writes for the next incremental),
//! jobs cancelled part-way (`bitmap-mode=always` clears what the job
//! copied, the other modes keep the bitmap whole), each chain restored
//! and compared byte for byte; the checks shown able to fail; and a
//! failing chain minimised as sequences are.

use conform::campaign::backup::chain::{Chain, ChainResult, Round};
use conform::campaign::backup::restore::Extents;
use conform::campaign::backup::{chain_key, minimise};
use conform::runner::adapters::qemu_live::backup::Mode;
use spec_model::semantics::Op;

#[path = "common/live.rs"]
mod live;
use live::{chain_options as opts, qsd};

fn w(offset: u64, len: u64) -> Op {
    Op::Write { offset, len }
}

const PUSH: [Mode; 4] = [
    Mode::BitmapOnSuccess,
    Mode::BitmapNever,
    Mode::BitmapAlways,
    Mode::Incremental,
];

use live::run_in_scratch as run;

/// Runs `chain` (of `mode`) with the default options: it must pass, every
/// backup point restored equal to the disk.
fn run_passing(chain: &Chain, mode: Mode) -> ChainResult {
    let r = run(chain, opts());
    assert!(!r.failed(), "{mode:?}: {:#?}", (&r.problems, &r.error));
    assert!(r.points.iter().all(|p| p.restored_equal), "{mode:?}");
    r
}

/// Writes during the first incremental's job over bytes nothing wrote
/// before (so a backup holding them would differ from the disk at the
/// job's start), then an incremental that must hold them.
fn during_chain(mode: Mode) -> Chain {
    chain(
        mode,
        vec![
            Round {
                ops: vec![w(1 << 20, 400_000)],
                during: vec![
                    w(2 << 20, 100_000),
                    // Into a dirty cluster the job has not copied yet:
                    // the old data must reach the backup.
                    Op::WriteZeroes {
                        offset: (1 << 20) + 196_608,
                        len: 65536,
                    },
                ],
                ..Round::default()
            },
            Round {
                ops: vec![w(3 << 20, 5)],
                ..Round::default()
            },
        ],
    )
}

/// A transient 16 KiB bitmap on a 4 MiB disk, 300,000 bytes written
/// before the full backup, then `rounds`.
fn chain(mode: Mode, rounds: Vec<Round>) -> Chain {
    Chain {
        size: 4 << 20,
        gbits: 14,
        persistent: false,
        mode,
        before: vec![w(0, 300_000)],
        rounds,
    }
}

#[test]
fn writes_during_a_job_stay_out_of_its_backup_and_go_into_the_next() {
    for mode in PUSH {
        let r = run_passing(&during_chain(mode), mode);
        assert_eq!(
            r.counts.written_during, 1,
            "{mode:?}: the job ran while the guest wrote"
        );
        // The second incremental required the writes made during the
        // first job (100,000 bytes at 2 MiB and the zeroed 64 KiB: 16 KiB
        // granules, 7 and 4 of them) and the round's own write.
        assert!(
            r.points[2].required >= (7 + 4 + 1) * 16384,
            "{mode:?}: {:?}",
            r.points[2]
        );
    }
}

/// Adds to the first incremental the data a write during its job wrote:
/// a backup that is not the disk as it was at the job's start.
fn include_later_write(point: usize, x: &mut Extents) {
    if point == 1 {
        let offset = 2 << 20;
        x.push((
            offset,
            vec![conform::runner::adapters::qemu_live::oracle::fill_byte(offset); 100],
        ));
        x.sort_by_key(|e| e.0);
    }
}

#[test]
fn a_backup_holding_a_write_made_during_its_job_is_a_defect() {
    let mut o = opts();
    o.tamper = Some(include_later_write);
    let r = run(&during_chain(Mode::BitmapOnSuccess), o);
    live::assert_stopped_at_first_incremental(&r, &["differs from the disk"], "tampered");
}

fn cancel_chain(mode: Mode) -> Chain {
    chain(
        mode,
        vec![
            Round {
                ops: vec![w(65536, 10), w(1 << 20, 400_000)],
                cancel_first: true,
                ..Round::default()
            },
            Round {
                ops: vec![w(100, 5)],
                ..Round::default()
            },
        ],
    )
}

#[test]
fn a_cancelled_job_leaves_the_bitmap_as_each_mode_says() {
    let mut held = Vec::new();
    for mode in PUSH {
        let r = run_passing(&cancel_chain(mode), mode);
        assert_eq!(
            r.counts.failed_jobs, 1,
            "{mode:?}: the cancel failed the job"
        );
        held.push((mode, r.points[1].held));
    }
    // `always` cleared what the cancelled job had copied (a 64 KiB
    // cluster at least), so its next incremental holds less than the
    // modes that kept the bitmap whole.
    let of = |m: Mode| held.iter().find(|(x, _)| *x == m).unwrap().1;
    assert!(
        of(Mode::BitmapAlways) < of(Mode::BitmapOnSuccess),
        "{held:?}"
    );
    assert_eq!(of(Mode::BitmapOnSuccess), of(Mode::Incremental), "{held:?}");
}

/// Takes out the first cluster of every incremental that holds one.
fn drop_first(point: usize, x: &mut Extents) {
    if point > 0 && !x.is_empty() {
        x.remove(0);
    }
}

#[test]
fn a_failing_chain_is_minimised_to_what_still_fails_the_same_way() {
    let mut o = opts();
    o.tamper = Some(drop_first);
    let mut c = cancel_chain(Mode::BitmapNever);
    c.rounds.push(Round {
        ops: vec![w(3 << 20, 1), w(5000, 1)],
        during: vec![w(2 << 20, 1)],
        ..Round::default()
    });
    let first = run(&c, o);
    assert!(first.failed(), "{first:#?}");
    let (small, r) = minimise(&qsd(), &c, first.clone(), 30, o);
    assert_eq!(chain_key(&r), chain_key(&first));
    assert!(small.rounds.len() < c.rounds.len(), "{small:#?}");
    assert!(!small.rounds.iter().any(|r| r.cancel_first), "{small:#?}");
}
