//! The built image being mutated ([`Target`]) and its accessors: fields
//! read and written in place, and the structures an `apply` step looks up
//! in the layout (the bitmaps extension, a bitmap's table and data, L1/L2
//! entries, refcounts).

use super::Skip;
use crate::build::{put_refcount, BitmapLayout, Layout};
use crate::spec::ImageSpec;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use spec_model::fields::Field;

/// A built image with its layout, being mutated.
pub struct Target {
    pub bytes: Vec<u8>,
    pub layout: Layout,
    /// What the image describes; `apply` updates it where the change is
    /// visible in the expected bitmaps (a renamed bitmap, a new flag).
    pub spec: ImageSpec,
    /// Choices of `apply` (which bit, which value), seeded.
    pub rng: ChaCha8Rng,
}

impl Target {
    pub fn cluster_size(&self) -> u64 {
        self.layout.cluster_size()
    }

    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Reads a field of the structure at `at`.
    pub fn get(&self, at: u64, f: Field) -> u64 {
        f.get(&self.bytes[at as usize..])
    }

    /// Writes a field of the structure at `at`.
    pub fn put(&mut self, at: u64, f: Field, v: u64) {
        f.put(&mut self.bytes[at as usize..], v)
    }

    pub fn get_u64(&self, at: u64) -> u64 {
        self.get(at, U64)
    }

    pub fn put_u64(&mut self, at: u64, v: u64) {
        self.put(at, U64, v)
    }

    /// File offset of the bitmaps extension's data.
    pub(super) fn ext_data(&self) -> Result<u64, Skip> {
        self.layout.bitmaps_ext_data().ok_or("no bitmaps extension")
    }

    pub(super) fn bitmap(&self, i: usize) -> Result<&BitmapLayout, Skip> {
        self.layout.bitmaps.get(i).ok_or("no such bitmap")
    }

    /// File offset of entry `j` of bitmap `i`'s table.
    pub(super) fn table_entry(&self, i: usize, j: u64) -> Result<u64, Skip> {
        Ok(self.bitmap(i)?.table_offset + 8 * j)
    }

    /// A random stored data cluster of bitmap `i`: (table index, offset).
    pub(super) fn stored_data(&mut self, i: usize) -> Result<(u64, u64), Skip> {
        let data = &self.bitmap(i)?.data;
        if data.is_empty() {
            return Err("bitmap has no stored data cluster");
        }
        let k = self.rng.gen_range(0..data.len());
        Ok(self.layout.bitmaps[i].data[k])
    }

    pub(super) fn refcount_order(&self) -> u32 {
        if self.spec.version == 2 {
            4
        } else {
            self.spec.refcount_order
        }
    }

    /// Stores `value` as the refcount of the cluster holding `offset`.
    pub fn set_refcount(&mut self, offset: u64, value: u64) {
        let cb = self.layout.cluster_bits;
        let order = self.refcount_order();
        let per_block = (self.cluster_size() * 8) >> order;
        let c = offset >> cb;
        let block = self.layout.refcount_blocks[(c / per_block) as usize] as usize;
        let cs = self.cluster_size() as usize;
        put_refcount(
            &mut self.bytes[block..block + cs],
            c % per_block,
            order,
            value,
        );
    }

    /// File offset of the first unused refcount table entry.
    pub(super) fn unused_refcount_entry(&self) -> Result<u64, Skip> {
        let used = self.layout.refcount_blocks.len() as u64;
        let entries = u64::from(self.layout.refcount_table_clusters) * self.cluster_size() / 8;
        if used >= entries {
            return Err("refcount table has no unused entry");
        }
        Ok(self.layout.refcount_table_offset + 8 * used)
    }

    /// Bytes per L2 entry.
    pub(super) fn l2_entry_size(&self) -> u64 {
        if self.spec.extended_l2 && self.spec.version == 3 {
            16
        } else {
            8
        }
    }

    /// File offset of the L2 entry mapping guest cluster `gc`.
    pub(super) fn l2_entry(&self, gc: u64) -> Result<u64, Skip> {
        let per = self.cluster_size() / self.l2_entry_size();
        let (_, l2) = self
            .layout
            .l2_tables
            .iter()
            .find(|(l1i, _)| *l1i == gc / per)
            .ok_or("guest cluster not mapped")?;
        Ok(l2 + (gc % per) * self.l2_entry_size())
    }

    /// File offset of the L2 entry of a random mapped guest cluster.
    pub(super) fn mapped_l2_entry(&mut self) -> Result<u64, Skip> {
        let (gc, _) = self.data_cluster()?;
        self.l2_entry(gc)
    }

    /// File offset of bitmap 0's table entry for a random stored data
    /// cluster.
    pub(super) fn stored_table_entry(&mut self) -> Result<u64, Skip> {
        let (j, _) = self.stored_data(0)?;
        self.table_entry(0, j)
    }

    /// A random mapped guest cluster: (guest cluster, host offset).
    pub(super) fn data_cluster(&mut self) -> Result<(u64, u64), Skip> {
        let n = self.layout.data_clusters.len();
        if n == 0 {
            return Err("no guest data cluster");
        }
        Ok(self.layout.data_clusters[self.rng.gen_range(0..n)])
    }

    /// File offset of a random used L1 entry.
    pub(super) fn used_l1_entry(&mut self) -> Result<u64, Skip> {
        let n = self.layout.l2_tables.len();
        if n == 0 {
            return Err("no L2 table");
        }
        let (l1i, _) = self.layout.l2_tables[self.rng.gen_range(0..n)];
        Ok(self.layout.l1_offset + 8 * l1i)
    }

    /// A misalignment that only touches offset bits 9 and up (bits 1-8
    /// of table entries are reserved): a non-zero multiple of 512 below
    /// the cluster size.
    pub(super) fn misalign_512(&mut self) -> Result<u64, Skip> {
        let sectors = self.cluster_size() / 512;
        if sectors < 2 {
            return Err("512-byte clusters cannot be misaligned by 512");
        }
        Ok(512 * self.rng.gen_range(1..sectors))
    }

    /// A cluster offset at or past the end of the file (up to 3 clusters
    /// past it).
    pub(super) fn past_eof(&mut self) -> u64 {
        self.file_len() + self.cluster_size() * self.rng.gen_range(0..4)
    }

    /// File offset of the last header extension's type field.
    pub(super) fn last_extension(&self) -> Result<u64, Skip> {
        let &(_, at) = self.layout.extensions.last().ok_or("no extension")?;
        Ok(at)
    }
}

/// A whole 64-bit table entry (L1, L2, refcount or bitmap table).
pub(super) const U64: Field = Field::new("u64", 0, 8);
