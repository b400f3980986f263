//! Incremental backup chains against the real `qemu-storage-daemon`:
//! a full backup, guest writes, incrementals in every mode
//! (`sync=bitmap` with each `bitmap-mode`, `sync=incremental`, pull mode
//! over NBD), each chain restored by the suite's own reader and compared
//! byte for byte with the disk, a failed job (blkdebug) leaving the
//! bitmap whole; and the check shown able to fail: an
//! incremental with a dirty cluster taken out is caught. A missing daemon
//! fails these tests.

#[path = "common/live.rs"]
mod live;

use conform::campaign::backup::chain::{Chain, Round};
use conform::campaign::backup::restore::Extents;
use conform::runner::adapters::qemu_live::backup::Mode;
use live::chain_options as opts;
use spec_model::semantics::Op;

fn w(offset: u64, len: u64) -> Op {
    Op::Write { offset, len }
}

/// A chain with writes, write-zeroes and a discard in every round.
fn hand_chain(mode: Mode, persistent: bool) -> Chain {
    Chain {
        size: 4 << 20,
        gbits: 16,
        persistent,
        mode,
        before: vec![w(0, 300_000), w(3 << 20, 4096)],
        rounds: vec![
            Round {
                ops: vec![w(65536, 10), w(1 << 20, 200_000)],
                restart: false,
                fail_first: false,
                ..Round::default()
            },
            Round {
                ops: vec![
                    Op::WriteZeroes {
                        offset: 0,
                        len: 65536,
                    },
                    w(2 << 20, 1),
                ],
                restart: persistent,
                // A job that fails first (where the mode keeps the bitmap).
                fail_first: true,
                ..Round::default()
            },
            Round {
                ops: vec![
                    Op::Discard {
                        offset: 1 << 20,
                        len: 131072,
                    },
                    w(4_000_000, 100_000),
                ],
                restart: false,
                fail_first: false,
                ..Round::default()
            },
        ],
    }
}

use live::run_in_scratch as run;

#[test]
fn chains_of_every_mode_restore_byte_for_byte() {
    for mode in Mode::ALL {
        for persistent in [false, true] {
            let chain = hand_chain(mode, persistent);
            let r = run(&chain, opts());
            assert!(
                !r.failed() && r.unstarted.is_none(),
                "{mode:?}: {:#?}",
                (&r.problems, &r.error, &r.points)
            );
            assert_eq!(r.counts.incrementals, 3, "{mode:?}");
            let failed = u64::from(mode.keeps_bitmap_on_failure());
            assert_eq!(
                r.counts.failed_jobs, failed,
                "{mode:?}: the injected failure"
            );
            assert_eq!(r.counts.restored, 4, "{mode:?}");
            assert_eq!(r.counts.bytes_compared, 4 * chain.size, "{mode:?}");
            // Every incremental held what the model required.
            for p in &r.points {
                assert!(p.held >= p.required, "{mode:?}: {p:?}");
                assert!(p.restored_equal, "{mode:?}: {p:?}");
            }
            // Each round wrote something, so each incremental required it.
            assert!(r.points[1..].iter().all(|p| p.required > 0), "{mode:?}");
        }
    }
}

#[test]
fn random_chains_of_every_mode_restore() {
    // Chain i of a seed runs mode i % 5: two of each.
    for index in 0..10 {
        let chain = Chain::random(7, index);
        let r = run(&chain, opts());
        assert!(
            !r.failed() && r.unstarted.is_none(),
            "chain {index} {chain:?}: {:#?}",
            (&r.problems, &r.error)
        );
        assert_eq!(r.counts.restored as usize, chain.rounds.len() + 1);
    }
}

/// Takes out the first cluster of every incremental that holds one.
fn drop_first(point: usize, x: &mut Extents) {
    if point > 0 && !x.is_empty() {
        x.remove(0);
    }
}

#[test]
fn an_incremental_missing_a_dirty_cluster_is_a_defect() {
    for mode in [Mode::BitmapOnSuccess, Mode::Pull] {
        let mut o = opts();
        o.tamper = Some(drop_first);
        let r = run(&hand_chain(mode, false), o);
        let what = format!("{mode:?}");
        live::assert_stopped_at_first_incremental(&r, &["lacks", "differs from the disk"], &what);
    }
}
