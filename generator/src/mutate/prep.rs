//! Spec preparation: the steps a mutation's `prepare` takes to adapt a
//! random [`ImageSpec`] so that its edit applies (a v3 image, bitmaps with
//! stored data, a guest write, a snapshot, ...), and the `p_*` steps that
//! serve as a whole `prepare`.

use crate::contents::Contents;
use crate::spec::{BitmapSpec, GuestWrite, ImageSpec, UnknownExtension};
use arbitrary::Unstructured;
use spec_model::bitmaps::content::Geometry;
use spec_model::fields::bitmap_entry as be;

pub(super) type PResult = arbitrary::Result<()>;

/// The cluster size of `s`.
pub(super) fn cs(s: &ImageSpec) -> u64 {
    1 << s.cluster_bits
}

/// Drops optional extensions until the header area fits the first cluster.
pub(super) fn fit_header(s: &mut ImageSpec) {
    if s.header_area_len() > cs(s) {
        s.feature_name_table = false;
    }
    if s.header_area_len() > cs(s) {
        s.backing_format = None;
    }
}

pub(super) fn v3(s: &mut ImageSpec) {
    if s.version != 3 {
        s.version = 3;
        s.refcount_order = 4;
        s.header_length = 104;
    }
}

pub(super) fn min_cluster_bits(s: &mut ImageSpec, cb: u32) {
    if s.cluster_bits < cb {
        s.cluster_bits = cb;
    }
}

/// A virtual disk of at least `bytes`.
pub(super) fn min_size(s: &mut ImageSpec, bytes: u64) {
    if s.size < bytes {
        s.size = bytes;
    }
}

/// A guest write that touches at least `clusters` guest clusters.
pub(super) fn guest_write(s: &mut ImageSpec, u: &mut Unstructured, clusters: u64) -> PResult {
    let touched: std::collections::BTreeSet<u64> = s
        .writes
        .iter()
        .filter(|w| w.len > 0)
        .flat_map(|w| (w.offset >> s.cluster_bits)..=((w.offset + w.len - 1) >> s.cluster_bits))
        .collect();
    if touched.len() as u64 >= clusters {
        return Ok(());
    }
    min_size(s, clusters * cs(s));
    let len = (clusters - 1) * cs(s) + 1;
    let offset = u.int_in_range(0..=s.size - len)?;
    let offset = offset - offset % cs(s);
    s.writes.push(GuestWrite {
        offset,
        len: (clusters * cs(s)).min(s.size - offset),
        pattern: u.int_in_range(1u8..=255)?,
    });
    Ok(())
}

/// A new plain bitmap (no extra data, not in use) for `s`.
pub(super) fn new_bitmap(
    s: &ImageSpec,
    u: &mut Unstructured,
    index: usize,
) -> arbitrary::Result<BitmapSpec> {
    let mut g: u8 = u.int_in_range(9..=24)?;
    while geometry(s, g).nbits() > 1 << 22 {
        g += 1;
    }
    let nbits = geometry(s, g).nbits();
    let contents = match u.int_in_range(0u8..=3)? {
        _ if nbits == 0 => Contents::Empty,
        0 => Contents::Empty,
        1 => Contents::Full,
        _ => {
            let a = u.int_in_range(0..=nbits - 1)?;
            let b = u.int_in_range(a + 1..=nbits)?;
            Contents::Ranges(vec![(a, b)])
        }
    };
    Ok(BitmapSpec {
        name: format!("+{index}").into_bytes(),
        granularity_bits: g,
        bitmap_type: 1,
        in_use: false,
        auto: u.arbitrary()?,
        extra_data_compatible: false,
        extra_data: Vec::new(),
        contents,
        zero_entries: u.arbitrary()?,
        ones_entries: u.arbitrary()?,
    })
}

pub(super) fn geometry(s: &ImageSpec, granularity_bits: u8) -> Geometry {
    Geometry {
        size: s.size,
        granularity_bits: u32::from(granularity_bits),
        cluster_bits: s.cluster_bits,
    }
}

/// A v3 image with at least `n` bitmaps.
pub(super) fn bitmaps(s: &mut ImageSpec, u: &mut Unstructured, n: usize) -> PResult {
    v3(s);
    min_size(s, 1);
    while s.bitmaps.len() < n {
        let b = new_bitmap(s, u, s.bitmaps.len())?;
        s.bitmaps.push(b);
    }
    Ok(())
}

/// Bitmap 0 exists, is not in use, and stores every data cluster.
pub(super) fn stored_bitmap(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    bitmaps(s, u, 1)?;
    let b = &mut s.bitmaps[0];
    b.in_use = false;
    b.zero_entries = false;
    b.ones_entries = false;
    Ok(())
}

/// Replaces the name of bitmap `i` by `n` bytes of `~` (generated names
/// never contain `~`, so it stays unique).
pub(super) fn tilde_name(s: &mut ImageSpec, i: usize, n: usize) {
    s.bitmaps[i].name = vec![b'~'; n];
}

/// Raises bitmap `i`'s granularity until its table has at most `max`
/// entries.
pub(super) fn coarsen(s: &mut ImageSpec, i: usize, max: u64) {
    coarsen_while(s, i, |g| {
        g.clusters_needed() > max && g.granularity_bits < 63
    });
}

/// Raises bitmap `i`'s granularity while its geometry satisfies `more`.
pub(super) fn coarsen_while(s: &mut ImageSpec, i: usize, more: impl Fn(&Geometry) -> bool) {
    while more(&geometry(s, s.bitmaps[i].granularity_bits)) {
        s.bitmaps[i].granularity_bits += 1;
    }
}

/// The directory size `s` builds.
pub(super) fn directory_size(s: &ImageSpec) -> u64 {
    s.bitmaps
        .iter()
        .map(|b| be::entry_length(b.extra_data.len() as u64, b.name.len() as u64))
        .sum()
}

/// An unknown extension, last in the list, with `len` bytes of data.
pub(super) fn unknown_ext(s: &mut ImageSpec, len: usize) {
    s.feature_name_table = false;
    let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x3c).collect();
    match s.unknown_extensions.last_mut() {
        Some(x) => x.data = data,
        None => s.unknown_extensions.push(UnknownExtension {
            ext_type: 0x7a00_4d55,
            data,
        }),
    }
}

/// Some refcount width that can hold 2.
pub(super) fn refcounts_up_to_2(s: &mut ImageSpec) {
    if s.version == 3 && s.refcount_order == 0 {
        s.refcount_order = 1;
    }
}

/// Exactly one snapshot (v3).
pub(super) fn one_snapshot(s: &mut ImageSpec) {
    v3(s);
    refcounts_up_to_2(s);
    s.snapshots = vec!["snap0".into()];
}

pub(super) fn keep(_: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    Ok(())
}

pub(super) fn p_v3(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    v3(s);
    Ok(())
}

pub(super) fn p_v3_long_header(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    v3(s);
    s.header_length = s.header_length.max(112);
    Ok(())
}

pub(super) fn p_bitmap(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    bitmaps(s, u, 1)
}

pub(super) fn p_sized(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    min_size(s, 1);
    Ok(())
}

pub(super) fn p_write(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    guest_write(s, u, 1)
}

pub(super) fn p_write_1k(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    min_cluster_bits(s, 10);
    guest_write(s, u, 1)
}

pub(super) fn p_stored(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    stored_bitmap(s, u)
}

pub(super) fn p_stored_1k(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    min_cluster_bits(s, 10);
    stored_bitmap(s, u)
}

/// A directory that leaves at least 8 bytes of its last cluster free.
pub(super) fn p_directory_with_room(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    bitmaps(s, u, 1)?;
    if directory_size(s).is_multiple_of(cs(s)) {
        let n = s.bitmaps[0].name.len();
        tilde_name(s, 0, if n > 8 { n - 8 } else { n + 8 });
    }
    Ok(())
}

pub(super) fn p_snapshot(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    one_snapshot(s);
    Ok(())
}
