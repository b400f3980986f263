//! Images (or, for `qdb-2014`, a QDB file) laid out the way a writer
//! following one of the historical drafts would have stored a spec's
//! bitmaps. `spec_model::drafts::dump_draft` reads them back; the layouts
//! and every choice where a draft is silent are in `docs/revisions.md`.
//!
//! The qcow2 drafts start from the final builder and then rewrite what the
//! draft does differently, keeping the qcow2 refcounts equal to the number
//! of references for every cluster that the draft's structures use, so
//! that a final-spec reader's cluster accounting is meaningful: clusters a
//! draft no longer uses are freed (refcount 0), clusters it adds are
//! allocated (refcount 1), and the refcount table and blocks are moved to
//! the end of the file when the old ones no longer cover it.
//!
//! What a draft cannot express is handled as follows:
//! - `header-fields-2014`: no flags (`in_use`, `auto` and
//!   `extra_data_compatible` are dropped), no extra data (dropped), no
//!   all-ones entries (such clusters are stored), granularity must fit a
//!   u32 (`granularity_bits` <= 31, else [`BuildError::Invalid`]), names at
//!   most 65535 bytes; needs a version 3 header when there are bitmaps.
//! - `qdb-2014`: only `auto` survives (as "enabled"); extra data is kept;
//!   same granularity and name bounds; no guest data, snapshots or qcow2
//!   header fields (the file holds only bitmaps).
//! - `rfc-v5-2015`: `extra_data_compatible` is dropped (the RFC has no such
//!   flag); names must be 1-1023 bytes and extra data at most 65535 bytes.
//! - `empty-table-2016`: everything is expressible.

use crate::build::{build, put_parts, put_refcount, BitmapLayout, BuildError, Layout};
use crate::contents::{classify, fill_bytes, ClusterKind};
use crate::spec::{BitmapSpec, ImageSpec};
use spec_model::drafts::fields::{header_fields_2014 as hf, qdb_2014 as q, rfc_v5_2015 as rf};
use spec_model::fields::{bitmap_entry as be, extension as ext, header as h};
use spec_model::Revision;

/// Renders `spec`'s bitmaps as a writer following `revision` would.
///
/// For [`Revision::Final`] this is [`build`]; for `qdb-2014` the result
/// is a QDB file, not a qcow2 image.
pub fn render(revision: Revision, spec: &ImageSpec) -> Result<Vec<u8>, BuildError> {
    match revision {
        Revision::Final => Ok(build(spec)?.bytes),
        Revision::HeaderFields2014 => header_fields_2014(spec),
        Revision::Qdb2014 => qdb_2014(spec),
        Revision::RfcV5_2015 => rfc_v5_2015(spec),
        Revision::EmptyTable2016 => empty_table_2016(spec),
    }
}

/// The number of bits a 2014 draft's bitmap has for `spec`'s virtual size
/// (stored in 512-byte sectors, so the size is rounded up to a sector) and
/// `b`'s granularity.
pub fn sector_nbits(spec: &ImageSpec, b: &BitmapSpec) -> u64 {
    let bytes = u128::from(spec.size.div_ceil(512)) * 512;
    let g = 1u128 << b.granularity_bits.min(63);
    bytes.div_ceil(g) as u64
}

fn invalid(msg: String) -> BuildError {
    BuildError::Invalid(msg)
}

fn check_bitmaps(
    revision: Revision,
    spec: &ImageSpec,
    max_gbits: u8,
    max_name: usize,
    max_extra: usize,
) -> Result<(), BuildError> {
    for b in &spec.bitmaps {
        if b.granularity_bits > max_gbits {
            return Err(invalid(format!(
                "{revision}: granularity_bits {} cannot be stored (at most {max_gbits})",
                b.granularity_bits
            )));
        }
        if b.name.len() > max_name || b.name.is_empty() {
            return Err(invalid(format!(
                "{revision}: a name of {} bytes cannot be stored (1-{max_name})",
                b.name.len()
            )));
        }
        if b.extra_data.len() > max_extra {
            return Err(invalid(format!(
                "{revision}: {} bytes of extra data cannot be stored (at most {max_extra})",
                b.extra_data.len()
            )));
        }
    }
    Ok(())
}

/// Refcounts of every cluster of an image, editable, then stored back.
struct Refcounts {
    counts: Vec<u64>,
    order: u32,
    cluster_bits: u32,
}

impl Refcounts {
    fn per_block(&self) -> u64 {
        ((1u64 << self.cluster_bits) * 8) >> self.order
    }

    fn load(bytes: &[u8], layout: &Layout, order: u32) -> Refcounts {
        let cb = layout.cluster_bits;
        let mut r = Refcounts {
            counts: vec![0; (bytes.len() as u64 >> cb) as usize],
            order,
            cluster_bits: cb,
        };
        let per_block = r.per_block();
        let bits = 1u64 << order;
        for c in 0..r.counts.len() as u64 {
            let Some(&block) = layout.refcount_blocks.get((c / per_block) as usize) else {
                break;
            };
            let i = c % per_block;
            let v = if bits < 8 {
                let byte = bytes[(block + i * bits / 8) as usize];
                u64::from(byte >> ((i % (8 / bits)) * bits)) & ((1 << bits) - 1)
            } else {
                let w = (bits / 8) as usize;
                let at = block as usize + i as usize * w;
                bytes[at..at + w]
                    .iter()
                    .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
            };
            r.counts[c as usize] = v;
        }
        r
    }

    /// Appends `n` clusters of zeros to `bytes`, each with refcount 1;
    /// returns the first one's offset.
    fn alloc(&mut self, bytes: &mut Vec<u8>, n: u64) -> u64 {
        let first = self.counts.len() as u64;
        let n = n.max(1);
        self.counts.extend(std::iter::repeat_n(1, n as usize));
        bytes.resize(((first + n) << self.cluster_bits) as usize, 0);
        first << self.cluster_bits
    }

    /// Frees (refcount 0) and zeroes `n` clusters at `offset`.
    fn free(&mut self, bytes: &mut [u8], offset: u64, n: u64) {
        let cs = 1u64 << self.cluster_bits;
        for k in 0..n {
            let c = (offset >> self.cluster_bits) + k;
            if let Some(slot) = self.counts.get_mut(c as usize) {
                *slot = 0;
                let at = (c * cs) as usize;
                bytes[at..at + cs as usize].fill(0);
            }
        }
    }

    /// Writes the refcounts back: into the old blocks when they still cover
    /// the file, else into a new table and blocks appended at the end (the
    /// old ones are freed), updating the header.
    fn store(mut self, bytes: &mut Vec<u8>, layout: &Layout) {
        let cb = self.cluster_bits;
        let cs = 1u64 << cb;
        let per_block = self.per_block();
        let covered = layout.refcount_blocks.len() as u64 * per_block;
        let (table_off, blocks) = if self.counts.len() as u64 <= covered {
            (layout.refcount_table_offset, layout.refcount_blocks.clone())
        } else {
            let old_table = layout.refcount_table_offset;
            self.free(bytes, old_table, u64::from(layout.refcount_table_clusters));
            for &b in &layout.refcount_blocks {
                self.free(bytes, b, 1);
            }
            let base = self.counts.len() as u64;
            let (mut tc, mut nb) = (1u64, 1u64);
            loop {
                let nb2 = (base + tc + nb).div_ceil(per_block);
                let tc2 = (nb2 * 8).div_ceil(cs);
                if nb2 <= nb && tc2 <= tc {
                    break;
                }
                nb = nb.max(nb2);
                tc = tc.max(tc2);
            }
            let t = self.alloc(bytes, tc);
            let b0 = self.alloc(bytes, nb);
            h::REFCOUNT_TABLE_OFFSET.put(bytes, t);
            h::REFCOUNT_TABLE_CLUSTERS.put(bytes, tc);
            (t, (0..nb).map(|k| b0 + k * cs).collect())
        };
        for (i, &block) in blocks.iter().enumerate() {
            let at = block as usize;
            bytes[at..at + cs as usize].fill(0);
            let first = i as u64 * per_block;
            for c in first..(first + per_block).min(self.counts.len() as u64) {
                let v = self.counts[c as usize];
                if v != 0 {
                    put_refcount(&mut bytes[at..at + cs as usize], c - first, self.order, v);
                }
            }
            let e = table_off as usize + i * 8;
            bytes[e..e + 8].copy_from_slice(&block.to_be_bytes());
        }
    }
}

fn refcount_order(spec: &ImageSpec) -> u32 {
    if spec.version == 2 {
        4
    } else {
        spec.refcount_order
    }
}

// ---------------------------------------------------------------------------
// empty-table-2016

fn empty_table_2016(spec: &ImageSpec) -> Result<Vec<u8>, BuildError> {
    let built = build(spec)?;
    let (mut bytes, layout) = (built.bytes, built.layout);
    let cs = layout.cluster_size();
    let mut refs = Refcounts::load(&bytes, &layout, refcount_order(spec));
    for (b, bl) in spec.bitmaps.iter().zip(&layout.bitmaps) {
        let nbits = spec.geometry(b).nbits();
        if !b.contents.ranges(nbits).is_empty() {
            continue;
        }
        if bl.table_size > 0 {
            let tc = (u64::from(bl.table_size) * 8).div_ceil(cs);
            refs.free(&mut bytes, bl.table_offset, tc);
        }
        for &(_, off) in &bl.data {
            refs.free(&mut bytes, off, 1);
        }
        let e = bl.entry_offset as usize;
        let entry = &mut bytes[e..e + be::FIXED_LENGTH];
        be::BITMAP_TABLE_OFFSET.put(entry, 0);
        be::BITMAP_TABLE_SIZE.put(entry, 0);
    }
    refs.store(&mut bytes, &layout);
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// rfc-v5-2015

fn rfc_entry(b: &BitmapSpec, bl: &BitmapLayout) -> Vec<u8> {
    let len = (rf::ENTRY_FIXED + b.name.len() + b.extra_data.len()).div_ceil(8) * 8;
    let mut e = vec![0u8; len];
    rf::BITMAP_TABLE_OFFSET.put(&mut e, bl.table_offset);
    rf::BITMAP_TABLE_SIZE.put(&mut e, u64::from(bl.table_size));
    let flags = (u64::from(b.in_use) * rf::FLAG_IN_USE) | (u64::from(b.auto) * rf::FLAG_AUTO);
    rf::FLAGS.put(&mut e, flags);
    rf::TYPE.put(&mut e, rf::TYPE_DIRTY_TRACKING);
    rf::GRANULARITY_BITS.put(&mut e, u64::from(b.granularity_bits));
    rf::NAME_SIZE.put(&mut e, b.name.len() as u64);
    rf::EXTRA_DATA_SIZE.put(&mut e, b.extra_data.len() as u64);
    put_parts(&mut e, rf::ENTRY_FIXED, &[&b.name, &b.extra_data]);
    e
}

/// Reads the header extensions a built image has, in order.
fn extensions_of(bytes: &[u8], layout: &Layout) -> Vec<(u32, Vec<u8>)> {
    layout
        .extensions
        .iter()
        .map(|&(t, off)| {
            let off = off as usize;
            let len = ext::LENGTH.get(&bytes[off..off + 8]) as usize;
            (t, bytes[off + 8..off + 8 + len].to_vec())
        })
        .collect()
}

/// Rewrites the extension area after the header (`hlen` bytes) with
/// `exts`, zeroing what the old area used beyond the new one.
fn write_extensions(
    bytes: &mut [u8],
    hlen: u64,
    old_end: u64,
    exts: &[(u32, Vec<u8>)],
    cs: u64,
) -> Result<(), BuildError> {
    let (area, _) = crate::build::extension_area(exts);
    let end = hlen + area.len() as u64;
    if end > cs {
        return Err(BuildError::HeaderTooLarge {
            need: end,
            have: cs,
        });
    }
    let clear_to = old_end.max(end).min(cs) as usize;
    bytes[hlen as usize..clear_to].fill(0);
    bytes[hlen as usize..end as usize].copy_from_slice(&area);
    Ok(())
}

/// One past the end marker of a built image's extension area.
fn extensions_end(bytes: &[u8], layout: &Layout, hlen: u64) -> u64 {
    layout
        .extensions
        .iter()
        .map(|&(_, off)| {
            let len = ext::LENGTH.get(&bytes[off as usize..off as usize + 8]);
            off + 8 + len.div_ceil(8) * 8
        })
        .max()
        .unwrap_or(hlen)
        + 8
}

fn header_len(spec: &ImageSpec) -> u64 {
    if spec.version == 2 {
        h::V2_LENGTH as u64
    } else {
        u64::from(spec.header_length)
    }
}

fn rfc_v5_2015(spec: &ImageSpec) -> Result<Vec<u8>, BuildError> {
    check_bitmaps(
        Revision::RfcV5_2015,
        spec,
        63,
        rf::MAX_NAME_SIZE as usize,
        0xffff,
    )?;
    let built = build(spec)?;
    let (mut bytes, layout) = (built.bytes, built.layout);
    if spec.bitmaps.is_empty() {
        return Ok(bytes);
    }
    let cs = layout.cluster_size();
    // The RFC's entries are never longer than the final ones, so the
    // directory fits the clusters the builder gave it.
    let mut dir = Vec::new();
    for (b, bl) in spec.bitmaps.iter().zip(&layout.bitmaps) {
        dir.extend_from_slice(&rfc_entry(b, bl));
    }
    let d0 = layout.directory_offset as usize;
    bytes[d0..d0 + layout.directory_size as usize].fill(0);
    bytes[d0..d0 + dir.len()].copy_from_slice(&dir);
    let hlen = header_len(spec);
    let old_end = extensions_end(&bytes, &layout, hlen);
    let mut exts = extensions_of(&bytes, &layout);
    for (t, d) in &mut exts {
        if *t == ext::BITMAPS {
            let mut x = vec![0u8; rf::EXT_LENGTH];
            rf::NB_BITMAPS.put(&mut x, spec.bitmaps.len() as u64);
            rf::BITMAP_DIRECTORY_SIZE.put(&mut x, dir.len() as u64);
            rf::BITMAP_DIRECTORY_OFFSET.put(&mut x, layout.directory_offset);
            *d = x;
        }
    }
    write_extensions(&mut bytes, hlen, old_end, &exts, cs)?;
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// header-fields-2014 and qdb-2014: one-level L1 tables

/// Stores bitmap `b`'s L1 table and data clusters at the end of `bytes`
/// (cluster-aligned). Returns (L1 offset, L1 entries); offset 0 when the
/// bitmap needs no entries.
fn store_l1_bitmap(
    bytes: &mut Vec<u8>,
    refs: &mut Refcounts,
    spec: &ImageSpec,
    b: &BitmapSpec,
) -> (u64, u64) {
    let cs = 1u64 << refs.cluster_bits;
    let nbits = sector_nbits(spec, b);
    let ranges = b.contents.ranges(spec.geometry(b).nbits());
    let nbytes = nbits.div_ceil(8);
    let needed = nbytes.div_ceil(cs);
    if needed == 0 {
        return (0, 0);
    }
    let table_off = refs.alloc(bytes, (needed * 8).div_ceil(cs));
    let mut buf = vec![0u8; cs as usize];
    for j in 0..needed {
        let kind = classify(&ranges, nbits, cs, j);
        if kind == ClusterKind::Zeros && b.zero_entries {
            continue;
        }
        let len = cs.min(nbytes - j * cs) as usize;
        buf.fill(0);
        fill_bytes(&ranges, j * cs, &mut buf[..len]);
        let off = refs.alloc(bytes, 1);
        bytes[off as usize..(off + cs) as usize].copy_from_slice(&buf);
        let e = (table_off + j * 8) as usize;
        bytes[e..e + 8].copy_from_slice(&off.to_be_bytes());
    }
    (table_off, needed)
}

fn header_fields_2014(spec: &ImageSpec) -> Result<Vec<u8>, BuildError> {
    let rev = Revision::HeaderFields2014;
    check_bitmaps(rev, spec, 31, 0xffff, usize::MAX)?;
    if spec.version != 3 {
        if spec.bitmaps.is_empty() {
            return Ok(build(spec)?.bytes);
        }
        return Err(invalid(format!(
            "{rev}: the draft's header fields need a version 3 header"
        )));
    }
    let mut plain = spec.clone();
    plain.bitmaps.clear();
    plain.header_length = plain.header_length.max(hf::WRITTEN_HEADER_LENGTH);
    let built = build(&plain)?;
    let (mut bytes, layout) = (built.bytes, built.layout);
    let cs = layout.cluster_size();
    let mut refs = Refcounts::load(&bytes, &layout, refcount_order(spec));
    if !spec.bitmaps.is_empty() {
        let dir_len: usize = spec
            .bitmaps
            .iter()
            .map(|b| (hf::ENTRY_FIXED + b.name.len()).div_ceil(8) * 8)
            .sum();
        let dir_off = refs.alloc(&mut bytes, (dir_len as u64).div_ceil(cs));
        let mut dir = Vec::with_capacity(dir_len);
        for b in &spec.bitmaps {
            let (l1_off, l1_size) = store_l1_bitmap(&mut bytes, &mut refs, spec, b);
            let mut e = vec![0u8; (hf::ENTRY_FIXED + b.name.len()).div_ceil(8) * 8];
            hf::L1_TABLE_OFFSET.put(&mut e, l1_off);
            hf::L1_SIZE.put(&mut e, l1_size);
            hf::GRANULARITY.put(&mut e, 1u64 << b.granularity_bits);
            hf::SIZE.put(&mut e, spec.size.div_ceil(512));
            hf::NAME_SIZE.put(&mut e, b.name.len() as u64);
            put_parts(&mut e, hf::ENTRY_FIXED, &[&b.name]);
            dir.extend_from_slice(&e);
        }
        bytes[dir_off as usize..dir_off as usize + dir_len].copy_from_slice(&dir);
        hf::NB_DIRTY_BITMAPS.put(&mut bytes, spec.bitmaps.len() as u64);
        hf::DIRTY_BITMAPS_OFFSET.put(&mut bytes, dir_off);
    }
    refs.store(&mut bytes, &layout);
    Ok(bytes)
}

fn qdb_2014(spec: &ImageSpec) -> Result<Vec<u8>, BuildError> {
    check_bitmaps(Revision::Qdb2014, spec, 31, 0xffff, u32::MAX as usize)?;
    if !(9..=30).contains(&spec.cluster_bits) {
        return Err(invalid(format!("cluster_bits {}", spec.cluster_bits)));
    }
    let cb = spec.cluster_bits;
    let cs = 1u64 << cb;
    // A QDB file has no refcounts; `Refcounts` only hands out clusters.
    let mut refs = Refcounts {
        counts: vec![1],
        order: 4,
        cluster_bits: cb,
    };
    let mut bytes = vec![0u8; cs as usize];
    let entry_len =
        |b: &BitmapSpec| (q::ENTRY_FIXED + b.extra_data.len() + b.name.len()).div_ceil(8) * 8;
    let dir_len: usize = spec.bitmaps.iter().map(entry_len).sum();
    let dir_off = if spec.bitmaps.is_empty() {
        0
    } else {
        refs.alloc(&mut bytes, (dir_len as u64).div_ceil(cs))
    };
    let mut dir = Vec::with_capacity(dir_len);
    for b in &spec.bitmaps {
        let (l1_off, l1_size) = store_l1_bitmap(&mut bytes, &mut refs, spec, b);
        let mut e = vec![0u8; entry_len(b)];
        q::L1_TABLE_OFFSET.put(&mut e, l1_off);
        q::L1_SIZE.put(&mut e, l1_size);
        q::GRANULARITY.put(&mut e, 1u64 << b.granularity_bits);
        q::SIZE.put(&mut e, spec.size.div_ceil(512));
        q::FLAGS.put(&mut e, u64::from(b.auto) * q::FLAG_ENABLED);
        q::NAME_SIZE.put(&mut e, b.name.len() as u64);
        q::EXTRA_DATA_SIZE.put(&mut e, b.extra_data.len() as u64);
        put_parts(&mut e, q::ENTRY_FIXED, &[&b.extra_data, &b.name]);
        dir.extend_from_slice(&e);
    }
    if !dir.is_empty() {
        bytes[dir_off as usize..dir_off as usize + dir_len].copy_from_slice(&dir);
    }
    q::MAGIC.put(&mut bytes, q::MAGIC_VALUE);
    q::VERSION.put(&mut bytes, q::VERSION_VALUE);
    q::CLUSTER_BITS.put(&mut bytes, u64::from(cb));
    q::NB_BITMAPS.put(&mut bytes, spec.bitmaps.len() as u64);
    q::BITMAPS_OFFSET.put(&mut bytes, dir_off);
    q::HEADER_LENGTH.put(&mut bytes, u64::from(q::WRITTEN_HEADER_LENGTH));
    // The end-of-extensions marker at byte 32 is already zero.
    Ok(bytes)
}
