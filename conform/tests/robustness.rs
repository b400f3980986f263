//! Robustness of the model on hostile bytes: random byte-level mutations of
//! real images (made by qemu-img and qemu-io) never panic, and the peak heap
//! use of one check stays proportional to the file's size.

use cap::Cap;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use std::alloc::System;
use std::sync::Mutex;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Serialises allocation measurements: tests in this file run in threads.
static MEASURE: Mutex<()> = Mutex::new(());

mod common;
use common::seeds;

/// One byte-level mutation.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte.
    Flip { at: usize, mask: u8 },
    /// Overwrite 8 bytes at an 8-aligned spot with an interesting value.
    Word { at: usize, value: u64 },
    /// Overwrite 4 bytes (nb_bitmaps, sizes, lengths) with an interesting value.
    Half { at: usize, value: u32 },
    /// Cut the file.
    Truncate { at: usize },
    /// Append bytes.
    Extend { n: usize, fill: u8 },
}

const WORDS: &[u64] = &[
    0,
    1,
    0x200,
    0x1000,
    0x10000,
    u64::MAX,
    1 << 63,
    0x00ff_ffff_ffff_fe00,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0200,
];
const HALVES: &[u32] = &[0, 1, 2, 8, 24, 63, 64, 1023, 1024, 65535, 65536, u32::MAX];

impl Arbitrary for Mutation {
    fn arbitrary(g: &mut Gen) -> Self {
        let at = usize::arbitrary(g);
        match u8::arbitrary(g) % 8 {
            0..=2 => Mutation::Flip {
                at,
                mask: u8::arbitrary(g) | 1,
            },
            3 | 4 => Mutation::Word {
                at,
                value: if bool::arbitrary(g) {
                    *g.choose(WORDS).unwrap()
                } else {
                    u64::arbitrary(g)
                },
            },
            5 => Mutation::Half {
                at,
                value: *g.choose(HALVES).unwrap(),
            },
            6 => Mutation::Truncate { at },
            _ => Mutation::Extend {
                n: usize::arbitrary(g) % 4096,
                fill: u8::arbitrary(g),
            },
        }
    }
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    // Bias positions towards the first clusters, where most metadata is.
    let pos = |at: usize| {
        if at.is_multiple_of(2) {
            at % len.min(8192)
        } else {
            at % len
        }
    };
    match *m {
        Mutation::Flip { at, mask } => {
            let i = pos(at);
            if let Some(b) = bytes.get_mut(i) {
                *b ^= mask;
            }
        }
        Mutation::Word { at, value } => {
            let i = pos(at) & !7;
            if i + 8 <= bytes.len() {
                bytes[i..i + 8].copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::Half { at, value } => {
            let i = pos(at) & !3;
            if i + 4 <= bytes.len() {
                bytes[i..i + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::Truncate { at } => bytes.truncate(pos(at)),
        Mutation::Extend { n, fill } => bytes.extend(std::iter::repeat_n(fill, n)),
    }
}

/// Holds the measurement lock: every test of this file takes it first, so
/// no other test thread allocates while a peak is measured.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    MEASURE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Peak heap growth while checking `bytes` (caller holds [`exclusive`]).
fn peak_while_checking(bytes: &[u8]) -> (spec_model::Report, usize) {
    let before = ALLOC.allocated();
    // Cap the heap at a generous multiple of the file: an allocation sized
    // by a field's claim fails (and aborts the test) instead of succeeding.
    let limit = before + allowance(bytes.len());
    ALLOC.set_limit(limit).expect("set limit");
    let report = spec_model::check_bytes(bytes);
    let peak = ALLOC.allocated().saturating_sub(before);
    ALLOC.set_limit(usize::MAX).expect("reset limit");
    (report, peak)
}

/// What a check of a file of `len` bytes may allocate: a few copies of the
/// file's metadata plus a constant for buffers and findings.
fn allowance(len: usize) -> usize {
    4 * len + (8 << 20)
}

#[test]
fn seeds_are_valid_images() {
    let _x = exclusive();
    for (i, seed) in seeds().iter().enumerate() {
        let r = spec_model::check_bytes(seed);
        assert_eq!(
            r.verdict,
            spec_model::Verdict::Valid,
            "seed {i}: {:#?}",
            r.findings
        );
    }
}

#[test]
fn random_mutations_never_panic_and_allocate_in_proportion_to_the_file() {
    let _x = exclusive();
    fn prop(seed: usize, muts: Vec<Mutation>) -> TestResult {
        let seeds = seeds();
        let mut bytes = seeds[seed % seeds.len()].clone();
        for m in muts.iter().take(8) {
            apply(&mut bytes, m);
        }
        let (report, peak) = peak_while_checking(&bytes);
        // The verdict must agree with the findings (the contract's rule).
        TestResult::from_bool(
            peak <= allowance(bytes.len())
                && report.verdict == spec_model::Verdict::of(&report.findings),
        )
    }
    let tests = generator::spec::quickcheck_tests(3000);
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 2)
        .quickcheck(prop as fn(usize, Vec<Mutation>) -> TestResult);
}

/// Small files whose size fields claim enormous structures: judged without
/// a large allocation (the allocator cap would abort the test otherwise).
#[test]
fn huge_size_claims_do_not_allocate() {
    let _x = exclusive();
    let base = seeds()[0].clone();
    // Find the bitmaps extension (type 0x23852875) in the header cluster.
    let ext = base
        .windows(4)
        .position(|w| w == [0x23, 0x85, 0x28, 0x75])
        .expect("seed has a bitmaps extension");
    let data = ext + 8;
    let dir = u64::from_be_bytes(base[data + 16..data + 24].try_into().unwrap()) as usize;
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "nb_bitmaps = 2^32-1",
            Box::new(move |b| b[data..data + 4].copy_from_slice(&u32::MAX.to_be_bytes())),
        ),
        (
            "directory of 2^63 bytes",
            Box::new(move |b| b[data + 8..data + 16].copy_from_slice(&(1u64 << 63).to_be_bytes())),
        ),
        (
            "table of 2^32-1 entries",
            Box::new(move |b| b[dir + 8..dir + 12].copy_from_slice(&u32::MAX.to_be_bytes())),
        ),
        (
            "l1_size = 2^32-1",
            Box::new(|b| b[36..40].copy_from_slice(&u32::MAX.to_be_bytes())),
        ),
        (
            "refcount table of 2^32-1 clusters",
            Box::new(|b| b[56..60].copy_from_slice(&u32::MAX.to_be_bytes())),
        ),
        (
            "cluster_bits = 40",
            Box::new(|b| b[20..24].copy_from_slice(&40u32.to_be_bytes())),
        ),
        (
            "cluster_bits = 63",
            Box::new(|b| b[20..24].copy_from_slice(&63u32.to_be_bytes())),
        ),
        (
            "nb_snapshots = 2^32-1",
            Box::new(|b| b[60..64].copy_from_slice(&u32::MAX.to_be_bytes())),
        ),
        (
            "virtual size 2^64-1",
            Box::new(|b| b[24..32].copy_from_slice(&u64::MAX.to_be_bytes())),
        ),
    ];
    for (name, edit) in cases {
        let mut b = base.clone();
        b.resize(1 << 20, 0);
        edit(&mut b);
        let (report, peak) = peak_while_checking(&b);
        assert!(peak <= allowance(b.len()), "{name}: peak {peak}");
        assert_ne!(
            report.verdict,
            spec_model::Verdict::Valid,
            "{name} must be flagged: {:#?}",
            report.findings
        );
    }
}
