//! Cluster accounting, the way a refcount rebuild sees the file: every
//! cluster that a structure references is claimed by that structure; the
//! claims are later compared with the stored refcounts.

use crate::finding::write_message;
use crate::finding::Findings;
use crate::rules::Rule;
use serde::Serialize;

/// What a cluster is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Owner {
    Free = 0,
    Header,
    L1Table,
    L2Table,
    GuestData,
    CompressedData,
    RefcountTable,
    RefcountBlock,
    SnapshotTable,
    SnapshotL1Table,
    EncryptionHeader,
    BitmapDirectory,
    BitmapTable,
    BitmapData,
}

impl Owner {
    const ALL: [Owner; 14] = [
        Owner::Free,
        Owner::Header,
        Owner::L1Table,
        Owner::L2Table,
        Owner::GuestData,
        Owner::CompressedData,
        Owner::RefcountTable,
        Owner::RefcountBlock,
        Owner::SnapshotTable,
        Owner::SnapshotL1Table,
        Owner::EncryptionHeader,
        Owner::BitmapDirectory,
        Owner::BitmapTable,
        Owner::BitmapData,
    ];

    fn from_u8(v: u8) -> Owner {
        Owner::ALL.get(v as usize).copied().unwrap_or(Owner::Free)
    }

    /// Name used in messages and dumps.
    pub fn name(self) -> &'static str {
        match self {
            Owner::Free => "free",
            Owner::Header => "header",
            Owner::L1Table => "L1 table",
            Owner::L2Table => "L2 table",
            Owner::GuestData => "guest data",
            Owner::CompressedData => "compressed guest data",
            Owner::RefcountTable => "refcount table",
            Owner::RefcountBlock => "refcount block",
            Owner::SnapshotTable => "snapshot table",
            Owner::SnapshotL1Table => "snapshot L1 table",
            Owner::EncryptionHeader => "encryption header",
            Owner::BitmapDirectory => "bitmap directory",
            Owner::BitmapTable => "bitmap table",
            Owner::BitmapData => "bitmap data",
        }
    }

    /// True for the bitmaps feature's own structures.
    pub fn is_bitmap(self) -> bool {
        matches!(
            self,
            Owner::BitmapDirectory | Owner::BitmapTable | Owner::BitmapData
        )
    }

    /// Structures that several references may legitimately share: L2
    /// tables and guest clusters shared with snapshots, and compressed
    /// clusters packed into the same host cluster.
    fn shareable(self) -> bool {
        matches!(
            self,
            Owner::L2Table | Owner::GuestData | Owner::CompressedData
        )
    }
}

/// Result of claiming a byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Claim {
    /// Part of the range lies past the end of the file; the clusters that
    /// lie inside it were claimed.
    pub past_end: bool,
    /// Some cluster of the range already had an owner. Tables claimed this
    /// way are not walked again, which bounds the work by the file's size.
    pub shared: bool,
}

/// Per-cluster owner and reference count, sized by the file (not by any
/// size field).
#[derive(Debug)]
pub struct ClusterMap {
    cluster_bits: u32,
    owner: Vec<u8>,
    refs: Vec<u32>,
}

impl ClusterMap {
    /// A map for a file of `file_len` bytes.
    pub fn new(cluster_bits: u32, file_len: u64) -> ClusterMap {
        let n = file_len.div_ceil(1u64 << cluster_bits) as usize;
        ClusterMap {
            cluster_bits,
            owner: vec![0; n],
            refs: vec![0; n],
        }
    }

    /// Number of clusters that the file (partly) covers.
    pub fn len(&self) -> u64 {
        self.owner.len() as u64
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }

    /// Owner and reference count of cluster `index`.
    pub fn get(&self, index: u64) -> (Owner, u32) {
        match usize::try_from(index) {
            Ok(i) if i < self.owner.len() => (Owner::from_u8(self.owner[i]), self.refs[i]),
            _ => (Owner::Free, 0),
        }
    }

    /// Claims every cluster touched by `[offset, offset + length)` for
    /// `owner`, adding one reference to each. Sharing a cluster between
    /// structures is reported as `refcount.overlap` at `at`; the return
    /// value tells whether part of the range lies past the end of file.
    pub fn claim(
        &mut self,
        findings: &mut Findings,
        offset: u64,
        length: u64,
        owner: Owner,
        at: u64,
    ) -> Claim {
        let mut result = Claim::default();
        if length == 0 {
            return result;
        }
        let first = offset >> self.cluster_bits;
        let last = offset.saturating_add(length - 1) >> self.cluster_bits;
        let end = (last.saturating_add(1)).min(self.len());
        for c in first..end {
            let i = c as usize;
            let prev = Owner::from_u8(self.owner[i]);
            result.shared |= prev != Owner::Free;
            if prev == Owner::Free {
                self.owner[i] = owner as u8;
            } else if !(prev == owner && owner.shareable()) {
                findings.add_with(Rule::RefcountOverlap, at, |out: &mut String| {
                    write_message(
                        out,
                        format_args!(
                            "cluster at {:#x} is used by the {} and by the {}",
                            c << self.cluster_bits,
                            prev.name(),
                            owner.name()
                        ),
                    )
                });
                if owner.is_bitmap() || prev.is_bitmap() {
                    findings.mark_bitmaps_overlap();
                }
            }
            self.refs[i] = self.refs[i].saturating_add(1);
        }
        result.past_end = last >= self.len();
        result
    }

    /// Adds `extra` references to every cluster of `[offset, offset+length)`
    /// inside the file, without changing owners.
    pub fn add_refs(&mut self, offset: u64, length: u64, extra: u32) {
        if length == 0 {
            return;
        }
        let first = offset >> self.cluster_bits;
        let last = offset.saturating_add(length - 1) >> self.cluster_bits;
        for c in first..last.saturating_add(1).min(self.len()) {
            let i = c as usize;
            self.refs[i] = self.refs[i].saturating_add(extra);
        }
    }

    /// Clusters per owner, for the dump's usage summary.
    pub fn usage(&self) -> Vec<(Owner, u64)> {
        let mut counts = [0u64; 14];
        for &o in &self.owner {
            counts[o as usize] += 1;
        }
        Owner::ALL
            .iter()
            .map(|o| (*o, counts[*o as usize]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
