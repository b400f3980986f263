//! `build`: an `ImageSpec` rendered as a complete image with correct
//! refcounts. Structures are written through the field tables of
//! `spec_model::fields`; the returned `Layout` says where each one went, so
//! that mutations can change the fewest bytes.

use crate::contents::{classify, fill_bytes, ClusterKind};
use crate::sink::Sink;
use crate::spec::{BitmapSpec, ImageSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use spec_model::fields::{
    bitmap_entry as be, bitmaps_ext as bx, extension as ext, header as hf, snapshot as sf,
};
use std::collections::BTreeMap;

/// Where one bitmap's structures lie.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BitmapLayout {
    /// File offset of the directory entry.
    pub entry_offset: u64,
    pub entry_length: u64,
    pub table_offset: u64,
    pub table_size: u32,
    /// (table index, data cluster offset) of allocated data clusters.
    pub data: Vec<(u64, u64)>,
}

/// Where every structure of a built image lies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Layout {
    pub cluster_bits: u32,
    pub file_len: u64,
    /// (type, offset of the extension's type field).
    pub extensions: Vec<(u32, u64)>,
    pub l1_offset: u64,
    pub l1_size: u32,
    /// (L1 index, L2 table offset).
    pub l2_tables: Vec<(u64, u64)>,
    /// (guest cluster index, host offset).
    pub data_clusters: Vec<(u64, u64)>,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub refcount_blocks: Vec<u64>,
    pub snapshot_table_offset: u64,
    pub snapshot_l1_offsets: Vec<u64>,
    pub directory_offset: u64,
    pub directory_size: u64,
    pub bitmaps: Vec<BitmapLayout>,
}

impl Layout {
    /// File offset of the bitmaps extension's data, if any.
    pub fn bitmaps_ext_data(&self) -> Option<u64> {
        self.extensions
            .iter()
            .find(|(t, _)| *t == ext::BITMAPS)
            .map(|(_, o)| o + ext::PREFIX_LENGTH as u64)
    }

    /// Every allocated cluster offset with what it holds, for mutations that
    /// need a cluster of some kind.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// An image in memory with its layout.
#[derive(Debug, Clone)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub layout: Layout,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the header extensions need {need} bytes, the first cluster has {have}")]
    HeaderTooLarge { need: u64, have: u64 },
    #[error("{0} references exceed the largest refcount that refcount_order {1} can hold")]
    RefcountOverflow(u64, u32),
    #[error("invalid spec: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Hands out clusters in order, optionally leaving random free gaps.
struct Allocator {
    next: u64,
    scatter: Option<ChaCha8Rng>,
}

impl Allocator {
    fn alloc(&mut self, clusters: u64) -> u64 {
        if let Some(rng) = &mut self.scatter {
            self.next += rng.gen_range(0..3);
        }
        let c = self.next;
        self.next += clusters.max(1);
        c
    }
}

fn be64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Builds `spec` into memory.
pub fn build(spec: &ImageSpec) -> Result<Built, BuildError> {
    let mut bytes = Vec::new();
    let layout = build_into(spec, &mut bytes)?;
    Ok(Built { bytes, layout })
}

/// Builds `spec` into `sink` (a sparse file for large virtual sizes).
pub fn build_into(spec: &ImageSpec, sink: &mut impl Sink) -> Result<Layout, BuildError> {
    if spec.version != 2 && spec.version != 3 {
        return Err(BuildError::Invalid(format!("version {}", spec.version)));
    }
    if !(9..=30).contains(&spec.cluster_bits) {
        return Err(BuildError::Invalid(format!(
            "cluster_bits {}",
            spec.cluster_bits
        )));
    }
    let cb = spec.cluster_bits;
    let cs = 1u64 << cb;
    let ext_l2 = spec.extended_l2 && spec.version == 3;
    let l2_entry = if ext_l2 { 16 } else { 8 };
    let l2_entries = cs / l2_entry;
    let per_l1 = cs * l2_entries;
    let l1_size = spec.size.div_ceil(per_l1);
    let mut al = Allocator {
        next: 1,
        scatter: spec.layout.scatter_seed.map(ChaCha8Rng::seed_from_u64),
    };
    let mut layout = Layout {
        cluster_bits: cb,
        l1_size: l1_size as u32,
        ..Default::default()
    };
    // References per cluster, filled as structures are placed.
    let mut refs: BTreeMap<u64, u64> = BTreeMap::new();
    let nsnap = spec.snapshots.len() as u64;

    // Guest data: which guest clusters the writes touch.
    let mut guest: BTreeMap<u64, ()> = BTreeMap::new();
    for w in spec.writes.iter().filter(|w| w.len > 0) {
        for c in (w.offset >> cb)..=((w.offset + w.len - 1) >> cb) {
            guest.insert(c, ());
        }
    }

    let place_guest = |al: &mut Allocator, layout: &mut Layout, refs: &mut BTreeMap<u64, u64>| {
        let l1_clusters = (l1_size * 8).div_ceil(cs);
        if l1_size > 0 {
            layout.l1_offset = al.alloc(l1_clusters) << cb;
            for k in 0..l1_clusters {
                refs.insert((layout.l1_offset >> cb) + k, 1);
            }
        }
        let mut l2s: BTreeMap<u64, u64> = BTreeMap::new();
        for &gc in guest.keys() {
            let l1i = gc / l2_entries;
            if let std::collections::btree_map::Entry::Vacant(slot) = l2s.entry(l1i) {
                let off = al.alloc(1) << cb;
                slot.insert(off);
                refs.insert(off >> cb, 1 + nsnap);
            }
            let off = al.alloc(1) << cb;
            layout.data_clusters.push((gc, off));
            refs.insert(off >> cb, 1 + nsnap);
        }
        layout.l2_tables = l2s.into_iter().collect();
    };

    let place_bitmaps = |al: &mut Allocator, layout: &mut Layout, refs: &mut BTreeMap<u64, u64>| {
        let dir_size: u64 = spec
            .bitmaps
            .iter()
            .map(|b| be::entry_length(b.extra_data.len() as u64, b.name.len() as u64))
            .sum();
        let place_dir = |al: &mut Allocator, layout: &mut Layout, refs: &mut BTreeMap<u64, u64>| {
            if !spec.bitmaps.is_empty() {
                let n = dir_size.div_ceil(cs);
                layout.directory_offset = al.alloc(n) << cb;
                layout.directory_size = dir_size;
                for k in 0..n {
                    refs.insert((layout.directory_offset >> cb) + k, 1);
                }
            }
        };
        if spec.layout.directory_first {
            place_dir(al, layout, refs);
        }
        let mut entry_at = 0u64;
        for b in &spec.bitmaps {
            let geo = spec.geometry(b);
            let needed = geo.clusters_needed();
            let ranges = b.contents.ranges(geo.nbits());
            let mut bl = BitmapLayout {
                entry_length: be::entry_length(b.extra_data.len() as u64, b.name.len() as u64),
                table_size: needed as u32,
                ..Default::default()
            };
            bl.entry_offset = entry_at;
            entry_at += bl.entry_length;
            for j in 0..needed {
                let kind = classify(&ranges, geo.nbits(), cs, j);
                let stored = match kind {
                    ClusterKind::Zeros => !b.zero_entries,
                    ClusterKind::Ones => !b.ones_entries,
                    ClusterKind::Mixed => true,
                };
                if stored {
                    let off = al.alloc(1) << cb;
                    refs.insert(off >> cb, 1);
                    bl.data.push((j, off));
                }
            }
            let tc = (needed * 8).div_ceil(cs);
            if needed > 0 {
                bl.table_offset = al.alloc(tc) << cb;
                for k in 0..tc {
                    refs.insert((bl.table_offset >> cb) + k, 1);
                }
            } else {
                // A zero-size disk: the table has no entries and occupies no
                // bytes, but its offset must still be non-zero and aligned
                // (offset 0 was the refused 2016 proposal).
                bl.table_offset = cs;
            }
            layout.bitmaps.push(bl);
        }
        if !spec.layout.directory_first {
            place_dir(al, layout, refs);
        }
        for bl in &mut layout.bitmaps {
            bl.entry_offset += layout.directory_offset;
        }
    };

    if spec.layout.bitmaps_first {
        place_bitmaps(&mut al, &mut layout, &mut refs);
        place_guest(&mut al, &mut layout, &mut refs);
    } else {
        place_guest(&mut al, &mut layout, &mut refs);
        place_bitmaps(&mut al, &mut layout, &mut refs);
    }

    // Snapshots: a table, and a copy of the active L1 each.
    let snap_entry_len = |i: usize, name: &str| -> u64 {
        let extra = if spec.version == 3 { 24 } else { 0 };
        (sf::FIXED_LENGTH as u64 + extra + (i + 1).to_string().len() as u64 + name.len() as u64)
            .div_ceil(8)
            * 8
    };
    if nsnap > 0 {
        let l1_clusters = (l1_size * 8).div_ceil(cs);
        for _ in 0..nsnap {
            let off = if l1_size > 0 {
                al.alloc(l1_clusters) << cb
            } else {
                0
            };
            for k in 0..if l1_size > 0 { l1_clusters } else { 0 } {
                refs.insert((off >> cb) + k, 1);
            }
            layout.snapshot_l1_offsets.push(off);
        }
        let table_len: u64 = spec
            .snapshots
            .iter()
            .enumerate()
            .map(|(i, n)| snap_entry_len(i, n))
            .sum();
        let n = table_len.div_ceil(cs);
        layout.snapshot_table_offset = al.alloc(n) << cb;
        for k in 0..n {
            refs.insert((layout.snapshot_table_offset >> cb) + k, 1);
        }
    }

    // Refcount structures last: enough blocks to cover every cluster,
    // including the table and the blocks themselves.
    let order = if spec.version == 2 {
        4
    } else {
        spec.refcount_order
    };
    let per_block = (cs * 8) >> order;
    let max_rc = if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u64 << order)) - 1
    };
    if let Some((_, &n)) = refs.iter().find(|(_, &n)| n > max_rc) {
        return Err(BuildError::RefcountOverflow(n, order));
    }
    let base = al.next;
    let (mut tc, mut nb) = (1u64, 1u64);
    loop {
        let total = base + 4 + tc + nb; // room for scatter gaps
        let nb2 = total.div_ceil(per_block);
        let tc2 = (nb2 * 8).div_ceil(cs);
        if nb2 <= nb && tc2 <= tc {
            break;
        }
        nb = nb.max(nb2);
        tc = tc.max(tc2);
    }
    layout.refcount_table_offset = al.alloc(tc) << cb;
    layout.refcount_table_clusters = tc as u32;
    for k in 0..tc {
        refs.insert((layout.refcount_table_offset >> cb) + k, 1);
    }
    let blocks_start = al.alloc(nb);
    for k in 0..nb {
        layout.refcount_blocks.push((blocks_start + k) << cb);
        refs.insert(blocks_start + k, 1);
    }
    refs.insert(0, 1);
    let file_clusters = al.next;
    if file_clusters > nb * per_block {
        return Err(BuildError::Invalid(
            "refcount blocks do not cover the file".into(),
        ));
    }
    layout.file_len = file_clusters << cb;
    sink.set_len(layout.file_len)?;

    // Header extensions, then the header itself.
    let mut exts: Vec<(u32, Vec<u8>)> = Vec::new();
    if let Some(f) = &spec.backing_format {
        exts.push((ext::BACKING_FORMAT, f.as_bytes().to_vec()));
    }
    if spec.feature_name_table && spec.version == 3 {
        exts.push((ext::FEATURE_NAME_TABLE, feature_name_table()));
    }
    if !spec.bitmaps.is_empty() {
        let mut d = vec![0u8; bx::LENGTH];
        bx::NB_BITMAPS.put(&mut d, spec.bitmaps.len() as u64);
        bx::BITMAP_DIRECTORY_SIZE.put(&mut d, layout.directory_size);
        bx::BITMAP_DIRECTORY_OFFSET.put(&mut d, layout.directory_offset);
        exts.push((ext::BITMAPS, d));
    }
    for u in &spec.unknown_extensions {
        exts.push((u.ext_type, u.data.clone()));
    }
    let hlen = if spec.version == 2 {
        hf::V2_LENGTH as u64
    } else {
        u64::from(spec.header_length)
    };
    let mut head = vec![0u8; hlen as usize];
    let (ext_bytes, starts) = extension_area(&exts);
    for ((t, _), start) in exts.iter().zip(starts) {
        layout.extensions.push((*t, hlen + start));
    }
    if hlen + ext_bytes.len() as u64 > cs {
        return Err(BuildError::HeaderTooLarge {
            need: hlen + ext_bytes.len() as u64,
            have: cs,
        });
    }
    hf::MAGIC.put(&mut head, 0x5146_49fb);
    hf::VERSION.put(&mut head, u64::from(spec.version));
    hf::CLUSTER_BITS.put(&mut head, u64::from(cb));
    hf::SIZE.put(&mut head, spec.size);
    hf::L1_SIZE.put(&mut head, l1_size);
    hf::L1_TABLE_OFFSET.put(&mut head, layout.l1_offset);
    hf::REFCOUNT_TABLE_OFFSET.put(&mut head, layout.refcount_table_offset);
    hf::REFCOUNT_TABLE_CLUSTERS.put(&mut head, tc);
    hf::NB_SNAPSHOTS.put(&mut head, nsnap);
    hf::SNAPSHOTS_OFFSET.put(&mut head, layout.snapshot_table_offset);
    if spec.version == 3 {
        let incompat = if ext_l2 { hf::INCOMPAT_EXTENDED_L2 } else { 0 };
        hf::INCOMPATIBLE_FEATURES.put(&mut head, incompat);
        let autoclear = if spec.bitmaps.is_empty() {
            0
        } else {
            hf::AUTOCLEAR_BITMAPS
        };
        hf::AUTOCLEAR_FEATURES.put(&mut head, autoclear);
        hf::REFCOUNT_ORDER.put(&mut head, u64::from(order));
        hf::HEADER_LENGTH.put(&mut head, hlen);
    }
    sink.write_at(0, &head)?;
    sink.write_at(hlen, &ext_bytes)?;

    // Guest data and mapping tables.
    write_guest(spec, &layout, sink, l2_entries, l2_entry, nsnap)?;

    // Snapshot table and L1 copies.
    if nsnap > 0 {
        let mut l1 = vec![0u8; (l1_size * 8) as usize];
        for (l1i, off) in &layout.l2_tables {
            l1[(*l1i * 8) as usize..(*l1i * 8 + 8) as usize].copy_from_slice(&be64(*off));
        }
        let mut table = Vec::new();
        for (i, name) in spec.snapshots.iter().enumerate() {
            let id = (i + 1).to_string();
            let extra: u64 = if spec.version == 3 { 24 } else { 0 };
            let mut e = vec![0u8; snap_entry_len(i, name) as usize];
            sf::L1_TABLE_OFFSET.put(&mut e, layout.snapshot_l1_offsets[i]);
            sf::L1_SIZE.put(&mut e, l1_size);
            sf::ID_STR_SIZE.put(&mut e, id.len() as u64);
            sf::NAME_SIZE.put(&mut e, name.len() as u64);
            sf::EXTRA_DATA_SIZE.put(&mut e, extra);
            let x = sf::FIXED_LENGTH;
            if extra > 0 {
                sf::DISK_SIZE.put(&mut e[x..], spec.size);
                sf::ICOUNT.put(&mut e[x..], u64::MAX);
            }
            let at = x + extra as usize;
            e[at..at + id.len()].copy_from_slice(id.as_bytes());
            e[at + id.len()..at + id.len() + name.len()].copy_from_slice(name.as_bytes());
            table.extend_from_slice(&e);
            if l1_size > 0 {
                sink.write_at(layout.snapshot_l1_offsets[i], &l1)?;
            }
        }
        sink.write_at(layout.snapshot_table_offset, &table)?;
    }

    // Bitmap directory, tables and data.
    write_bitmaps(spec, &layout, sink)?;

    // Refcounts.
    write_refcounts(&layout, &refs, order, per_block, sink)?;
    Ok(layout)
}

/// The header extension area for `exts` (type, data): each extension's
/// type and length, its data padded to 8 bytes, then the end marker;
/// with where each extension starts in the area.
pub(crate) fn extension_area(exts: &[(u32, Vec<u8>)]) -> (Vec<u8>, Vec<u64>) {
    let mut area = Vec::new();
    let mut starts = Vec::with_capacity(exts.len());
    for (t, d) in exts {
        starts.push(area.len() as u64);
        let mut prefix = [0u8; ext::PREFIX_LENGTH];
        ext::TYPE.put(&mut prefix, u64::from(*t));
        ext::LENGTH.put(&mut prefix, d.len() as u64);
        area.extend_from_slice(&prefix);
        area.extend_from_slice(d);
        area.resize(area.len().div_ceil(8) * 8, 0);
    }
    area.extend_from_slice(&[0u8; ext::PREFIX_LENGTH]); // end of extensions
    (area, starts)
}

fn feature_name_table() -> Vec<u8> {
    let rows: &[(u8, u8, &str)] = &[
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];
    let mut out = Vec::new();
    for (t, bit, name) in rows {
        let mut row = [0u8; 48];
        row[0] = *t;
        row[1] = *bit;
        row[2..2 + name.len()].copy_from_slice(name.as_bytes());
        out.extend_from_slice(&row);
    }
    out
}

fn write_guest(
    spec: &ImageSpec,
    layout: &Layout,
    sink: &mut impl Sink,
    l2_entries: u64,
    l2_entry: u64,
    nsnap: u64,
) -> Result<(), BuildError> {
    let cb = layout.cluster_bits;
    let cs = 1u64 << cb;
    let copied = if nsnap == 0 {
        spec_model::fields::mapping::COPIED
    } else {
        0
    };
    // Active L1.
    if layout.l1_size > 0 {
        let mut l1 = vec![0u8; layout.l1_size as usize * 8];
        for (l1i, off) in &layout.l2_tables {
            l1[(*l1i * 8) as usize..(*l1i * 8 + 8) as usize].copy_from_slice(&be64(off | copied));
        }
        sink.write_at(layout.l1_offset, &l1)?;
    }
    // L2 tables.
    let mut tables: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for &(gc, host) in &layout.data_clusters {
        let l1i = gc / l2_entries;
        let t = tables.entry(l1i).or_insert_with(|| vec![0u8; cs as usize]);
        let at = ((gc % l2_entries) * l2_entry) as usize;
        t[at..at + 8].copy_from_slice(&be64(host | copied));
        if l2_entry == 16 {
            // Every subcluster allocated.
            t[at + 8..at + 16].copy_from_slice(&be64(0xffff_ffff));
        }
    }
    for (l1i, off) in &layout.l2_tables {
        if let Some(t) = tables.get(l1i) {
            sink.write_at(*off, t)?;
        }
    }
    // Data clusters: later writes win where writes overlap.
    let mut buf = vec![0u8; cs as usize];
    for &(gc, host) in &layout.data_clusters {
        buf.fill(0);
        let (lo, hi) = (gc * cs, (gc + 1) * cs);
        for w in &spec.writes {
            let (a, b) = (w.offset.max(lo), (w.offset + w.len).min(hi));
            if a < b {
                buf[(a - lo) as usize..(b - lo) as usize].fill(w.pattern);
            }
        }
        sink.write_at(host, &buf)?;
    }
    Ok(())
}

fn write_bitmaps(
    spec: &ImageSpec,
    layout: &Layout,
    sink: &mut impl Sink,
) -> Result<(), BuildError> {
    if spec.bitmaps.is_empty() {
        return Ok(());
    }
    let cs = layout.cluster_size();
    let mut dir = Vec::with_capacity(layout.directory_size as usize);
    let mut buf = vec![0u8; cs as usize];
    for (b, bl) in spec.bitmaps.iter().zip(&layout.bitmaps) {
        dir.extend_from_slice(&entry_bytes(b, bl));
        let geo = spec.geometry(b);
        let ranges = b.contents.ranges(geo.nbits());
        let mut table = vec![0u8; bl.table_size as usize * 8];
        for j in 0..u64::from(bl.table_size) {
            let kind = classify(&ranges, geo.nbits(), cs, j);
            if kind == ClusterKind::Ones && b.ones_entries {
                table[(j * 8) as usize..(j * 8 + 8) as usize].copy_from_slice(&be64(1));
            }
        }
        for &(j, off) in &bl.data {
            let len = cs.min(geo.nbytes() - j * cs) as usize;
            buf.fill(0);
            fill_bytes(&ranges, j * cs, &mut buf[..len]);
            sink.write_at(off, &buf)?;
            table[(j * 8) as usize..(j * 8 + 8) as usize].copy_from_slice(&be64(off));
        }
        if !table.is_empty() {
            sink.write_at(bl.table_offset, &table)?;
        }
    }
    sink.write_at(layout.directory_offset, &dir)?;
    Ok(())
}

/// The directory entry of bitmap `b` (fixed part, extra data, name, padding).
pub fn entry_bytes(b: &BitmapSpec, bl: &BitmapLayout) -> Vec<u8> {
    let mut e = vec![0u8; bl.entry_length as usize];
    be::BITMAP_TABLE_OFFSET.put(&mut e, bl.table_offset);
    be::BITMAP_TABLE_SIZE.put(&mut e, u64::from(bl.table_size));
    be::FLAGS.put(&mut e, u64::from(b.flags()));
    be::TYPE.put(&mut e, u64::from(b.bitmap_type));
    be::GRANULARITY_BITS.put(&mut e, u64::from(b.granularity_bits));
    be::NAME_SIZE.put(&mut e, b.name.len() as u64);
    be::EXTRA_DATA_SIZE.put(&mut e, b.extra_data.len() as u64);
    put_parts(&mut e, be::FIXED_LENGTH, &[&b.extra_data, &b.name]);
    e
}

/// Copies `parts` one after another into `e` from byte `at`: an entry's
/// variable part (extra data and name, in its layout's order).
pub(crate) fn put_parts(e: &mut [u8], at: usize, parts: &[&[u8]]) {
    let mut at = at;
    for p in parts {
        e[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
}

fn write_refcounts(
    layout: &Layout,
    refs: &BTreeMap<u64, u64>,
    order: u32,
    per_block: u64,
    sink: &mut impl Sink,
) -> Result<(), BuildError> {
    let cs = layout.cluster_size();
    let mut table = vec![0u8; layout.refcount_table_clusters as usize * cs as usize];
    for (i, &off) in layout.refcount_blocks.iter().enumerate() {
        table[i * 8..i * 8 + 8].copy_from_slice(&be64(off));
        let mut block = vec![0u8; cs as usize];
        let first = i as u64 * per_block;
        for (&c, &n) in refs.range(first..first + per_block) {
            put_refcount(&mut block, c - first, order, n);
        }
        sink.write_at(off, &block)?;
    }
    sink.write_at(layout.refcount_table_offset, &table)?;
    Ok(())
}

/// Stores refcount `value` at `index` of a block (sub-byte widths LSB first).
pub fn put_refcount(block: &mut [u8], index: u64, order: u32, value: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let byte = &mut block[(index / per_byte) as usize];
        let shift = (index % per_byte) * bits;
        let mask = ((1u16 << bits) - 1) as u8;
        *byte = (*byte & !(mask << shift)) | ((value as u8 & mask) << shift);
    } else {
        let width = (bits / 8) as usize;
        let start = index as usize * width;
        let v = value.to_be_bytes();
        block[start..start + width].copy_from_slice(&v[8 - width..]);
    }
}
