//! The spec model against real QEMU tools: for images that `qemu-img`,
//! `qemu-io` and `qemu-nbd` make and modify, the model must call the image
//! valid, list the bitmaps exactly as `qemu-img info` does, and compute
//! the same dirty ranges that QEMU exports over NBD.
//!
//! These tests need QEMU's tools (qemu-img, qemu-io, qemu-nbd) and fail,
//! naming the missing tool, when they are absent: they never skip.

#[path = "common/qemu.rs"]
mod qemu;

use qemu::{BitmapOp, ConvertOpts, CreateOpts};
use sha2::{Digest, Sha256};
use spec_model::{ExtensionState, Model, Report, Severity, Verdict};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

type Ranges = Vec<(u64, u64)>;

/// A scratch directory holding the images of one test.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("qemu-model")
                .tempdir()
                .expect("cannot create a temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh qcow2 image made by `qemu-img create`.
    fn image(&self, name: &str, size: u64, opts: &CreateOpts) -> PathBuf {
        let p = self.path(name);
        qemu::create(&p, size, opts).unwrap();
        p
    }
}

fn v3(cluster_size: u64) -> CreateOpts {
    CreateOpts::cluster_size(cluster_size)
}

fn add(path: &Path, name: &str, granularity: Option<u64>) {
    qemu::bitmap(path, name, &BitmapOp::add(granularity)).unwrap();
}

fn add_disabled(path: &Path, name: &str, granularity: Option<u64>) {
    qemu::bitmap(
        path,
        name,
        &BitmapOp::Add {
            granularity,
            disabled: true,
        },
    )
    .unwrap();
}

/// Writes each `(offset, length)` with qemu-io, one process for all.
fn write(path: &Path, writes: &[(u64, u64)]) {
    let cmds: Vec<String> = writes
        .iter()
        .enumerate()
        .map(|(i, (o, l))| format!("write -P 0x{:02x} {o} {l}", 0x11 + i % 200))
        .collect();
    qemu::qemu_io(path, &cmds).unwrap();
}

/// The dirty ranges a bitmap of granularity `g` must show after `writes`
/// (each write dirties every granule it touches), clipped to `size`.
fn expected_dirty(writes: &[(u64, u64)], g: u64, size: u64) -> Ranges {
    qemu::merge_ranges(
        writes
            .iter()
            .filter(|(_, l)| *l > 0)
            .map(|&(o, l)| (o / g * g, (o + l).div_ceil(g).saturating_mul(g).min(size)))
            .collect(),
    )
}

/// `ranges` re-expressed at a coarser (or equal) granularity `g`.
fn coarsen(ranges: &[(u64, u64)], g: u64, size: u64) -> Ranges {
    expected_dirty(
        &ranges.iter().map(|&(a, b)| (a, b - a)).collect::<Vec<_>>(),
        g,
        size,
    )
}

fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    qemu::merge_ranges(a.iter().chain(b).copied().collect())
}

fn open_model(path: &Path) -> Model<File> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Model::open(f).unwrap_or_else(|e| panic!("model cannot read {}: {e}", path.display()))
}

fn describe_findings(r: &Report) -> String {
    r.findings
        .iter()
        .map(|f| {
            format!(
                "  {} [{:?}] @{:#x}: {}",
                f.rule.id(),
                f.severity,
                f.offset,
                f.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_valid(path: &Path, r: &Report) {
    assert_eq!(
        r.verdict,
        Verdict::Valid,
        "model verdict for QEMU-made {} is {:?}; findings:\n{}",
        path.display(),
        r.verdict,
        describe_findings(r)
    );
}

/// The bit contents implied by merged dirty `ranges`, laid out as the
/// spec's bitmap data (LSB first, `ceil(ceil(size/g)/8)` bytes).
fn bytes_from_ranges(ranges: &[(u64, u64)], g: u64, size: u64) -> Vec<u8> {
    let nbits = size.div_ceil(g);
    let mut out = vec![0u8; nbits.div_ceil(8) as usize];
    for &(a, b) in ranges {
        for bit in a / g..b.div_ceil(g) {
            out[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    out
}

/// Everything the model and QEMU must agree on for a valid image with a
/// consistent (or absent) bitmaps extension. Returns each usable bitmap's
/// dirty ranges by name.
fn assert_agrees(path: &Path) -> BTreeMap<String, Ranges> {
    let mut model = open_model(path);
    let report = model.report().clone();
    assert_valid(path, &report);

    let info = qemu::info_json(path).unwrap();
    let size = info.virtual_size;

    // The qemu-img check cross-check: QEMU finds the image clean, and the
    // model counts the same number of leaked clusters (none).
    let check = qemu::check_json(path).unwrap();
    assert!(
        check.check_errors == 0 && check.corruptions == 0,
        "qemu-img check finds errors in {}: {check:?}",
        path.display()
    );
    assert_eq!(
        model.analysis().refcounts.leaked_clusters,
        check.leaks,
        "leaked clusters: model vs qemu-img check for {}",
        path.display()
    );

    // Names, granularities and flags, in directory order.
    let ours: Vec<(String, u64, bool, bool)> = report
        .bitmaps
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                1u64 << b.granularity_bits,
                b.flags.in_use,
                b.flags.auto,
            )
        })
        .collect();
    let theirs: Vec<(String, u64, bool, bool)> = info
        .bitmaps()
        .iter()
        .map(|b| (b.name.clone(), b.granularity, b.in_use(), b.auto()))
        .collect();
    assert_eq!(
        ours,
        theirs,
        "bitmaps (name, granularity, in_use, auto): model vs qemu-img info for {}",
        path.display()
    );
    let expected_state = if theirs.is_empty() {
        ExtensionState::Absent
    } else {
        ExtensionState::Consistent
    };
    assert_eq!(report.bitmaps_extension, expected_state);

    let mut all = BTreeMap::new();
    for (i, b) in report.bitmaps.iter().enumerate() {
        assert!(!b.flags.extra_data_compatible, "QEMU never sets bit 2");
        assert_eq!(b.usable, !b.flags.in_use, "bitmap {}: usable", b.name);
        if !b.usable {
            assert_eq!(model.dirty_ranges(i).unwrap(), None);
            continue;
        }
        let g = 1u64 << b.granularity_bits;
        let ours = model
            .dirty_ranges(i)
            .unwrap()
            .expect("usable bitmap has contents");
        let theirs = qemu::nbd_dirty_ranges(path, &b.name).unwrap();
        assert_eq!(
            ours,
            theirs,
            "dirty ranges of bitmap {:?} (granularity {g}): model vs qemu-nbd in {}",
            b.name,
            path.display()
        );
        for &(a, e) in &ours {
            assert!(a < e && a % g == 0, "range start {a} of {:?}", b.name);
            assert!(e % g == 0 || e == size, "range end {e} of {:?}", b.name);
            assert!(e <= size, "range end {e} past the virtual size");
        }
        let bits: u64 = ours.iter().map(|&(a, e)| e.div_ceil(g) - a / g).sum();
        assert_eq!(b.contents.set_bits, Some(bits), "set_bits of {:?}", b.name);
        let bytes = bytes_from_ranges(&ours, g, size);
        assert_eq!(
            model.bitmap_bytes(i).unwrap().as_deref(),
            Some(&bytes[..]),
            "bitmap_bytes of {:?}",
            b.name
        );
        assert_eq!(
            b.contents.content_sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&bytes)).as_str()),
            "content_sha256 of {:?}",
            b.name
        );
        all.insert(b.name.clone(), ours);
    }
    all
}

/// Adds each bitmap of `bitmaps` (name, granularity) to `img`, a disk of
/// `size` bytes, writes `w`, then checks that the model agrees with QEMU
/// and that each bitmap holds exactly the granules `w` touched.
fn bitmaps_track_writes(img: &Path, size: u64, bitmaps: &[(&str, u64)], w: &[(u64, u64)]) {
    for (name, g) in bitmaps {
        add(img, name, Some(*g));
    }
    write(img, w);
    let got = assert_agrees(img);
    for (name, g) in bitmaps {
        assert_ranges(&got, name, &expected_dirty(w, *g, size));
    }
}

fn assert_ranges(got: &BTreeMap<String, Ranges>, name: &str, want: &[(u64, u64)]) {
    let got = got
        .get(name)
        .unwrap_or_else(|| panic!("no usable bitmap {name:?} in {got:?}"));
    assert_eq!(got, want, "dirty ranges of {name:?}");
}

// ---------------------------------------------------------------------------

/// Bitmaps of several granularities on an image of `cluster_size`, with
/// small scattered writes.
fn cluster_size_case(cluster_size: u64, size: u64) {
    let s = Scratch::new();
    let img = s.image("cs.qcow2", size, &v3(cluster_size));
    add(&img, "default", None);
    add(&img, "g512", Some(512));
    add(&img, "g64k", Some(64 * KIB));
    add(&img, "g2m", Some(2 * MIB));
    let writes = [
        (0, 1),
        (cluster_size - 1, 2),
        (3 * cluster_size + 100, 3 * cluster_size),
        (size / 2 + 12345, 5000),
        (size - 1000, 1000),
    ];
    write(&img, &writes);
    let got = assert_agrees(&img);
    let info = qemu::info_json(&img).unwrap();
    assert_eq!(info.cluster_size, Some(cluster_size));
    for b in info.bitmaps() {
        assert_ranges(&got, &b.name, &expected_dirty(&writes, b.granularity, size));
    }
}

#[test]
fn cluster_size_512() {
    cluster_size_case(512, 64 * MIB + 7 * 512);
}

#[test]
fn cluster_size_64k() {
    cluster_size_case(64 * KIB, GIB + 3 * 512);
}

#[test]
fn cluster_size_2m() {
    cluster_size_case(2 * MIB, 4 * GIB + 512);
}

/// `bitmap --add -g` for 512, 4K, 64K, 1M and 2M, written at scattered
/// unaligned offsets, including the last, partial granule of a virtual
/// size that no granularity above 512 divides.
#[test]
fn add_granularities_with_unaligned_writes() {
    let s = Scratch::new();
    let size = 3 * GIB + 1536;
    let img = s.image("gran.qcow2", size, &v3(64 * KIB));
    let grans = [512, 4 * KIB, 64 * KIB, MIB, 2 * MIB];
    for g in grans {
        add(&img, &format!("g{g}"), Some(g));
    }
    let writes = [
        (1, 1),
        (4095, 2),
        (65535, 3),
        (MIB - 7, 14),
        (GIB + 777, 70000),
        (2 * GIB - 100, 300),
        (size - 1536 - 10, 20),
        (size - 700, 700),
    ];
    write(&img, &writes);
    let got = assert_agrees(&img);
    assert_eq!(got.len(), grans.len());
    for g in grans {
        let want = expected_dirty(&writes, g, size);
        assert_eq!(want.last().unwrap().1, size, "last granule is partial");
        assert_ranges(&got, &format!("g{g}"), &want);
    }
}

/// `--disable` stops recording, `--enable` resumes it, and a bitmap added
/// with `--add --disable` never records.
#[test]
fn disable_and_enable() {
    let s = Scratch::new();
    let size = 256 * MIB + 512;
    let img = s.image("toggle.qcow2", size, &v3(64 * KIB));
    add(&img, "always", Some(4 * KIB));
    add(&img, "paused", Some(4 * KIB));
    add_disabled(&img, "never", Some(64 * KIB));

    let a = [(10_000, 100), (100 * MIB + 3, 5)];
    write(&img, &a);
    qemu::bitmap(&img, "paused", &BitmapOp::Disable).unwrap();
    let b = [(50 * MIB, 4 * KIB + 1), (size - 10, 10)];
    write(&img, &b);

    let got = assert_agrees(&img);
    let g = 4 * KIB;
    let ab = [&a[..], &b[..]].concat();
    assert_ranges(&got, "always", &expected_dirty(&ab, g, size));
    assert_ranges(&got, "paused", &expected_dirty(&a, g, size));
    assert_ranges(&got, "never", &[]);
    let flags: Vec<bool> = open_model(&img)
        .report()
        .bitmaps
        .iter()
        .map(|b| b.flags.auto)
        .collect();
    assert_eq!(flags, [true, false, false]);

    qemu::bitmap(&img, "paused", &BitmapOp::Enable).unwrap();
    qemu::bitmap(&img, "never", &BitmapOp::Enable).unwrap();
    let c = [(200 * MIB + 1, 70 * KIB)];
    write(&img, &c);
    let got = assert_agrees(&img);
    let abc = [&ab[..], &c[..]].concat();
    let ac = [&a[..], &c[..]].concat();
    assert_ranges(&got, "always", &expected_dirty(&abc, g, size));
    assert_ranges(&got, "paused", &expected_dirty(&ac, g, size));
    assert_ranges(&got, "never", &expected_dirty(&c, 64 * KIB, size));
}

/// `--merge` within one image (finer into coarser, coarser into finer)
/// and from another image (`-b`).
#[test]
fn merge_bitmaps() {
    let s = Scratch::new();
    let size = 512 * MIB + 1536;
    let x = s.image("x.qcow2", size, &v3(64 * KIB));
    let y = s.image("y.qcow2", size, &v3(64 * KIB));
    add(&x, "fine", Some(4 * KIB));
    add_disabled(&x, "coarse", Some(MIB));
    add_disabled(&x, "target", Some(64 * KIB));
    add(&y, "other", Some(512));

    let wx = [(3 * MIB + 5, 10), (300 * MIB - 1, 2), (size - 5, 5)];
    let wy = [(7, 9), (100 * MIB + 4097, 8192)];
    write(&x, &wx);
    write(&y, &wy);

    qemu::bitmap(&x, "coarse", &BitmapOp::merge("fine")).unwrap();
    qemu::bitmap(&x, "target", &BitmapOp::merge("fine")).unwrap();
    qemu::bitmap(
        &x,
        "target",
        &BitmapOp::Merge {
            source: "other".into(),
            source_image: Some(y.clone()),
        },
    )
    .unwrap();
    // A coarse bitmap merged into a finer one sets every fine bit that
    // its coarse granules cover.
    qemu::bitmap(&x, "fine", &BitmapOp::merge("coarse")).unwrap();

    let got = assert_agrees(&x);
    let fine = expected_dirty(&wx, 4 * KIB, size);
    let coarse = coarsen(&fine, MIB, size);
    assert_ranges(&got, "coarse", &coarse);
    assert_ranges(&got, "fine", &coarsen(&coarse, 4 * KIB, size));
    let other = expected_dirty(&wy, 512, size);
    assert_ranges(
        &got,
        "target",
        &coarsen(&union(&fine, &other), 64 * KIB, size),
    );
    // The source image is unchanged.
    let got_y = assert_agrees(&y);
    assert_ranges(&got_y, "other", &other);
}

/// `--clear` empties a bitmap; later writes are recorded afresh.
#[test]
fn clear_then_write() {
    let s = Scratch::new();
    let size = GIB;
    let img = s.image("clear.qcow2", size, &v3(64 * KIB));
    add(&img, "b", Some(64 * KIB));
    add(&img, "kept", Some(64 * KIB));
    let w1 = [(0, 1), (GIB - 1, 1), (300 * MIB, 3 * MIB)];
    write(&img, &w1);
    qemu::bitmap(&img, "b", &BitmapOp::Clear).unwrap();
    let got = assert_agrees(&img);
    assert_ranges(&got, "b", &[]);
    assert_ranges(&got, "kept", &expected_dirty(&w1, 64 * KIB, size));

    let w2 = [(5 * MIB + 17, 1)];
    write(&img, &w2);
    let got = assert_agrees(&img);
    assert_ranges(&got, "b", &expected_dirty(&w2, 64 * KIB, size));
}

/// `--remove` drops one directory entry; removing the last bitmap drops
/// the extension itself.
#[test]
fn remove_bitmaps() {
    let s = Scratch::new();
    let size = 100 * MIB;
    let img = s.image("rm.qcow2", size, &v3(64 * KIB));
    for (n, g) in [("one", 512), ("two", 4 * KIB), ("three", 2 * MIB)] {
        add(&img, n, Some(g));
    }
    let w = [(12345, 6789)];
    write(&img, &w);
    qemu::bitmap(&img, "two", &BitmapOp::Remove).unwrap();
    let got = assert_agrees(&img);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["one", "three"]);
    let names: Vec<String> = open_model(&img)
        .report()
        .bitmaps
        .iter()
        .map(|b| b.name.clone())
        .collect();
    assert_eq!(names, ["one", "three"], "directory order");
    assert_ranges(&got, "one", &expected_dirty(&w, 512, size));

    qemu::bitmap(&img, "one", &BitmapOp::Remove).unwrap();
    qemu::bitmap(&img, "three", &BitmapOp::Remove).unwrap();
    let got = assert_agrees(&img);
    assert!(got.is_empty());
    let model = open_model(&img);
    assert_eq!(model.report().bitmaps_extension, ExtensionState::Absent);
    assert!(model.report().bitmaps.is_empty());

    // Removing a bitmap that does not exist fails, naming it.
    let out = qemu::bitmap_unchecked(&img, "two", &BitmapOp::Remove).unwrap();
    assert!(!out.status.success(), "{}", out.failure_message());
}

/// `qemu-img convert --bitmaps` copies names, granularities, enabled state
/// and contents.
#[test]
fn convert_copies_bitmaps() {
    let s = Scratch::new();
    let size = 2 * GIB + 512;
    let src = s.image("src.qcow2", size, &v3(64 * KIB));
    add(&src, "on", Some(4 * KIB));
    add(&src, "off", Some(MIB));
    let w1 = [(1, 2), (GIB + 3, 100_000)];
    write(&src, &w1);
    qemu::bitmap(&src, "off", &BitmapOp::Disable).unwrap();
    let w2 = [(size - 1, 1)];
    write(&src, &w2);
    let before = assert_agrees(&src);

    let dst = s.path("dst.qcow2");
    qemu::convert_with_bitmaps(&src, &dst).unwrap();
    let after = assert_agrees(&dst);
    assert_eq!(before, after, "bitmap contents after convert --bitmaps");
    let src_info = qemu::info_json(&src).unwrap();
    let dst_info = qemu::info_json(&dst).unwrap();
    assert_eq!(src_info.bitmaps(), dst_info.bitmaps());
    let all = [&w1[..], &w2[..]].concat();
    assert_ranges(&after, "on", &expected_dirty(&all, 4 * KIB, size));
    assert_ranges(&after, "off", &expected_dirty(&w1, MIB, size));
}

/// A version 2 image (`compat=0.10`): no bitmaps extension, and qemu-img
/// refuses to add one.
#[test]
fn v2_image_has_no_bitmaps() {
    let s = Scratch::new();
    let opts = CreateOpts {
        cluster_size: Some(64 * KIB),
        compat: Some("0.10".into()),
        ..CreateOpts::default()
    };
    let img = s.image("v2.qcow2", 64 * MIB, &opts);
    write(&img, &[(1000, 5000)]);
    let info = qemu::info_json(&img).unwrap();
    assert_eq!(info.compat(), Some("0.10"));

    let out = qemu::bitmap_unchecked(&img, "b", &BitmapOp::add(None)).unwrap();
    assert!(
        !out.status.success(),
        "qemu-img added a bitmap to a v2 image: {}",
        out.command_line
    );
    assert!(out.stderr.contains("v2"), "{}", out.failure_message());

    let got = assert_agrees(&img);
    assert!(got.is_empty());
    let r = open_model(&img).report().clone();
    assert_eq!(r.bitmaps_extension, ExtensionState::Absent);
    assert!(r.findings.is_empty(), "{}", describe_findings(&r));
}

/// Downgrading a v3 image with bitmaps (`qemu-img amend -o compat=0.10`)
/// keeps the bitmaps extension in a v2 header, where it can never be
/// consistent: QEMU then ignores the bitmaps (and warns), and the first
/// read-write open drops the extension, leaking its clusters.
#[test]
fn v3_with_bitmaps_downgraded_to_v2() {
    let s = Scratch::new();
    let size = 64 * MIB;
    let img = s.image("down.qcow2", size, &v3(64 * KIB));
    add(&img, "b", Some(64 * KIB));
    write(&img, &[(0, 4096)]);
    assert_agrees(&img);

    let out = qemu::amend_unchecked(&img, "compat=0.10").unwrap();
    assert!(out.status.success(), "{}", out.failure_message());
    let info = qemu::info_json(&img).unwrap();
    assert_eq!(info.compat(), Some("0.10"));
    assert!(info.bitmaps().is_empty(), "QEMU lists v2 bitmaps");

    let r = open_model(&img).report().clone();
    assert_valid(&img, &r);
    assert_eq!(r.bitmaps_extension, ExtensionState::Inconsistent);
    assert!(
        r.findings_of("bitmaps.v2-image").next().is_some(),
        "no bitmaps.v2-image finding:\n{}",
        describe_findings(&r)
    );
    assert_eq!(r.bitmaps.len(), 1);
    assert!(!r.bitmaps[0].usable);
    assert_eq!(r.bitmaps[0].contents.set_bits, None);
    // QEMU will not export a bitmap it ignores.
    let err = qemu::nbd_dirty_ranges(&img, "b").unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");

    // A read-write open removes the extension; its clusters leak.
    write(&img, &[(8192, 4096)]);
    let model = open_model(&img);
    let r = model.report().clone();
    assert_valid(&img, &r);
    assert_eq!(r.bitmaps_extension, ExtensionState::Absent);
    let check = qemu::check_json(&img).unwrap();
    assert!(check.leaks > 0, "{check:?}");
    assert_eq!(check.corruptions, 0);
    assert_eq!(model.analysis().refcounts.leaked_clusters, check.leaks);
    assert!(
        r.findings.iter().all(|f| f.severity == Severity::Leak),
        "{}",
        describe_findings(&r)
    );
}

/// Bitmaps next to internal snapshots: writes after a snapshot copy
/// clusters on write, and every write is still recorded.
#[test]
fn internal_snapshots_with_bitmaps() {
    let s = Scratch::new();
    let size = GIB + 512;
    let img = s.image("snap.qcow2", size, &v3(64 * KIB));
    add(&img, "early", Some(4 * KIB));
    let w1 = [(0, 100 * KIB), (GIB, 512)];
    write(&img, &w1);
    qemu::snapshot_create(&img, "s1").unwrap();
    let w2 = [(50 * KIB, 10), (GIB + 100, 400)];
    write(&img, &w2);
    add(&img, "late", Some(64 * KIB));
    let w3 = [(700 * MIB + 1, 1)];
    write(&img, &w3);
    qemu::snapshot_create(&img, "s2").unwrap();

    let info = qemu::info_json(&img).unwrap();
    assert_eq!(
        info.snapshots
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["s1", "s2"]
    );
    let got = assert_agrees(&img);
    let all = [&w1[..], &w2[..], &w3[..]].concat();
    assert_ranges(&got, "early", &expected_dirty(&all, 4 * KIB, size));
    assert_ranges(&got, "late", &expected_dirty(&w3, 64 * KIB, size));
}

/// Extended L2 entries (subclusters of 2 KiB in 64 KiB clusters).
#[test]
fn extended_l2_64k() {
    let s = Scratch::new();
    let size = GIB + 1024;
    let opts = CreateOpts {
        cluster_size: Some(64 * KIB),
        extended_l2: Some(true),
        ..CreateOpts::default()
    };
    let img = s.image("xl2.qcow2", size, &opts);
    let info = qemu::info_json(&img).unwrap();
    assert_eq!(
        info.format_specific.as_ref().unwrap().data.extended_l2,
        Some(true)
    );
    for g in [512, 2 * KIB, 64 * KIB] {
        add(&img, &format!("g{g}"), Some(g));
    }
    let w = [
        (2048 + 1, 10),
        (6 * KIB, 2 * KIB),
        (64 * KIB - 1, 2),
        (GIB - 3000, 4000),
        (size - 512, 512),
    ];
    write(&img, &w);
    let got = assert_agrees(&img);
    for g in [512, 2 * KIB, 64 * KIB] {
        assert_ranges(&got, &format!("g{g}"), &expected_dirty(&w, g, size));
    }
}

/// A compressed image (`qemu-img convert -c`), bitmaps added afterwards,
/// then writes over compressed clusters.
#[test]
fn compressed_image_then_bitmaps() {
    let s = Scratch::new();
    let size = 128 * MIB + 512;
    let plain = s.image("plain.qcow2", size, &v3(64 * KIB));
    write(
        &plain,
        &[(0, 256 * KIB), (64 * MIB, 64 * KIB), (size - 4096, 4096)],
    );
    let img = s.path("comp.qcow2");
    qemu::convert(
        &plain,
        &img,
        &ConvertOpts {
            source_format: Some("qcow2".into()),
            compress: true,
            create: v3(64 * KIB),
            ..ConvertOpts::default()
        },
    )
    .unwrap();
    assert!(
        open_model(&img).analysis().mapping.compressed_clusters > 0,
        "convert -c made no compressed clusters"
    );
    let w = [(100 * KIB + 3, 10), (64 * MIB + 65535, 2), (size - 1, 1)];
    bitmaps_track_writes(&img, size, &[("a", 4 * KIB), ("b", 64 * KIB)], &w);
}

/// A writer killed while the image is open leaves its bitmaps `in_use`:
/// present, listed with QEMU's "in-use" flag, and not usable.
#[test]
fn killed_writer_leaves_bitmaps_in_use() {
    let s = Scratch::new();
    let img = s.image("crash.qcow2", 64 * MIB, &v3(64 * KIB));
    add(&img, "b", Some(64 * KIB));
    let out = qemu::qemu_io_unchecked(&img, &["write 0 4k", "sigraise 9"]).unwrap();
    assert!(!out.status.success(), "qemu-io survived sigraise 9");

    let info = qemu::info_json(&img).unwrap();
    assert_eq!(info.bitmaps().len(), 1);
    assert!(info.bitmaps()[0].in_use(), "{:?}", info.bitmaps());
    let mut model = open_model(&img);
    let r = model.report().clone();
    assert_valid(&img, &r);
    assert_eq!(r.bitmaps_extension, ExtensionState::Consistent);
    assert!(r.bitmaps[0].flags.in_use && r.bitmaps[0].flags.auto);
    assert!(!r.bitmaps[0].usable);
    assert!(r.findings_of("bitmaps.dir.in-use").next().is_some());
    assert_eq!(model.dirty_ranges(0).unwrap(), None);
    assert_eq!(model.bitmap_bytes(0).unwrap(), None);
    // QEMU refuses to export an in-use bitmap.
    assert!(qemu::nbd_dirty_ranges(&img, "b").is_err());
}

/// A missing tool is a clear error, never a skip.
#[test]
fn missing_tool_is_a_clear_error() {
    let all_found: Vec<_> = [qemu::Tool::Img, qemu::Tool::Io, qemu::Tool::Nbd]
        .into_iter()
        .map(|t| t.locate().map_err(|e| format!("{e:#}")))
        .collect();
    for r in &all_found {
        assert!(r.is_ok(), "{}", r.as_ref().unwrap_err());
    }
    // An image path that does not exist: the error names the command.
    let err = qemu::info_json(Path::new("/nonexistent/x.qcow2")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("qemu-img info") && msg.contains("/nonexistent/x.qcow2"),
        "{msg}"
    );
}

/// Forty bitmaps, one with the longest name QEMU allows (1023 bytes) and
/// names with a comma and non-ASCII letters, in 512-byte clusters: the
/// directory spans several clusters.
#[test]
fn many_bitmaps_long_names() {
    let s = Scratch::new();
    let size = 8 * MIB + 512;
    let img = s.image("many.qcow2", size, &v3(512));
    let mut names: Vec<String> = (0..37).map(|i| format!("bitmap-{i:02}")).collect();
    names.push("x".repeat(1023));
    names.push("a,b".into());
    names.push("día-ß".into());
    for (i, n) in names.iter().enumerate() {
        add(&img, n, Some(512 << (i % 5)));
        if i == 20 {
            write(&img, &[(3 * MIB + 1, 1)]);
        }
    }
    let w = [(0, 10), (size - 2, 2)];
    write(&img, &w);
    let model = open_model(&img);
    let dir = model.analysis().bitmaps_ext.as_ref().unwrap();
    assert!(dir.bitmap_directory_size > 2 * 512, "{dir:?}");
    let got = assert_agrees(&img);
    assert_eq!(got.len(), names.len());
    for (i, n) in names.iter().enumerate() {
        let g = 512 << (i % 5);
        let mut all = w.to_vec();
        if i <= 20 {
            all.push((3 * MIB + 1, 1));
        }
        assert_ranges(&got, n, &expected_dirty(&all, g, size));
    }
}

/// Writes large enough to fill whole bitmap data clusters (512-byte
/// clusters, 512-byte granularity: one data cluster covers 2 MiB).
#[test]
fn full_bitmap_data_clusters() {
    let s = Scratch::new();
    let size = 16 * MIB;
    let img = s.image("full.qcow2", size, &v3(512));
    let w = [(2 * MIB - 512, 5 * MIB + 1024), (size - 2 * MIB, 2 * MIB)];
    bitmaps_track_writes(&img, size, &[("fine", 512), ("coarse", 64 * KIB)], &w);
}

/// Refcount widths of 1 and 64 bits.
#[test]
fn refcount_widths() {
    let s = Scratch::new();
    let size = 32 * MIB;
    for bits in [1, 64] {
        let opts = CreateOpts {
            cluster_size: Some(4 * KIB),
            extra: vec![format!("refcount_bits={bits}")],
            ..CreateOpts::default()
        };
        let img = s.image(&format!("r{bits}.qcow2"), size, &opts);
        let w = [(4095, 2), (size - 4096, 1)];
        bitmaps_track_writes(&img, size, &[("b", 4 * KIB)], &w);
    }
}

/// An external raw data file (`data_file_raw=on`: autoclear bit 1 next
/// to the bitmaps' bit 0); the bitmaps stay in the qcow2 file.
#[test]
fn external_data_file() {
    let s = Scratch::new();
    let size = 16 * MIB;
    let opts = CreateOpts {
        cluster_size: Some(64 * KIB),
        extra: vec![
            format!("data_file={}", s.path("data.raw").display()),
            "data_file_raw=on".into(),
        ],
        ..CreateOpts::default()
    };
    let img = s.image("ext.qcow2", size, &opts);
    let w = [(100, 5000), (size - 1, 1)];
    bitmaps_track_writes(&img, size, &[("b", 4 * KIB)], &w);
}

/// `qemu-img resize` grows and shrinks the bitmaps with the disk.
#[test]
fn resize_with_bitmaps() {
    let s = Scratch::new();
    let size = 10 * MIB;
    let img = s.image("resize.qcow2", size, &v3(64 * KIB));
    add(&img, "b", Some(4 * KIB));
    add(&img, "m", Some(MIB));
    write(&img, &[(10_000, 4096), (size - 1, 1)]);
    let grown = 20 * MIB + 512;
    resize(&img, grown, false);
    write(&img, &[(grown - 100, 100)]);
    let got = assert_agrees(&img);
    let w = [(10_000, 4096), (size - 1, 1), (grown - 100, 100)];
    assert_ranges(&got, "b", &expected_dirty(&w, 4 * KIB, grown));
    assert_ranges(&got, "m", &expected_dirty(&w, MIB, grown));

    let shrunk = 5 * MIB - 512;
    resize(&img, shrunk, true);
    let got = assert_agrees(&img);
    assert_ranges(&got, "b", &expected_dirty(&w[..1], 4 * KIB, shrunk));
    assert_ranges(&got, "m", &expected_dirty(&w[..1], MIB, shrunk));
}

fn resize(path: &Path, size: u64, shrink: bool) {
    let mut args = vec!["resize".to_string(), "-f".into(), "qcow2".into()];
    if shrink {
        args.push("--shrink".into());
    }
    args.push(path.display().to_string());
    args.push(size.to_string());
    qemu::run_tool(qemu::Tool::Img, &args).unwrap();
}

/// Granularities of 1 GiB and 2 GiB (QEMU's maximum) on a disk smaller
/// than one granule.
#[test]
fn huge_granularity_small_disk() {
    let s = Scratch::new();
    let size = 1536;
    let img = s.image("tiny.qcow2", size, &v3(64 * KIB));
    add(&img, "g1g", Some(GIB));
    add(&img, "g2g", Some(2 * GIB));
    add_disabled(&img, "idle", Some(2 * GIB));
    write(&img, &[(1000, 10)]);
    let got = assert_agrees(&img);
    assert_ranges(&got, "g1g", &[(0, size)]);
    assert_ranges(&got, "g2g", &[(0, size)]);
    assert_ranges(&got, "idle", &[]);
}

/// QEMU cannot add a bitmap to a zero-length disk; the image is left
/// without a bitmaps extension.
#[test]
fn zero_size_disk_refuses_bitmaps() {
    let s = Scratch::new();
    let img = s.image("zero.qcow2", 0, &v3(64 * KIB));
    let out = qemu::bitmap_unchecked(&img, "b", &BitmapOp::add(None)).unwrap();
    assert!(!out.status.success(), "{}", out.command_line);
    let got = assert_agrees(&img);
    assert!(got.is_empty());
}
