//! The file areas a draft's structures occupy (header cluster, directory,
//! tables, data clusters), checked for sharing a cluster
//! (`bitmaps.overlap`): the drafts' stand-in for refcounts, which their
//! readers leave to the final-spec `check`.

use super::rules::DraftRule;
use crate::finding::Findings;

/// File areas the draft's structures occupy, checked for sharing a cluster.
pub(crate) struct Extents {
    cluster_bits: u32,
    list: Vec<(u64, u64, Owner)>,
}

/// What an extent holds, for overlap messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner {
    Header,
    Directory,
    Table(usize),
    Data(usize, u64),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Header => write!(f, "the header cluster"),
            Owner::Directory => write!(f, "the directory"),
            Owner::Table(i) => write!(f, "the table of bitmap {i}"),
            Owner::Data(i, j) => write!(f, "data cluster {j} of bitmap {i}"),
        }
    }
}

impl Extents {
    pub(crate) fn new(cluster_bits: u32) -> Extents {
        Extents {
            cluster_bits: cluster_bits.min(63),
            list: Vec::new(),
        }
    }

    /// Records `[offset, offset + len)` (len > 0) as held by `owner`.
    pub(crate) fn add(&mut self, offset: u64, len: u64, owner: Owner) {
        if len == 0 {
            return;
        }
        let last = offset.saturating_add(len - 1);
        self.list.push((
            offset >> self.cluster_bits,
            last >> self.cluster_bits,
            owner,
        ));
    }

    /// Reports every extent that shares a cluster with an earlier one.
    pub(crate) fn report(mut self, findings: &mut Findings<DraftRule>) {
        self.list.sort_by_key(|e| (e.0, e.1));
        let mut reach: Option<(u64, Owner)> = None;
        for &(first, last, owner) in &self.list {
            if let Some((end, other)) = reach {
                if first <= end {
                    findings.add_with(
                        DraftRule::Overlap,
                        first << self.cluster_bits,
                        msg!("{owner} shares cluster {first} with {other}"),
                    );
                }
                if last > end {
                    reach = Some((last, owner));
                }
            } else {
                reach = Some((last, owner));
            }
        }
    }
}
