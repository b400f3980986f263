//! Refcount table and blocks (spec "Host cluster management"): claimed as
//! structures first, then compared cluster by cluster with the references
//! every other structure made.

use crate::clusters::Owner;
use crate::context::Ctx;
use crate::finding::{write_message, Findings};
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
    if bits >= 8 {
        // Whole bytes per entry: an entry is non-zero when any byte is.
        let width = (bits / 8) as usize;
        let Some(rest) = usize::try_from(from)
            .ok()
            .and_then(|f| f.checked_mul(width))
            .and_then(|start| block.get(start..))
        else {
            return;
        };
        out.extend(nonzero_table_entries(rest, width).map(|(k, _)| from + k as u64));
        return;
    }
    // Several entries per byte: each non-zero byte is split into its entries.
    let per_byte = 8 / bits;
    let Ok(mut p) = usize::try_from(from / per_byte) else {
        return;
    };
    while let Some(k) = block.get(p..).and_then(first_nonzero) {
        let q = (p + k) as u64;
        for i in (q * per_byte).max(from)..(q + 1) * per_byte {
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
        // A dirty image may hold any refcounts: they are compared and
        // counted, but not reported.
        let report = self.h.incompatible_features & crate::fields::header::INCOMPAT_DIRTY == 0;
        let bits = self.h.cluster_bits;
        // The per-cluster state lives in locals that no callee sees, so the
        // loop below keeps it in registers (every memory access costs a
        // check in sanitizer builds, and this loop runs once per cluster).
        let (map, findings) = (&self.map, &mut self.findings);
        let mut run: Option<Run> = None;
        let mut judge = |c: u64, rc: u64| {
            let (owner, refs) = map.get(c);
            let refs = u64::from(refs);
            let verdict = cluster_verdict(owner, refs, rc, &mut stats);
            if verdict.is_some_and(|v| v.rule == Rule::RefcountOverlap && owner.is_bitmap()) {
                findings.mark_bitmaps_overlap();
            }
            match (&mut run, verdict) {
                (Some(r), Some(v)) if r.end == c && r.verdict == v => r.end = c + 1,
                (current, v) => {
                    if let Some(done) = current.take() {
                        if report {
                            done.report(findings, bits);
                        }
                    }
                    *current = v.map(|verdict| Run {
                        start: c,
                        end: c + 1,
                        verdict,
                    });
                }
            }
        };
        let mut block_buf = Vec::new();
        let mut past_end = Vec::new();
        // Clusters [0, done) have been judged. Blocks come in table order.
        let mut done = 0u64;
        for &(idx, off) in &blocks.0 {
            let first = idx.saturating_mul(per_block);
            for c in done..first.min(n) {
                judge(c, 0);
            }
            block_buf.resize(cs as usize, 0);
            self.img.read_into(off, &mut block_buf)?;
            // Entries for clusters inside the file are all judged; past its
            // end only non-zero refcounts matter (leaks), so zero bytes of
            // the block are skipped rather than decoded one entry at a time.
            let inside = n.saturating_sub(first).min(per_block);
            for i in 0..inside {
                judge(first + i, refcount_at(&block_buf, i, order));
            }
            nonzero_entries(&block_buf, inside, order, &mut past_end);
            for &i in &past_end {
                judge(first.saturating_add(i), refcount_at(&block_buf, i, order));
            }
            done = done.max(first.saturating_add(per_block));
        }
        for c in done..n {
            judge(c, 0);
        }
        if let Some(last) = run.take() {
            if report {
                last.report(&mut self.findings, bits);
            }
        }
        Ok(stats)
    }
}

/// The refcount verdict on one cluster with `refs` references counted and
/// refcount `rc` stored, counted into `stats`: `None` when they agree.
fn cluster_verdict(
    owner: Owner,
    refs: u64,
    rc: u64,
    stats: &mut RefcountStats,
) -> Option<ClusterVerdict> {
    if refs > 0 {
        stats.clusters_referenced += 1;
    }
    let rule = if refs > 0 && rc == 0 {
        stats.unallocated_clusters += 1;
        match owner {
            Owner::BitmapTable => Rule::BitmapsTableBounds,
            Owner::BitmapData => Rule::BitmapsDataBounds,
            _ => Rule::RefcountUnallocated,
        }
    } else if refs > rc {
        stats.undercounted_clusters += 1;
        Rule::RefcountOverlap
    } else if rc > refs {
        stats.leaked_clusters += 1;
        Rule::RefcountLeak
    } else {
        return None;
    };
    Some(ClusterVerdict {
        rule,
        owner,
        rc,
        refs,
    })
}

/// A refcount verdict on one cluster: the rule it breaks, its owner, its
/// stored refcount and the references counted.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ClusterVerdict {
    rule: Rule,
    owner: Owner,
    rc: u64,
    refs: u64,
}

/// Consecutive clusters `[start, end)` with one verdict, reported as one
/// finding.
struct Run {
    start: u64,
    end: u64,
    verdict: ClusterVerdict,
}

impl Run {
    fn report(self, findings: &mut Findings, cluster_bits: u32) {
        let Run { start, end, verdict } = self;
        let ClusterVerdict {
            rule,
            owner,
            rc,
            refs,
        } = verdict;
        let severity = if rule == Rule::RefcountLeak {
            Severity::Leak
        } else {
            Severity::Error
        };
        findings.add_as_with(rule, severity, start << cluster_bits, |out: &mut String| {
            let n = end - start;
            let (first, last) = (start << cluster_bits, end << cluster_bits);
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
