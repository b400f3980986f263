//! The logic of every fuzz target, as plain functions: libFuzzer calls them
//! through the thin wrappers in `fuzz_targets/`, and `cargo test` calls them
//! on stable for a bounded number of iterations (`tests/bounded.rs`).
//! Each function panics exactly when the property it checks is broken.
//!
//! A wrapper is `fuzz_main!(TARGET)`: under `cargo fuzz` (`--cfg fuzzing`)
//! the libFuzzer entry point, otherwise a `main` that replays the files
//! given as arguments ([`replay`]).

pub mod guest;
pub mod pack;
pub mod replay;

use arbitrary::Unstructured;
use generator::{build, expected, Config, ImageSpec};
use spec_model::{check_bytes as model_check, Revision, Severity, Verdict};

#[cfg(fuzzing)]
#[doc(hidden)]
pub use libfuzzer_sys;

/// The body of a fuzz target's binary: `fuzz_targets::fuzz_main!(NAME);`
/// runs the library function `NAME` under libFuzzer when built by
/// `cargo fuzz`, and over the files named on the command line otherwise.
#[macro_export]
macro_rules! fuzz_main {
    ($target:ident) => {
        #[cfg(fuzzing)]
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| $crate::$target(data));
        /// AddressSanitizer's defaults for this target (`ASAN_OPTIONS`
        /// still overrides them): no stack-use-after-return detection and
        /// no heap quarantine. Both only catch uses of memory after it was
        /// freed (a pointer into a returned stack frame; a freed heap chunk
        /// read before it is handed out again), which the safe Rust under
        /// test cannot make: spec-model forbids `unsafe` and the borrow
        /// checker rules out dangling references. Buffer overflows are
        /// still caught by the redzones. The fake stacks cost check_bytes
        /// about a quarter of its speed, and the 256 MiB quarantine about
        /// a seventh, as every allocation then lands on memory that has
        /// left the cache (bench/RESULTS.md, "check_bytes under ASan").
        #[cfg(fuzzing)]
        #[no_mangle]
        pub extern "C" fn __asan_default_options() -> *const std::os::raw::c_char {
            c"detect_stack_use_after_return=0:quarantine_size_mb=0".as_ptr()
        }
        #[cfg(not(fuzzing))]
        fn main() -> std::process::ExitCode {
            $crate::replay::main(stringify!($target), $crate::$target)
        }
    };
}

/// Arbitrary bytes into the model: never panics, and the verdict agrees
/// with the findings (bounded allocation is checked by the robustness tests
/// and by libFuzzer's `-rss_limit_mb`).
pub fn check_bytes(data: &[u8]) {
    let r = model_check(data);
    assert_eq!(
        r.verdict,
        Verdict::of(&r.findings),
        "verdict disagrees with findings"
    );
    for f in &r.findings {
        assert!(
            f.rule.severities().contains(&f.severity),
            "{} as {:?}",
            f.rule,
            f.severity
        );
    }
    let bitmap_error = r
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error && f.rule.id().starts_with("bitmaps."));
    for b in &r.bitmaps {
        assert!(
            !(bitmap_error && b.usable),
            "bitmap {:?} usable in an invalid extension",
            b.name
        );
        assert_eq!(
            b.usable,
            b.contents.content_sha256.is_some(),
            "contents only for usable bitmaps"
        );
        assert_eq!(
            b.usable,
            b.contents.set_bits.is_some(),
            "set_bits only for usable bitmaps"
        );
    }
}

/// An arbitrary ImageSpec, built and checked: valid (only notes and limits
/// the spec implies) and with exactly the spec's bitmaps.
pub fn roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(spec) = ImageSpec::arbitrary_with(&mut u, &Config::default()) else {
        return;
    };
    let Ok(built) = build(&spec) else {
        return;
    };
    let r = model_check(&built.bytes);
    let want = expected::for_spec(&spec);
    assert_eq!(r.verdict, want.verdict, "{:#?}", r.findings);
    for f in &r.findings {
        assert!(
            matches!(
                f.severity,
                Severity::Note | Severity::Limit | Severity::Unspecified
            ),
            "unexpected finding {f:?}"
        );
    }
    if let Some(d) = want.bitmap_differences(&r).first() {
        panic!("{d:#}");
    }
}

/// `dump` of arbitrary bytes never panics and its JSON parses back.
pub fn dump_json(data: &[u8]) {
    let Ok(model) = spec_model::Model::open(std::io::Cursor::new(data)) else {
        return;
    };
    let d = spec_model::dump::dump(model.analysis());
    let text = serde_json::to_string(&d).expect("dump serialises");
    // Parsed without building a tree (as in `draft_dump`).
    serde_json::from_str::<serde::de::IgnoredAny>(&text).expect("dump JSON parses");
    let _ = spec_model::dump::render(&d);
}

/// An arbitrary mutation applied to an arbitrary base spec: the model
/// reports exactly the targeted rule (plus the mutation's documented `also`
/// set) as errors, with the expected verdict and extension state.
pub fn mutant_verdict(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let catalogue = generator::mutate::catalogue();
    let Ok(index) = u.choose_index(catalogue.len()) else {
        return;
    };
    let m = &catalogue[index];
    if m.heavy {
        return;
    }
    let Ok(seed) = u.arbitrary::<u64>() else {
        return;
    };
    let cfg = Config::small();
    let Ok(mt) = generator::mutate::make(m, seed, &cfg) else {
        return;
    };
    let r = model_check(&mt.bytes);
    let differences = mt.expected.verdict_differences(&r);
    assert!(
        differences.is_empty(),
        "{}: {}: {:#?}",
        m.id,
        differences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        r.findings
    );
    if mt.expected.verdict == Verdict::Invalid {
        // A mutant's expected rules are exactly the errors it makes.
        let mut want: Vec<&str> = mt.expected.rules.iter().map(String::as_str).collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(r.rules_with(Severity::Error), want, "{}", m.id);
    }
}

/// The draft revision that the first input byte selects for [`draft_dump`].
pub fn draft_revision(selector: u8) -> Revision {
    Revision::DRAFTS[usize::from(selector) % Revision::DRAFTS.len()]
}

/// Arbitrary bytes read as one of the historical drafts (the first byte
/// picks it, [`draft_revision`]; the rest is the file): the reader never
/// panics, its verdict agrees with its findings, the findings carry the
/// draft's rule prefix, every field it reports lies inside the file, and
/// the dump serialises to JSON that parses back and renders as text.
pub fn draft_dump(data: &[u8]) {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let revision = draft_revision(selector);
    let Ok(d) = spec_model::drafts::dump_draft_bytes(revision, file) else {
        return;
    };
    let len = file.len() as u64;
    assert_eq!(d.revision, revision);
    assert_eq!(d.file_length, len);
    let prefix = format!("draft.{revision}.");
    for f in &d.findings {
        assert!(f.rule.starts_with(&prefix), "{} under {revision}", f.rule);
    }
    let any = |s: Severity| d.findings.iter().any(|f| f.severity == s);
    let want = if any(Severity::Error) {
        Verdict::Invalid
    } else if any(Severity::Unspecified) {
        Verdict::Unspecified
    } else {
        Verdict::Valid
    };
    assert_eq!(d.verdict, want, "verdict disagrees with findings");
    let inside = |f: &spec_model::drafts::DraftField| {
        f.offset
            .checked_add(f.size as u64)
            .is_some_and(|end| end <= len)
    };
    let fields = d
        .header
        .iter()
        .chain(d.extensions.iter().flat_map(|x| &x.fields))
        .chain(d.bitmaps.iter().flat_map(|b| &b.fields));
    for f in fields {
        assert!(
            inside(f),
            "field {} at {:#x} outside the file",
            f.name,
            f.offset
        );
    }
    for b in &d.bitmaps {
        assert_eq!(
            b.contents.set_bits.is_some(),
            b.contents.content_sha256.is_some(),
            "bitmap {:?}: set bits and digest come together",
            b.name
        );
        if let (Some(set), Some(nbits)) = (b.contents.set_bits, b.nbits) {
            assert!(
                set <= nbits,
                "bitmap {:?}: {set} of {nbits} bits set",
                b.name
            );
        }
    }
    let text = serde_json::to_string(&d).expect("draft dump serialises");
    // Parsed without building a tree: a `Value` of a large dump cost more
    // than the dump itself.
    serde_json::from_str::<serde::de::IgnoredAny>(&text).expect("draft dump JSON parses");
    assert!(
        text.starts_with(&format!("{{\"revision\":\"{revision}\",")),
        "{text}"
    );
    let r = spec_model::drafts::render(&d);
    assert!(r.starts_with(&format!("revision: {revision}\n")), "{r}");
}

/// Length of the read plan that [`read_guest`] takes from the front of its
/// input; the image is the rest.
pub const READ_PLAN_LEN: usize = 16;

/// The largest cluster [`read_guest`] sizes its reads by (2 MiB, the
/// largest the model reads guest data from).
const MAX_PLAN_CLUSTER_BITS: u32 = 21;

/// One read of a plan: `(offset, len, split)`, `split` (0-7) choosing
/// where [`read_guest`] splits the read in two.
fn planned_read(p: &[u8], size: u64, cluster_bits: u32) -> (u64, u64, u64) {
    let cs = 1u64 << cluster_bits.min(MAX_PLAN_CLUSTER_BITS);
    let clusters = size.div_ceil(cs).max(1);
    let index = u64::from(u32::from_le_bytes([p[0], p[1], p[2], 0])) % clusters;
    let within = (u64::from(p[3]) * cs) >> 8;
    let len = match p[4] >> 6 {
        0 => 1 + u64::from(p[4] & 63),
        1 => (u64::from(p[4] & 63) + 1) * 512,
        2 => cs - within + u64::from(p[4] & 63),
        _ => 2 * cs,
    };
    (index * cs + within, len, u64::from(p[4] & 7))
}

/// A read plan for [`read_guest`] whose three reads start in guest
/// clusters that an image built with `layout` has data in (positions,
/// lengths and split points from `seed`), all inside the disk: seeds that
/// reach the data-cluster paths from the first run.
pub fn read_plan_for(layout: &generator::build::Layout, seed: u64) -> [u8; READ_PLAN_LEN] {
    let mut plan = [0u8; READ_PLAN_LEN];
    let mut x = seed;
    let mut next = || {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for p in plan[..15].chunks_exact_mut(5) {
        let r = next();
        let gc = match layout.data_clusters.len() {
            0 => r >> 40,
            n => layout.data_clusters[(r % n as u64) as usize].0,
        };
        p[..3].copy_from_slice(&(gc as u32).to_le_bytes()[..3]);
        p[3] = (r >> 24) as u8;
        p[4] = (r >> 32) as u8;
    }
    plan
}

/// Arbitrary bytes as an image whose guest data is read: the first
/// [`READ_PLAN_LEN`] bytes choose three reads (cluster index, position in
/// the cluster, length of a few bytes to two clusters, mostly clamped to the
/// virtual size), the rest is the image. `Model::open` and `read_guest`
/// never panic; a read past the virtual size fails; and a read split in two
/// gives the same bytes as the whole (or fails too).
pub fn read_guest(data: &[u8]) {
    if data.len() < READ_PLAN_LEN {
        return;
    }
    let (plan, image) = data.split_at(READ_PLAN_LEN);
    let Ok(mut model) = spec_model::Model::open(std::io::Cursor::new(image)) else {
        return;
    };
    let Some(h) = model.analysis().header.as_ref() else {
        return;
    };
    let (size, cluster_bits) = (h.size, h.cluster_bits);
    let clamp = plan[15];
    for (k, p) in plan[..15].chunks_exact(5).enumerate() {
        let (mut offset, mut len, split) = planned_read(p, size, cluster_bits);
        // Most reads stay inside the disk; bit k of the last plan byte
        // lets read k run past its end.
        if clamp & (1 << k) == 0 {
            offset = offset.min(size);
            len = len.min(size - offset);
        }
        let mut whole = vec![0u8; len as usize];
        let r = model.read_guest(offset, &mut whole);
        if offset.checked_add(len).is_none_or(|end| end > size) {
            assert!(
                r.is_err(),
                "read of {len} at {offset:#x} past the size {size} succeeded"
            );
            continue;
        }
        // Split at a point the plan picks: a few bytes from either end, or
        // at a cluster boundary inside the read.
        let cs = 1u64 << cluster_bits.min(MAX_PLAN_CLUSTER_BITS);
        let at = match split {
            0..=2 => split.min(len),
            3..=5 => len.saturating_sub(split - 3),
            _ => ((offset / cs + 1) * cs - offset).min(len),
        };
        let (mut a, mut b) = (vec![0u8; at as usize], vec![0u8; (len - at) as usize]);
        let ra = model.read_guest(offset, &mut a);
        let rb = model.read_guest(offset + at, &mut b);
        match r {
            Ok(()) => {
                assert!(
                    ra.is_ok() && rb.is_ok(),
                    "whole read of {len} at {offset:#x} succeeded, split at {at}: {ra:?} {rb:?}"
                );
                assert!(
                    whole[..at as usize] == a[..] && whole[at as usize..] == b[..],
                    "read of {len} at {offset:#x} differs when split at {at}"
                );
            }
            Err(e) => assert!(
                ra.is_err() || rb.is_err(),
                "whole read of {len} at {offset:#x} failed ({e}), both halves split at {at} succeeded"
            ),
        }
    }
}

/// Bounds for [`guest_roundtrip`]'s specs: clusters of 512 B to 16 KiB,
/// disks of at most 2 MiB and writes of at most 32 KiB, so that images stay
/// small (under the fuzzer, every buffer above 128 KiB is a fresh mapping
/// and most of an exec's time); every other choice as for valid images.
pub fn guest_config() -> Config {
    Config {
        min_cluster_bits: 9,
        max_cluster_bits: 14,
        max_size: 2 << 20,
        max_bitmaps: 1,
        max_writes: 6,
        max_write_len: 32 << 10,
        max_snapshots: 1,
        max_name_len: 8,
        ..Config::default()
    }
}

/// Where the first differing byte lies, for assertion messages.
fn first_difference(got: &[u8], want: &[u8]) -> Option<(usize, u8, u8)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g != w)
        .map(|(i, (g, w))| (i, *g, *w))
}

/// An arbitrary ImageSpec, built, with some clusters re-encoded
/// ([`guest::recode`]: compressed with deflate or zstd, subclusters
/// unallocated or read-as-zero, zero clusters): `read_guest` returns
/// exactly the bytes the spec's writes describe, zeros elsewhere, for
/// ranges sampled around the writes' edges and anywhere in the disk.
pub fn guest_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut spec) = ImageSpec::arbitrary_with(&mut u, &guest_config()) else {
        return;
    };
    if spec.size == 0 {
        return;
    }
    // Extended L2 entries need clusters of 16 KiB, the largest here: make
    // them common (about one image in eight) rather than rare.
    if spec.version == 3 && u.ratio(1u8, 4).unwrap_or(false) {
        spec.cluster_bits = 14;
        spec.extended_l2 = true;
    }
    let Ok(built) = build(&spec) else {
        return;
    };
    let mut bytes = built.bytes;
    let Ok(recoded) = guest::recode(&mut bytes, &spec, &built.layout, &mut u) else {
        return;
    };
    let mut model =
        spec_model::Model::open(std::io::Cursor::new(&bytes[..])).expect("a built image opens");
    let cs = 1u64 << spec.cluster_bits;
    let reads = u.int_in_range(1u8..=4).unwrap_or(1);
    for _ in 0..reads {
        let offset = match (u.int_in_range(0u8..=3), spec.writes.is_empty()) {
            (Ok(0..=2), false) => {
                let Ok(w) = u.choose(&spec.writes) else {
                    break;
                };
                let edge = if u.arbitrary().unwrap_or(false) {
                    w.offset
                } else {
                    w.offset + w.len
                };
                let back = u.int_in_range(0..=cs).unwrap_or(0);
                edge.saturating_sub(back).min(spec.size - 1)
            }
            _ => u.int_in_range(0..=spec.size - 1).unwrap_or(0),
        };
        let max = (2 * cs).min(spec.size - offset);
        let len = u.int_in_range(1..=max).unwrap_or(max);
        let mut got = vec![0u8; len as usize];
        if let Err(e) = model.read_guest(offset, &mut got) {
            panic!("read of {len} at {offset:#x} failed: {e} ({recoded:?})");
        }
        let want = guest::expected(&spec, offset, len as usize);
        if got == want {
            continue;
        }
        if let Some((i, g, w)) = first_difference(&got, &want) {
            panic!(
                "guest byte {:#x} reads {g:#04x}, the writes say {w:#04x} (read of {len} at {offset:#x}; {recoded:?})",
                offset + i as u64
            );
        }
    }
}
