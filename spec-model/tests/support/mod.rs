//! A deliberately small in-memory qcow2 writer for the rule tests.
//!
//! `Spec` describes an image (version 2 or 3, cluster size, refcount width,
//! a few guest clusters, optional snapshot, header extensions and bitmaps);
//! `Spec::build` lays it out cluster by cluster with every refcount right
//! and returns the bytes together with a `Layout` that says where each
//! structure went, so that a test can break exactly one field afterwards.
//! Fields are written through `spec_model::fields`, never at literal offsets.

#![allow(dead_code)]

use spec_model::fields::{bitmap_entry, bitmaps_ext, extension, header, mapping, snapshot, Field};
use spec_model::{check_bytes, Report};

/// Default virtual size: 20 MiB plus three 512-byte sectors, so that every
/// bitmap has a partial last byte and a partial last cluster.
pub const SIZE: u64 = (20 << 20) + 3 * 512;
/// An extension type the spec does not define.
pub const UNKNOWN_EXT: u32 = 0x1234_5678;
/// Byte every guest data cluster is filled with.
const GUEST_FILL: u8 = 0xa5;

/// One bitmap to write.
#[derive(Debug, Clone)]
pub struct BitmapSpec {
    pub name: Vec<u8>,
    pub granularity_bits: u8,
    pub flags: u32,
    pub bitmap_type: u8,
    pub extra_data: Vec<u8>,
    pub table: TableSpec,
}

/// What a bitmap's table and data clusters hold.
#[derive(Debug, Clone, Default)]
pub struct TableSpec {
    /// Indices of the bits to set (each below `nbits`).
    pub set_bits: Vec<u64>,
    /// Table entries written as "all ones" (value 1) instead of data.
    pub all_ones: Vec<u64>,
    /// Number of table entries; `None` writes exactly the needed number.
    pub size: Option<u32>,
}

impl BitmapSpec {
    /// An enabled (`auto`) dirty-tracking bitmap with no bits set.
    pub fn new(name: impl AsRef<[u8]>, granularity_bits: u8) -> BitmapSpec {
        BitmapSpec {
            name: name.as_ref().to_vec(),
            granularity_bits,
            flags: bitmap_entry::FLAG_AUTO as u32,
            bitmap_type: bitmap_entry::TYPE_DIRTY_TRACKING as u8,
            extra_data: Vec::new(),
            table: TableSpec::default(),
        }
    }

    pub fn bits(mut self, bits: &[u64]) -> BitmapSpec {
        self.table.set_bits = bits.to_vec();
        self
    }

    pub fn flags(mut self, flags: u64) -> BitmapSpec {
        self.flags = flags as u32;
        self
    }

    pub fn all_ones(mut self, entries: &[u64]) -> BitmapSpec {
        self.table.all_ones = entries.to_vec();
        self
    }

    pub fn table_size(mut self, entries: u32) -> BitmapSpec {
        self.table.size = Some(entries);
        self
    }

    pub fn extra_data(mut self, data: Vec<u8>) -> BitmapSpec {
        self.extra_data = data;
        self
    }

    /// Size of the directory entry, padding included.
    pub fn entry_length(&self) -> u64 {
        bitmap_entry::entry_length(self.extra_data.len() as u64, self.name.len() as u64)
    }
}

/// Bits of a bitmap with `granularity_bits` over `size` virtual bytes.
pub fn nbits(size: u64, granularity_bits: u32) -> u64 {
    let g = 1u128 << granularity_bits;
    (u128::from(size).div_ceil(g)) as u64
}

/// An image to build.
#[derive(Debug, Clone)]
pub struct Spec {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    /// Forced to 4 for version 2.
    pub refcount_order: u32,
    /// Version 3 only; extensions start here.
    pub header_length: u32,
    /// Written when `header_length` > 104.
    pub compression_type: u8,
    pub incompatible_features: u64,
    /// `None`: bit 0 exactly when the image has bitmaps (v3).
    pub autoclear_features: Option<u64>,
    /// Sets incompatible bit 4 and writes 16-byte L2 entries.
    pub extended_l2: bool,
    /// Guest clusters mapped from virtual offset 0, all through one L2 table.
    pub guest_clusters: u64,
    /// Writes a feature name table extension first.
    pub feature_table: bool,
    /// Written after the bitmaps extension, in order.
    pub extra_extensions: Vec<(u32, Vec<u8>)>,
    pub bitmaps: Vec<BitmapSpec>,
    /// `Some(n)`: one snapshot (of an empty disk) with `n` bytes of extra data.
    pub snapshot_extra_data: Option<u32>,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            version: 3,
            cluster_bits: 12,
            size: SIZE,
            refcount_order: 4,
            header_length: header::V3_MIN_LENGTH as u32,
            compression_type: 0,
            incompatible_features: 0,
            autoclear_features: None,
            extended_l2: false,
            guest_clusters: 2,
            feature_table: false,
            extra_extensions: Vec::new(),
            bitmaps: Vec::new(),
            snapshot_extra_data: None,
        }
    }
}

/// The bitmap most tests break: granularity 512 bytes over `SIZE` gives
/// 40963 bits in 5121 bytes, i.e. two 4 KiB data clusters, both allocated.
pub fn base_bitmap() -> BitmapSpec {
    BitmapSpec::new("b0", 9).bits(&[0, 5, 4096 * 8 + 1, 40962])
}

/// A v3 image with 4 KiB clusters, two guest clusters and `base_bitmap`.
pub fn base() -> Spec {
    Spec {
        bitmaps: vec![base_bitmap()],
        ..Spec::default()
    }
}

/// Where the builder put each bitmap's structures.
#[derive(Debug, Clone)]
pub struct EntryLayout {
    /// File offset of the directory entry.
    pub offset: u64,
    pub table_offset: u64,
    pub table_size: u32,
    /// Data cluster of each table entry (0 when none was allocated).
    pub data: Vec<u64>,
    pub nbits: u64,
}

/// Where the builder put every structure.
#[derive(Debug, Clone)]
pub struct Layout {
    pub cluster_bits: u32,
    pub cluster_size: u64,
    pub refcount_order: u32,
    pub l1_offset: u64,
    pub l1_size: u32,
    /// 0 when there are no guest clusters.
    pub l2_offset: u64,
    pub l2_entry_size: u64,
    pub guest_data: Vec<u64>,
    pub refcount_table_offset: u64,
    pub refcount_blocks: Vec<u64>,
    /// (type, offset of the type field) of every extension written.
    pub extensions: Vec<(u32, u64)>,
    pub directory_offset: u64,
    pub directory_size: u64,
    pub entries: Vec<EntryLayout>,
    pub snapshot_table_offset: u64,
    pub snapshot_l1_offset: u64,
}

impl Layout {
    /// Offset of the type field of the first extension of type `t`.
    pub fn extension(&self, t: u32) -> u64 {
        self.extensions
            .iter()
            .find(|(ty, _)| *ty == t)
            .map(|(_, at)| *at)
            .unwrap_or_else(|| panic!("no extension {t:#x} was written"))
    }

    /// Offset of the bitmaps extension's data.
    pub fn bitmaps_ext_data(&self) -> u64 {
        self.extension(extension::BITMAPS) + extension::PREFIX_LENGTH as u64
    }

    /// Offset of table entry `j` of bitmap `i`.
    pub fn table_entry(&self, i: usize, j: u64) -> u64 {
        self.entries[i].table_offset + 8 * j
    }

    /// Offset of L2 entry `i` (its first 8 bytes).
    pub fn l2_entry(&self, i: u64) -> u64 {
        self.l2_offset + self.l2_entry_size * i
    }
}

/// A built image and its layout.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    pub layout: Layout,
}

impl Image {
    pub fn check(&self) -> Report {
        check_bytes(&self.bytes)
    }

    /// Applies `f` and returns the image, for one-expression test images.
    pub fn with(mut self, f: impl FnOnce(&mut Image)) -> Image {
        f(&mut self);
        self
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Writes `field` of the structure that starts at `at`.
    pub fn put(&mut self, at: u64, field: Field, value: u64) {
        field.put(&mut self.bytes[at as usize..], value);
    }

    /// Reads `field` of the structure that starts at `at`.
    pub fn get(&self, at: u64, field: Field) -> u64 {
        field.get(&self.bytes[at as usize..])
    }

    pub fn put_u64(&mut self, at: u64, value: u64) {
        self.put(at, Field::new("u64", 0, 8), value);
    }

    pub fn get_u64(&self, at: u64) -> u64 {
        self.get(at, Field::new("u64", 0, 8))
    }

    /// Writes the refcount of the cluster holding `offset`.
    pub fn set_refcount(&mut self, offset: u64, value: u64) {
        let l = &self.layout;
        let per_block = (l.cluster_size * 8) >> l.refcount_order;
        let c = offset >> l.cluster_bits;
        let block = l.refcount_blocks[(c / per_block) as usize];
        put_refcount(
            &mut self.bytes[block as usize..],
            c % per_block,
            l.refcount_order,
            value,
        );
    }
}

/// Stores refcount `index` of a block: entries narrower than a byte are
/// packed least significant bits first, wider ones are big-endian.
fn put_refcount(block: &mut [u8], index: u64, order: u32, value: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let shift = (index % per_byte) * bits;
        let mask = (((1u16 << bits) - 1) as u8) << shift;
        let byte = &mut block[(index / per_byte) as usize];
        *byte = (*byte & !mask) | (((value as u8) << shift) & mask);
    } else {
        let width = (bits / 8) as usize;
        let field = Field::new("refcount", index as usize * width, width);
        field.put(block, value);
    }
}

/// Appends whole clusters and remembers that each is referenced once.
struct Writer {
    bytes: Vec<u8>,
    cluster_size: u64,
    clusters: u64,
}

impl Writer {
    fn alloc(&mut self, clusters: u64) -> u64 {
        let at = self.bytes.len() as u64;
        let n = clusters.max(1);
        self.bytes.resize((at + n * self.cluster_size) as usize, 0);
        self.clusters += n;
        at
    }

    fn clusters_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.cluster_size).max(1)
    }

    fn put(&mut self, at: u64, field: Field, value: u64) {
        field.put(&mut self.bytes[at as usize..], value);
    }

    fn put_u64(&mut self, at: u64, value: u64) {
        self.put(at, Field::new("u64", 0, 8), value);
    }

    fn write(&mut self, at: u64, data: &[u8]) {
        self.bytes[at as usize..at as usize + data.len()].copy_from_slice(data);
    }
}

impl Spec {
    pub fn build(&self) -> Image {
        let v2 = self.version == 2;
        let order = if v2 { 4 } else { self.refcount_order };
        let cs = 1u64 << self.cluster_bits;
        let mut w = Writer {
            bytes: Vec::new(),
            cluster_size: cs,
            clusters: 0,
        };
        let header_at = w.alloc(1);
        let refcount_table_offset = w.alloc(1);

        // Guest mapping: L1, one L2 table, `guest_clusters` data clusters.
        let l2_entry_size = if self.extended_l2 { 16 } else { 8 };
        let per_l1_entry = u128::from(cs) * u128::from(cs / l2_entry_size);
        let l1_size = u128::from(self.size).div_ceil(per_l1_entry) as u64;
        let l1_offset = if l1_size > 0 {
            w.alloc(w.clusters_for(l1_size * 8))
        } else {
            0
        };
        let (mut l2_offset, mut guest_data) = (0, Vec::new());
        if self.guest_clusters > 0 {
            assert!(l1_size > 0, "guest clusters need a non-empty disk");
            l2_offset = w.alloc(1);
            w.put_u64(l1_offset, l2_offset | mapping::COPIED);
            for i in 0..self.guest_clusters {
                let data = w.alloc(1);
                w.bytes[data as usize..(data + cs) as usize].fill(GUEST_FILL);
                let at = l2_offset + l2_entry_size * i;
                w.put_u64(at, data | mapping::COPIED);
                if self.extended_l2 {
                    // Bits 0-31: every subcluster allocated.
                    w.put_u64(at + 8, 0xffff_ffff);
                }
                guest_data.push(data);
            }
        }

        // One snapshot of an empty disk: its own, all-zero L1 table.
        let (mut snapshot_table_offset, mut snapshot_l1_offset) = (0, 0);
        if let Some(extra) = self.snapshot_extra_data {
            if l1_size > 0 {
                snapshot_l1_offset = w.alloc(w.clusters_for(l1_size * 8));
            }
            snapshot_table_offset = w.alloc(1);
            let at = snapshot_table_offset;
            w.put(at, snapshot::L1_TABLE_OFFSET, snapshot_l1_offset);
            w.put(at, snapshot::L1_SIZE, l1_size);
            w.put(at, snapshot::ID_STR_SIZE, 1);
            w.put(at, snapshot::NAME_SIZE, 4);
            w.put(at, snapshot::EXTRA_DATA_SIZE, u64::from(extra));
            let extra_at = at + snapshot::FIXED_LENGTH as u64;
            let mut extra_bytes = vec![0u8; extra as usize];
            if snapshot::DISK_SIZE.end() <= extra_bytes.len() {
                snapshot::DISK_SIZE.put(&mut extra_bytes, self.size);
            }
            w.write(extra_at, &extra_bytes);
            w.write(extra_at + u64::from(extra), b"1snap");
        }

        // Bitmap directory, then each bitmap's table and data clusters.
        let directory_size: u64 = self.bitmaps.iter().map(|b| b.entry_length()).sum();
        let directory_offset = if self.bitmaps.is_empty() {
            0
        } else {
            w.alloc(w.clusters_for(directory_size))
        };
        let mut entries = Vec::new();
        let mut entry_at = directory_offset;
        for b in &self.bitmaps {
            let g = u32::from(b.granularity_bits);
            assert!(g <= 63, "write granularity 64+ by patching the entry");
            let nbits = nbits(self.size, g);
            let needed = nbits.div_ceil(8).div_ceil(cs);
            assert!(
                b.table.set_bits.iter().all(|&k| k < nbits),
                "bit past nbits"
            );
            let table_size = b.table.size.map_or(needed, u64::from);
            // A table of no entries occupies no cluster; it still needs a
            // non-zero, aligned offset, so it points at the directory.
            let table_offset = if table_size > 0 {
                w.alloc(w.clusters_for(table_size * 8))
            } else {
                directory_offset
            };
            let mut data = vec![0u64; table_size as usize];
            for j in 0..table_size.min(needed) {
                let table_entry = table_offset + 8 * j;
                if b.table.all_ones.contains(&j) {
                    w.put_u64(table_entry, 1);
                    continue;
                }
                let first_bit = j * cs * 8;
                let bits: Vec<u64> = b
                    .table
                    .set_bits
                    .iter()
                    .copied()
                    .filter(|k| (first_bit..first_bit + cs * 8).contains(k))
                    .collect();
                if bits.is_empty() {
                    continue; // unallocated: reads as zeros
                }
                let cluster = w.alloc(1);
                for k in bits {
                    let byte = (cluster + (k - first_bit) / 8) as usize;
                    w.bytes[byte] |= 1 << (k % 8);
                }
                w.put_u64(table_entry, cluster);
                data[j as usize] = cluster;
            }
            use bitmap_entry as entry;
            w.put(entry_at, entry::BITMAP_TABLE_OFFSET, table_offset);
            w.put(entry_at, entry::BITMAP_TABLE_SIZE, table_size);
            w.put(entry_at, entry::FLAGS, u64::from(b.flags));
            w.put(entry_at, entry::TYPE, u64::from(b.bitmap_type));
            w.put(
                entry_at,
                entry::GRANULARITY_BITS,
                u64::from(b.granularity_bits),
            );
            w.put(entry_at, entry::NAME_SIZE, b.name.len() as u64);
            w.put(entry_at, entry::EXTRA_DATA_SIZE, b.extra_data.len() as u64);
            let extra_at = entry_at + entry::FIXED_LENGTH as u64;
            w.write(extra_at, &b.extra_data);
            w.write(extra_at + b.extra_data.len() as u64, &b.name);
            entries.push(EntryLayout {
                offset: entry_at,
                table_offset,
                table_size: table_size as u32,
                data,
                nbits,
            });
            entry_at += b.entry_length();
        }

        // Header extensions, inside the first cluster.
        let mut exts: Vec<(u32, Vec<u8>)> = Vec::new();
        if self.feature_table {
            exts.push((extension::FEATURE_NAME_TABLE, feature_name_table()));
        }
        if !self.bitmaps.is_empty() {
            let mut data = vec![0u8; bitmaps_ext::LENGTH];
            bitmaps_ext::NB_BITMAPS.put(&mut data, self.bitmaps.len() as u64);
            bitmaps_ext::BITMAP_DIRECTORY_SIZE.put(&mut data, directory_size);
            bitmaps_ext::BITMAP_DIRECTORY_OFFSET.put(&mut data, directory_offset);
            exts.push((extension::BITMAPS, data));
        }
        exts.extend(self.extra_extensions.iter().cloned());
        let mut pos = if v2 {
            header::V2_LENGTH as u64
        } else {
            u64::from(self.header_length)
        };
        let mut extensions = Vec::new();
        for (t, data) in &exts {
            let padded = (data.len() as u64).div_ceil(8) * 8;
            assert!(
                pos + 8 + padded <= cs,
                "extensions overflow the header cluster"
            );
            w.put(pos, extension::TYPE, u64::from(*t));
            w.put(pos, extension::LENGTH, data.len() as u64);
            w.write(pos + 8, data);
            extensions.push((*t, pos));
            pos += 8 + padded;
        }
        // The end marker is eight zero bytes, already there when it fits.

        // Refcount blocks go last: enough of them to cover themselves too.
        let per_block = (cs * 8) >> order;
        let mut nblocks = 1;
        while nblocks * per_block < w.clusters + nblocks {
            nblocks += 1;
        }
        assert!(
            nblocks <= cs / 8,
            "refcount table needs more than one cluster"
        );
        let total = w.clusters + nblocks;
        let refcount_blocks: Vec<u64> = (0..nblocks).map(|_| w.alloc(1)).collect();
        for (i, &block) in refcount_blocks.iter().enumerate() {
            w.put_u64(refcount_table_offset + 8 * i as u64, block);
        }
        for c in 0..total {
            let block = refcount_blocks[(c / per_block) as usize] as usize;
            put_refcount(&mut w.bytes[block..], c % per_block, order, 1);
        }

        // The header itself.
        use header as hdr;
        w.put(header_at, hdr::MAGIC, 0x5146_49fb);
        w.put(header_at, hdr::VERSION, u64::from(self.version));
        w.put(header_at, hdr::CLUSTER_BITS, u64::from(self.cluster_bits));
        w.put(header_at, hdr::SIZE, self.size);
        w.put(header_at, hdr::L1_SIZE, l1_size);
        w.put(header_at, hdr::L1_TABLE_OFFSET, l1_offset);
        w.put(header_at, hdr::REFCOUNT_TABLE_OFFSET, refcount_table_offset);
        w.put(header_at, hdr::REFCOUNT_TABLE_CLUSTERS, 1);
        if self.snapshot_extra_data.is_some() {
            w.put(header_at, hdr::NB_SNAPSHOTS, 1);
            w.put(header_at, hdr::SNAPSHOTS_OFFSET, snapshot_table_offset);
        }
        if !v2 {
            let mut incompatible = self.incompatible_features;
            if self.extended_l2 {
                incompatible |= hdr::INCOMPAT_EXTENDED_L2;
            }
            let autoclear = self
                .autoclear_features
                .unwrap_or(if self.bitmaps.is_empty() {
                    0
                } else {
                    hdr::AUTOCLEAR_BITMAPS
                });
            w.put(header_at, hdr::INCOMPATIBLE_FEATURES, incompatible);
            w.put(header_at, hdr::AUTOCLEAR_FEATURES, autoclear);
            w.put(header_at, hdr::REFCOUNT_ORDER, u64::from(order));
            w.put(header_at, hdr::HEADER_LENGTH, u64::from(self.header_length));
            if self.header_length as usize > hdr::COMPRESSION_TYPE.offset {
                w.put(
                    header_at,
                    hdr::COMPRESSION_TYPE,
                    u64::from(self.compression_type),
                );
            }
        }

        Image {
            bytes: w.bytes,
            layout: Layout {
                cluster_bits: self.cluster_bits,
                cluster_size: cs,
                refcount_order: order,
                l1_offset,
                l1_size: l1_size as u32,
                l2_offset,
                l2_entry_size,
                guest_data,
                refcount_table_offset,
                refcount_blocks,
                extensions,
                directory_offset,
                directory_size,
                entries,
                snapshot_table_offset,
                snapshot_l1_offset,
            },
        }
    }
}

/// A feature name table naming the bits this builder uses.
fn feature_name_table() -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, bit, name) in [
        (0u8, 0u8, &b"dirty bit"[..]),
        (0, 1, b"corrupt bit"),
        (0, 4, b"extended L2 entries"),
        (2, 0, b"bitmaps"),
    ] {
        let mut entry = [0u8; 48];
        entry[0] = kind;
        entry[1] = bit;
        entry[2..2 + name.len()].copy_from_slice(name);
        out.extend_from_slice(&entry);
    }
    out
}
