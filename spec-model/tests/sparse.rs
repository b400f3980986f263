//! The model on sparse files whose apparent size is huge (1 TiB and
//! 16 TiB - 4 KiB) and whose size fields are hostile, run under a capped
//! allocator: every check returns (a report, or a one-line
//! `CheckError::Limit`/`TooMany` naming the structure), never aborts, and
//! allocates no more than the cap allows (the cap fails any allocation
//! past it; a failed infallible allocation would abort the test).
//!
//! The files are the bundled example (made by qemu-img and qemu-io) with
//! a few header fields edited, extended with `set_len` (a hole).

use cap::Cap;
use spec_model::{CheckError, Model, Report, Revision, Verdict};
use std::alloc::System;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Serialises the capped sections: tests may run as threads of one process.
static CAPPED: Mutex<()> = Mutex::new(());

const EXAMPLE: &[u8] = include_bytes!("../../examples/bitmaps-example.qcow2");
const EMPTY_TABLE_2016: &[u8] =
    include_bytes!("../../corpus/images/revision--empty-table-2016--03.qcow2");

const MIB: usize = 1 << 20;
const TIB: u64 = 1 << 40;
const SIXTEEN_TIB_LESS_4K: u64 = (1 << 44) - 4096;

/// `base` with `edits` (offset, big-endian bytes) written over it,
/// extended to `len` bytes with a hole.
fn sparse(dir: &Path, name: &str, base: &[u8], edits: &[(u64, &[u8])], len: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    f.write_all(base).unwrap();
    for (at, bytes) in edits {
        f.seek(SeekFrom::Start(*at)).unwrap();
        f.write_all(bytes).unwrap();
    }
    f.set_len(len).unwrap();
    path
}

/// `base` with the big-endian u32 `value` at `at`, extended to `len`
/// bytes with a hole (a file named for the offset in `dir`).
fn with_u32(dir: &Path, base: &[u8], at: u64, value: u32, len: u64) -> PathBuf {
    sparse(
        dir,
        &format!("u32-at-{at:#x}"),
        base,
        &[(at, &value.to_be_bytes())],
        len,
    )
}

/// The example image with a 1 PiB virtual disk and `l1_size` L1 entries,
/// its L1 table moved to `l1_offset` if given, in a sparse terabyte file.
fn huge_l1(dir: &Path, name: &str, l1_size: u32, l1_offset: Option<u64>) -> PathBuf {
    let size = (1u64 << 50).to_be_bytes();
    let l1_size = l1_size.to_be_bytes();
    let l1_offset = l1_offset.map(u64::to_be_bytes);
    let mut edits: Vec<(u64, &[u8])> = vec![(24, &size), (36, &l1_size)];
    if let Some(o) = &l1_offset {
        edits.push((40, o));
    }
    sparse(dir, name, EXAMPLE, &edits, TIB)
}

/// Runs `f` with at most `bound` bytes more on the heap than before it.
fn capped<T>(bound: usize, f: impl FnOnce() -> T) -> T {
    let _guard = CAPPED.lock().unwrap_or_else(|e| e.into_inner());
    ALLOC.set_limit(ALLOC.allocated() + bound).unwrap();
    let out = f();
    ALLOC.set_limit(usize::MAX).unwrap();
    out
}

/// The data extent a caller would give for these files: the example's bytes.
fn extents(base: &[u8]) -> Vec<(u64, u64)> {
    vec![(0, base.len() as u64)]
}

fn check(path: &Path) -> Result<Report, CheckError> {
    Model::open(File::open(path).unwrap()).map(|m| m.report().clone())
}

fn check_skipping_holes(path: &Path, base: &[u8]) -> Result<Report, CheckError> {
    Model::open_with_data_extents(File::open(path).unwrap(), extents(base))
        .map(|m| m.report().clone())
}

fn json(r: &Report) -> String {
    serde_json::to_string(r).unwrap()
}

fn has(r: &Report, rule: &str) -> bool {
    r.findings.iter().any(|f| f.rule.id() == rule)
}

#[test]
fn a_valid_image_of_16_tib_less_4_kib_checks_as_the_image_itself_in_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse(dir.path(), "s16", EXAMPLE, &[], SIXTEEN_TIB_LESS_4K);
    let want = json(&spec_model::check_bytes(EXAMPLE));
    let got = capped(64 * MIB, || check(&path)).expect("checks");
    assert_eq!(got.verdict, Verdict::Valid);
    assert_eq!(json(&got), want);
    let got = capped(64 * MIB, || check_skipping_holes(&path, EXAMPLE)).expect("checks");
    assert_eq!(json(&got), want);
}

#[test]
fn a_terabyte_directory_for_two_bitmaps_is_judged_by_its_rule_without_reading_it() {
    // Two entries fill at most 2 * 4,295,032,856 bytes (the largest extra
    // data and name, padded): a directory size of about 1 TiB is
    // impossible, so it is `bitmaps.ext.directory-size` (and beyond
    // QEMU's 64 MiB, `bitmaps.ext.limits`), decided from the two entries.
    let dir = tempfile::tempdir().unwrap();
    let size = 0xFF_FFFA_D000u64;
    let path = sparse(
        dir.path(),
        "dir",
        EXAMPLE,
        &[(128, &size.to_be_bytes())],
        TIB,
    );
    let r = capped(64 * MIB, || check(&path)).expect("decided, not refused");
    assert_eq!(r.verdict, Verdict::Invalid, "{}", json(&r));
    assert!(has(&r, "bitmaps.ext.directory-size"), "{}", json(&r));
    assert!(has(&r, "bitmaps.ext.limits"), "{}", json(&r));
    assert_eq!(r.bitmaps.len(), 2, "both entries are read: {}", json(&r));
    // Only the 64 bytes the entries take are the directory's: no cluster
    // past its first is claimed for it (nor found unallocated).
    assert!(!has(&r, "refcount.unallocated"), "{}", json(&r));
    assert!(!has(&r, "refcount.overlap"), "{}", json(&r));
    let f = r
        .findings
        .iter()
        .find(|f| f.rule.id() == "bitmaps.ext.directory-size")
        .unwrap();
    assert!(
        f.message.contains("at most 8590065712 bytes for 2 entries"),
        "{}",
        f.message
    );
    // The same decision when the caller names the data extents.
    let again = capped(64 * MIB, || check_skipping_holes(&path, EXAMPLE)).unwrap();
    assert_eq!(json(&again), json(&r));
}

#[test]
fn qemu_limits_on_bitmaps_and_directory_bytes_hold_at_their_edges() {
    // (nb_bitmaps, bitmap_directory_size, beyond QEMU's limits?): 65,535
    // bitmaps and 1024 * 65,535 directory bytes are the last allowed.
    let cases: [(u32, u64, bool); 4] = [
        (65_535, 1024 * 65_535, false),
        (65_536, 1024 * 65_535, true),
        (2, 1024 * 65_535 + 8, true),
        (2, 1024 * 65_535, false),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (nb, size, beyond)) in cases.into_iter().enumerate() {
        let path = sparse(
            dir.path(),
            &format!("limits{i}"),
            EXAMPLE,
            &[(120, &nb.to_be_bytes()), (128, &size.to_be_bytes())],
            TIB,
        );
        let r = capped(256 * MIB, || check(&path)).expect("a report");
        assert_eq!(
            has(&r, "bitmaps.ext.limits"),
            beyond,
            "nb_bitmaps {nb}, size {size}: {}",
            json(&r)
        );
        // None of these sizes is what the entries fill.
        assert!(has(&r, "bitmaps.ext.directory-size") || has(&r, "bitmaps.dir.entry-bounds"));
        assert_eq!(r.verdict, Verdict::Invalid);
    }
}

#[test]
fn l1_size_2_28_in_a_sparse_terabyte_is_checked_in_256_mib() {
    let dir = tempfile::tempdir().unwrap();
    let path = huge_l1(dir.path(), "l1", 1 << 28, None);
    // The holes skipped, as the command line does (`SEEK_DATA`): reading
    // the 2 GiB of zeros would take seconds, not memory.
    let r = capped(256 * MIB, || check_skipping_holes(&path, EXAMPLE)).expect("checks");
    assert_eq!(r.verdict, Verdict::Invalid);
    assert!(has(&r, "header.l1-size"), "{}", json(&r));
}

#[test]
fn an_l1_table_of_2_gib_in_a_hole_is_walked_in_chunks() {
    // The table moved to 1 GiB, where nothing else lies: it is walked, a
    // chunk at a time, its hole skipped.
    let dir = tempfile::tempdir().unwrap();
    let path = huge_l1(dir.path(), "l1moved", 1 << 28, Some(1 << 30));
    let r = capped(64 * MIB, || check_skipping_holes(&path, EXAMPLE)).expect("checks");
    assert!(has(&r, "header.l1-size"), "{}", json(&r));
}

#[test]
fn skipping_holes_changes_nothing_but_the_time() {
    // A 256 MiB L1 table in a hole, read in 1 MiB chunks or skipped.
    let dir = tempfile::tempdir().unwrap();
    let path = huge_l1(dir.path(), "l1read", 1 << 25, Some(1 << 30));
    let skipped = capped(64 * MIB, || check_skipping_holes(&path, EXAMPLE)).expect("checks");
    let read = capped(64 * MIB, || check(&path)).expect("checks");
    assert!(has(&read, "header.l1-size"), "{}", json(&read));
    assert_eq!(json(&read), json(&skipped));
}

#[test]
fn a_refcount_table_of_4_gib_is_read_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_u32(dir.path(), EXAMPLE, 56, 1 << 20, SIXTEEN_TIB_LESS_4K);
    let r = capped(64 * MIB, || check_skipping_holes(&path, EXAMPLE)).expect("checks");
    assert_eq!(r.verdict, Verdict::Invalid);
    assert!(has(&r, "refcount.overlap"), "{}", json(&r));
}

#[test]
fn a_header_length_of_4_gib_keeps_at_most_2_mib() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_u32(dir.path(), EXAMPLE, 100, 0xFFFF_FFF8, SIXTEEN_TIB_LESS_4K);
    let r = capped(64 * MIB, || check(&path)).expect("checks");
    assert_eq!(r.verdict, Verdict::Invalid);
}

#[test]
fn billions_of_snapshots_in_a_hole_stop_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let edits: &[(u64, &[u8])] = &[
        (60, &u32::MAX.to_be_bytes()),
        (64, &(1u64 << 30).to_be_bytes()),
    ];
    let path = sparse(dir.path(), "snaps", EXAMPLE, edits, TIB);
    let err = capped(64 * MIB, || check(&path)).expect_err("beyond the limit");
    assert!(
        matches!(err, CheckError::TooMany { structure: "snapshot table", offset, .. } if offset == 1 << 30),
        "{err}"
    );
}

#[test]
fn a_bitmap_table_of_32_gib_never_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_u32(dir.path(), EXAMPLE, 0x43008, u32::MAX, TIB);
    let r = capped(64 * MIB, || check(&path));
    assert!(
        matches!(&r, Ok(rep) if rep.verdict == Verdict::Invalid)
            || matches!(
                &r,
                Err(CheckError::Limit {
                    structure: "bitmap table",
                    ..
                })
            ),
        "{r:?}"
    );
}

#[test]
fn a_2016_draft_table_of_2_32_entries_never_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_u32(dir.path(), EMPTY_TABLE_2016, 0x12008, u32::MAX, TIB);
    let d = capped(256 * MIB, || {
        spec_model::drafts::dump_draft(Revision::EmptyTable2016, File::open(&path).unwrap())
    })
    .expect("reads");
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains("work-limit"), "{json}");
}
