//! Refcount table and blocks (spec "Host cluster management"): claimed as
//! structures first, then compared cluster by cluster with the references
//! every other structure made.

use crate::clusters::Owner;
use crate::context::Ctx;
use crate::finding::write_message;
use crate::io::CheckError;
use crate::rules::{Rule, Severity};
use crate::zeros::{first_nonzero, nonzero_table_entries};
use serde::Serialize;
use std::io::{Read, Seek};

/// Refcount table entry bits 0-8 are reserved.
const REFTABLE_RESERVED: u64 = 0x1ff;

/// Summary of the refcount comparison, for dumps.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RefcountStats {
    pub refcount_blocks: u64,
    pub clusters_in_file: u64,
    pub clusters_referenced: u64,
    pub leaked_clusters: u64,
    pub unallocated_clusters: u64,
    pub undercounted_clusters: u64,
}

/// The refcount blocks found in the table: (table index, block offset).
pub(crate) struct RefcountBlocks(Vec<(u64, u64)>);

/// Reads refcount `index` of a block whose entries are `1 << order` bits wide.
/// Entries narrower than a byte are packed least significant bits first.
fn refcount_at(block: &[u8], index: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let byte = block[(index / per_byte) as usize];
        let shift = (index % per_byte) * bits;
        u64::from(byte >> shift) & ((1u64 << bits) - 1)
    } else {
        let width = (bits / 8) as usize;
        let start = index as usize * width;
        block[start..start + width]
            .iter()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b))
    }
}

/// Collects into `out`, in increasing order and from `from` on, the indexes
/// of the entries of a block (entries `1 << order` bits wide) that hold a
/// non-zero refcount. Zero bytes are skipped in runs ([`first_nonzero`]).
fn nonzero_entries(block: &[u8], from: u64, order: u32, out: &mut Vec<u64>) {
    out.clear();
    let bits = 1u64 << order;
    // Entries per byte (narrow) or bytes per entry (wide).
    let (per_byte, width) = if bits < 8 {
        (8 / bits, 1)
    } else {
        (1, bits / 8)
    };
    let Ok(mut p) = usize::try_from(from / per_byte * width) else {
        return;
    };
    let mut last: Option<u64> = None;
    while let Some(k) = block.get(p..).and_then(first_nonzero) {
        let q = (p + k) as u64;
        // The entries that byte `q` is (part of).
        let (lo, hi) = if bits < 8 {
            (q * per_byte, (q + 1) * per_byte)
        } else {
            (q / width, q / width + 1)
        };
        for i in lo.max(from)..hi {
            // A wide entry with several non-zero bytes comes up once per byte.
            if last.is_some_and(|l| i <= l) {
                continue;
            }
            last = Some(i);
            if refcount_at(block, i, order) != 0 {
                out.push(i);
            }
        }
        p += k + 1;
    }
}

impl<R: Read + Seek> Ctx<R> {
    /// Claims the refcount table and its blocks.
    pub fn claim_refcount_structures(&mut self) -> Result<RefcountBlocks, CheckError> {
        let cs = self.h.cluster_size();
        let offset = self.h.refcount_table_offset;
        let length = u64::from(self.h.refcount_table_clusters).checked_mul(cs);
        let table = match length {
            Some(len) if offset != 0 && len > 0 => self.img.read_checked(offset, len)?,
            _ => None,
        };
        let Some(table) = table else {
            self.findings.add_with(
                Rule::RefcountBounds,
                crate::fields::header::REFCOUNT_TABLE_OFFSET.offset as u64,
                msg!(
                    "refcount table at {offset:#x} ({} clusters) is empty, on the header or past the end of the file",
                    self.h.refcount_table_clusters
                ),
            );
            return Ok(RefcountBlocks(Vec::new()));
        };
        self.map.claim(
            &mut self.findings,
            offset,
            table.len() as u64,
            Owner::RefcountTable,
            offset,
        );
        let mut blocks = Vec::new();
        for (i, chunk) in nonzero_table_entries(&table, 8) {
            let e = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
            let at = offset + 8 * i as u64;
            let block = e & !REFTABLE_RESERVED;
            if e & REFTABLE_RESERVED != 0 || !self.h.aligned(block) {
                self.findings
                    .add_with(Rule::RefcountBlockAlignment, at, |out: &mut String| {
                        write_message(
                            out,
                            format_args!(
                                "refcount table entry {i} is {e:#x}: not a cluster-aligned offset"
                            ),
                        )
                    });
                continue;
            }
            if !self.img.contains(block, cs) {
                self.findings
                    .add_with(Rule::RefcountBounds, at, |out: &mut String| {
                        write_message(
                            out,
                            format_args!(
                                "refcount block {i} at {block:#x} lies past the end of the file"
                            ),
                        )
                    });
                continue;
            }
            let claimed = self
                .map
                .claim(&mut self.findings, block, cs, Owner::RefcountBlock, at);
            if !claimed.shared {
                blocks.push((i as u64, block));
            }
        }
        Ok(RefcountBlocks(blocks))
    }

    /// Compares stored refcounts with the references counted in the map.
    /// Consecutive clusters with the same verdict are reported as one run.
    pub fn compare_refcounts(
        &mut self,
        blocks: &RefcountBlocks,
    ) -> Result<RefcountStats, CheckError> {
        let mut stats = RefcountStats {
            refcount_blocks: blocks.0.len() as u64,
            clusters_in_file: self.map.len(),
            ..Default::default()
        };
        if self.h.refcount_order > 6 {
            // header.refcount-order was reported: the entries cannot be read.
            return Ok(stats);
        }
        let order = self.h.refcount_order.min(6);
        let cs = self.h.cluster_size();
        let per_block = u64::try_from((u128::from(cs) * 8) >> order).unwrap_or(u64::MAX);
        let n = self.map.len();
        let mut runs = RunReporter::default();
        let mut block_buf = Vec::new();
        let mut past_end = Vec::new();
        // Clusters [0, done) have been judged. Blocks come in table order.
        let mut done = 0u64;
        for &(idx, off) in &blocks.0 {
            let first = idx.saturating_mul(per_block);
            for c in done..first.min(n) {
                self.judge_cluster(c, 0, &mut runs, &mut stats);
            }
            block_buf.resize(cs as usize, 0);
            self.img.read_into(off, &mut block_buf)?;
            // Entries for clusters inside the file are all judged; past its
            // end only non-zero refcounts matter (leaks), so zero bytes of
            // the block are skipped rather than decoded one entry at a time.
            let inside = n.saturating_sub(first).min(per_block);
            for i in 0..inside {
                let rc = refcount_at(&block_buf, i, order);
                self.judge_cluster(first + i, rc, &mut runs, &mut stats);
            }
            nonzero_entries(&block_buf, inside, order, &mut past_end);
            for &i in &past_end {
                let rc = refcount_at(&block_buf, i, order);
                self.judge_cluster(first.saturating_add(i), rc, &mut runs, &mut stats);
            }
            done = done.max(first.saturating_add(per_block));
        }
        for c in done..n {
            self.judge_cluster(c, 0, &mut runs, &mut stats);
        }
        runs.flush(self);
        Ok(stats)
    }

    fn judge_cluster(
        &mut self,
        c: u64,
        rc: u64,
        runs: &mut RunReporter,
        stats: &mut RefcountStats,
    ) {
        let (owner, refs) = self.map.get(c);
        let refs = u64::from(refs);
        if refs > 0 {
            stats.clusters_referenced += 1;
        }
        let verdict = if refs > 0 && rc == 0 {
            stats.unallocated_clusters += 1;
            Some(match owner {
                Owner::BitmapTable => Rule::BitmapsTableBounds,
                Owner::BitmapData => Rule::BitmapsDataBounds,
                _ => Rule::RefcountUnallocated,
            })
        } else if refs > rc {
            stats.undercounted_clusters += 1;
            if owner.is_bitmap() {
                self.findings.mark_bitmaps_overlap();
            }
            Some(Rule::RefcountOverlap)
        } else if rc > refs {
            stats.leaked_clusters += 1;
            Some(Rule::RefcountLeak)
        } else {
            None
        };
        runs.push(self, c, verdict.map(|r| (r, owner, rc, refs)));
    }
}

/// A refcount verdict on one cluster: rule, owner, refcount, references.
type ClusterVerdict = (Rule, Owner, u64, u64);

/// Folds consecutive clusters with the same refcount verdict into one finding.
#[derive(Default)]
struct RunReporter {
    /// First cluster, one past the last, and their common verdict.
    current: Option<(u64, u64, ClusterVerdict)>,
}

impl RunReporter {
    fn push<R>(&mut self, ctx: &mut Ctx<R>, c: u64, v: Option<ClusterVerdict>) {
        if let (Some((_, end, cur)), Some(new)) = (&mut self.current, v) {
            if *cur == new && *end == c {
                *end = c + 1;
                return;
            }
        }
        if self.current.is_some() {
            self.flush(ctx);
        }
        if let Some(new) = v {
            self.current = Some((c, c + 1, new));
        }
    }

    fn flush<R>(&mut self, ctx: &mut Ctx<R>) {
        let Some((start, end, (rule, owner, rc, refs))) = self.current.take() else {
            return;
        };
        if ctx.h.incompatible_features & crate::fields::header::INCOMPAT_DIRTY != 0 {
            return;
        }
        let bits = ctx.h.cluster_bits;
        let severity = if rule == Rule::RefcountLeak {
            Severity::Leak
        } else {
            Severity::Error
        };
        ctx.findings.add_as_with(rule, severity, start << bits, |out: &mut String| {
            let n = end - start;
            let (first, last) = (start << bits, end << bits);
            let what = if owner == Owner::Free {
                "no structure"
            } else {
                "the "
            };
            let name = if owner == Owner::Free {
                ""
            } else {
                owner.name()
            };
            if n == 1 {
                write_message(out, format_args!(
                    "cluster at {first:#x}: refcount {rc}, referenced {refs} times by {what}{name}"
                ))
            } else {
                write_message(out, format_args!(
                    "{n} clusters at {first:#x}..{last:#x}: refcount {rc}, referenced {refs} times by {what}{name}"
                ))
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{nonzero_entries, refcount_at};

    #[test]
    fn nonzero_entries_match_a_full_scan() {
        let mut block = vec![0u8; 64];
        for (i, b) in [3usize, 4, 17, 40, 41, 63].iter().enumerate() {
            block[*b] = (i as u8 + 1) * 0x11;
        }
        for order in 0..=6 {
            let entries = (block.len() as u64 * 8) >> order;
            for from in [0, 1, 5, entries / 3, entries - 1, entries] {
                let want: Vec<u64> = (from..entries)
                    .filter(|&i| refcount_at(&block, i, order) != 0)
                    .collect();
                let mut got = Vec::new();
                nonzero_entries(&block, from, order, &mut got);
                assert_eq!(got, want, "order {order}, from {from}");
            }
        }
    }

    #[test]
    fn sub_byte_refcounts_are_packed_lsb_first() {
        let block = [0b1011_0001u8, 0xff];
        assert_eq!(refcount_at(&block, 0, 0), 1);
        assert_eq!(refcount_at(&block, 1, 0), 0);
        assert_eq!(refcount_at(&block, 4, 0), 1);
        assert_eq!(refcount_at(&block, 0, 1), 1);
        assert_eq!(refcount_at(&block, 3, 1), 2);
        assert_eq!(refcount_at(&block, 1, 2), 0b1011);
        assert_eq!(refcount_at(&block, 0, 4), 0xb1ff);
    }
}
