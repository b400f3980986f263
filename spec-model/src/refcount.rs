//! Refcount table and blocks (spec "Host cluster management"): claimed as
//! structures first, then compared cluster by cluster with the references
//! every other structure made.

use crate::clusters::Owner;
use crate::context::{Ctx, PointedRules};
use crate::finding::{write_message, Findings};
use crate::io::{CheckError, Chunks};
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
        big_endian(&block[start..start + width])
    }
}

/// The value of a big-endian entry of 1, 2, 4 or 8 bytes.
fn big_endian(entry: &[u8]) -> u64 {
    match entry.len() {
        1 => u64::from(entry[0]),
        2 => <[u8; 2]>::try_from(entry).map_or(0, |a| u16::from_be_bytes(a).into()),
        4 => <[u8; 4]>::try_from(entry).map_or(0, |a| u32::from_be_bytes(a).into()),
        _ => <[u8; 8]>::try_from(entry).map_or(0, u64::from_be_bytes),
    }
}

/// Calls `f(index, refcount)`, in increasing order and for entries
/// `[from, to)`, for the entries of a block (entries `1 << order` bits wide) that
/// hold a non-zero refcount. Zero bytes are skipped in runs
/// ([`first_nonzero`]).
fn for_each_nonzero(block: &[u8], from: u64, to: u64, order: u32, mut f: impl FnMut(u64, u64)) {
    let bits = 1u64 << order;
    if from >= to {
        return;
    }
    if bits >= 8 {
        // Whole bytes per entry: an entry is non-zero when any byte is.
        let width = (bits / 8) as usize;
        let start = usize::try_from(from)
            .ok()
            .and_then(|f| f.checked_mul(width));
        let end = usize::try_from(to)
            .ok()
            .and_then(|t| t.checked_mul(width))
            .map_or(block.len(), |e| e.min(block.len()));
        let Some(rest) = start.and_then(|start| block.get(start..end)) else {
            return;
        };
        for (k, entry) in nonzero_table_entries(rest, width) {
            f(from + k as u64, big_endian(entry));
        }
        return;
    }
    // Several entries per byte: each non-zero byte is split into its entries.
    let per_byte = 8 / bits;
    let Ok(mut p) = usize::try_from(from / per_byte) else {
        return;
    };
    let end = usize::try_from(to.div_ceil(per_byte)).map_or(block.len(), |e| e.min(block.len()));
    let mask = (1u64 << bits) - 1;
    while let Some(k) = block.get(p..end).and_then(first_nonzero) {
        let q = p + k;
        let byte = u64::from(block.get(q).copied().unwrap_or(0));
        for j in 0..per_byte {
            let i = q as u64 * per_byte + j;
            let rc = (byte >> (j * bits)) & mask;
            if i >= from && i < to && rc != 0 {
                f(i, rc);
            }
        }
        p = q + 1;
    }
}

impl<R: Read + Seek> Ctx<R> {
    /// Claims the refcount table and its blocks.
    pub fn claim_refcount_structures(&mut self) -> Result<RefcountBlocks, CheckError> {
        let cs = self.h.cluster_size();
        let offset = self.h.refcount_table_offset;
        let length = u64::from(self.h.refcount_table_clusters).checked_mul(cs);
        let table = match length {
            Some(len) if offset != 0 && len > 0 && self.img.contains(offset, len) => Some(len),
            _ => None,
        };
        let Some(table_len) = table else {
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
            table_len,
            Owner::RefcountTable,
            offset,
        );
        let mut blocks = Vec::new();
        // A chunk at a time: refcount_table_clusters can claim far more
        // than the model keeps in memory.
        let mut chunks = Chunks::new(offset, table_len);
        while let Some((base, bytes)) = chunks.next(&mut self.img)? {
            self.claim_refcount_blocks(offset, base, bytes, &mut blocks);
        }
        Ok(RefcountBlocks(blocks))
    }

    /// Claims the refcount blocks that one chunk of the table, `base`
    /// bytes into it, names.
    fn claim_refcount_blocks(
        &mut self,
        offset: u64,
        base: u64,
        bytes: &[u8],
        blocks: &mut Vec<(u64, u64)>,
    ) {
        for (k, chunk) in nonzero_table_entries(bytes, 8) {
            let i = (base / 8) as usize + k;
            let e = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
            let at = offset + 8 * i as u64;
            let block = e & !REFTABLE_RESERVED;
            let aligned = e & REFTABLE_RESERVED == 0 && self.h.aligned(block);
            let Some(claimed) = self.claim_pointed(
                at,
                block,
                aligned,
                Owner::RefcountBlock,
                PointedRules {
                    misaligned: (
                        Rule::RefcountBlockAlignment,
                        msg!("refcount table entry {i} is {e:#x}: not a cluster-aligned offset"),
                    ),
                    past_eof: (
                        Rule::RefcountBounds,
                        msg!("refcount block {i} at {block:#x} lies past the end of the file"),
                    ),
                },
            ) else {
                continue;
            };
            if !claimed.shared {
                blocks.push((i as u64, block));
            }
        }
    }

    /// Compares stored refcounts with the references counted in the map.
    /// Consecutive clusters with the same verdict are reported as one run.
    pub fn compare_refcounts(
        &mut self,
        blocks: &RefcountBlocks,
    ) -> Result<RefcountStats, CheckError> {
        let stats = RefcountStats {
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
        let report = self.h.incompatible_features & crate::fields::header::INCOMPAT_DIRTY == 0;
        let mut cmp = Comparison {
            // Leak runs still listed before the rule's cap (findings before
            // this point cannot be leaks, but ask rather than assume).
            leak_room: self.findings.room(Rule::RefcountLeak, Severity::Leak),
            findings: &mut self.findings,
            stats,
            run: None,
            report,
            max_refcount: u64::MAX >> (64 - (1u32 << order)),
            cluster_bits: self.h.cluster_bits,
            leaks_unlisted: 0,
        };
        let map = &mut self.map;
        let mut block_buf = Vec::new();
        // Clusters [0, done) have been judged. Blocks come in table order.
        // Only clusters that a structure references or a refcount counts
        // are visited: free stretches with no refcount agree and are
        // skipped, so the work follows the claims and the stored blocks,
        // not the file's apparent length.
        let mut done = 0u64;
        for &(idx, off) in &blocks.0 {
            let first = idx.saturating_mul(per_block);
            for seg in map.segments(done, first) {
                cmp.judge_span(seg.start, seg.end, seg.owner, seg.refs.into(), 0);
            }
            let inside = n.saturating_sub(first).min(per_block);
            if self.img.is_hole(off, cs) {
                // A block in a hole of a sparse file holds only zeros.
                for seg in map.segments(first, first + inside) {
                    cmp.judge_span(seg.start, seg.end, seg.owner, seg.refs.into(), 0);
                }
                done = done.max(first.saturating_add(per_block));
                continue;
            }
            block_buf.resize(cs as usize, 0);
            self.img.read_into(off, &mut block_buf)?;
            // Entries for clusters inside the file are all judged; past its
            // end no structure can reference a cluster and only non-zero
            // refcounts matter (leaks), so zero bytes of the block are
            // skipped rather than decoded one entry at a time.
            for seg in map.segments(first, first + inside) {
                if seg.owner == Owner::Free && seg.refs == 0 {
                    for_each_nonzero(
                        &block_buf,
                        seg.start - first,
                        seg.end - first,
                        order,
                        |i, rc| cmp.judge(first + i, Owner::Free, 0, rc),
                    );
                    continue;
                }
                for c in seg.start..seg.end {
                    cmp.judge(
                        c,
                        seg.owner,
                        seg.refs.into(),
                        refcount_at(&block_buf, c - first, order),
                    );
                }
            }
            for_each_nonzero(&block_buf, inside, per_block, order, |i, rc| {
                cmp.judge(first.saturating_add(i), Owner::Free, 0, rc)
            });
            done = done.max(first.saturating_add(per_block));
        }
        for seg in map.segments(done, n) {
            cmp.judge_span(seg.start, seg.end, seg.owner, seg.refs.into(), 0);
        }
        Ok(cmp.finish())
    }
}

/// The cluster-by-cluster comparison under way: statistics, the current
/// run of clusters sharing one verdict, and the leak runs past the cap.
/// It is a local of `compare_refcounts` and `judge` is inlined, so the
/// per-cluster state stays in registers (in sanitizer builds every memory
/// access costs a check, and `judge` runs once per cluster).
struct Comparison<'a> {
    findings: &'a mut Findings,
    stats: RefcountStats,
    run: Option<Run>,
    /// False for a dirty image: its refcounts may be anything, so they are
    /// compared and counted but not reported, except a cluster referenced
    /// more often than `max_refcount`: no refcount of this width, stale or
    /// repaired, can account for it.
    report: bool,
    /// The largest refcount an entry of `refcount_bits` can hold.
    max_refcount: u64,
    cluster_bits: u32,
    /// Leak runs that may still be listed before the rule's cap; later
    /// ones are only counted (garbage past the end of the file can hold
    /// thousands).
    leak_room: u32,
    leaks_unlisted: u32,
}

impl Comparison<'_> {
    /// Judges cluster `c`: `refs` references counted for `owner`, refcount
    /// `rc` stored. Clusters come in increasing order.
    #[inline(always)]
    fn judge(&mut self, c: u64, owner: Owner, refs: u64, rc: u64) {
        let verdict = cluster_verdict(owner, refs, rc, &mut self.stats);
        if verdict.is_some_and(|v| v.rule == Rule::RefcountOverlap && owner.is_bitmap()) {
            self.findings.mark_bitmaps_overlap();
        }
        match (&mut self.run, verdict) {
            (Some(r), Some(v)) if r.end == c && r.verdict == v => r.end = c + 1,
            (_, v) => {
                self.close_run();
                self.run = v.map(|verdict| Run {
                    start: c,
                    end: c + 1,
                    verdict,
                });
            }
        }
    }

    /// Judges clusters `[start, end)` that share `owner`, `refs` and the
    /// stored refcount `rc`: the same as judging each in turn.
    fn judge_span(&mut self, start: u64, end: u64, owner: Owner, refs: u64, rc: u64) {
        if start >= end {
            return;
        }
        if owner == Owner::Free && refs == 0 && rc == 0 {
            // Agrees; a skipped stretch ends any run (it cannot continue
            // past a gap), so nothing needs doing.
            return;
        }
        let verdict = cluster_verdict_n(owner, refs, rc, &mut self.stats, end - start);
        if verdict.is_some_and(|v| v.rule == Rule::RefcountOverlap && owner.is_bitmap()) {
            self.findings.mark_bitmaps_overlap();
        }
        match (&mut self.run, verdict) {
            (Some(r), Some(v)) if r.end == start && r.verdict == v => r.end = end,
            (_, v) => {
                self.close_run();
                self.run = v.map(|verdict| Run {
                    start,
                    end,
                    verdict,
                });
            }
        }
    }

    /// Reports the current run, if any.
    fn close_run(&mut self) {
        let Some(done) = self.run.take() else {
            return;
        };
        if !self.report {
            // Spec "Header", incompatible bit 0: refcounts of a dirty image
            // may be inconsistent and are repaired from the L1/L2 tables
            // before use; references beyond the width cannot be repaired.
            let v = done.verdict;
            if v.rule == Rule::RefcountOverlap && v.refs > self.max_refcount {
                done.report(self.findings, self.cluster_bits, Some(self.max_refcount));
            }
            return;
        }
        if done.verdict.rule != Rule::RefcountLeak {
            done.report(self.findings, self.cluster_bits, None);
        } else if self.leak_room > 0 {
            self.leak_room -= 1;
            done.report(self.findings, self.cluster_bits, None);
        } else {
            self.leaks_unlisted = self.leaks_unlisted.saturating_add(1);
        }
    }

    fn finish(mut self) -> RefcountStats {
        self.close_run();
        self.findings
            .count_unlisted(Rule::RefcountLeak, Severity::Leak, self.leaks_unlisted);
        self.stats
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
    cluster_verdict_n(owner, refs, rc, stats, 1)
}

/// [`cluster_verdict`] for `n` clusters that share it, counted `n` times.
#[inline(always)]
fn cluster_verdict_n(
    owner: Owner,
    refs: u64,
    rc: u64,
    stats: &mut RefcountStats,
    n: u64,
) -> Option<ClusterVerdict> {
    if refs > 0 {
        stats.clusters_referenced += n;
    }
    let rule = if refs > 0 && rc == 0 {
        stats.unallocated_clusters += n;
        match owner {
            Owner::BitmapTable => Rule::BitmapsTableBounds,
            Owner::BitmapData => Rule::BitmapsDataBounds,
            _ => Rule::RefcountUnallocated,
        }
    } else if refs > rc {
        stats.undercounted_clusters += n;
        Rule::RefcountOverlap
    } else if rc > refs {
        stats.leaked_clusters += n;
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
    /// Adds the run's finding; `beyond` is the largest refcount the width
    /// holds when the run is reported because it references more (a dirty
    /// image, whose other refcount differences are not reported).
    fn report(self, findings: &mut Findings, cluster_bits: u32, beyond: Option<u64>) {
        let Run {
            start,
            end,
            verdict,
        } = self;
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
            let width = match beyond {
                Some(max) => format!(
                    " (the dirty bit allows stale refcounts, but no refcount of this width exceeds {max}, so no repair can account for the references)"
                ),
                None => String::new(),
            };
            if n == 1 {
                write_message(out, format_args!(
                    "cluster at {first:#x}: refcount {rc}, referenced {refs} times by {what}{name}{width}"
                ))
            } else {
                write_message(out, format_args!(
                    "{n} clusters at {first:#x}..{last:#x}: refcount {rc}, referenced {refs} times by {what}{name}{width}"
                ))
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{for_each_nonzero, refcount_at};

    #[test]
    fn nonzero_refcounts_match_a_full_scan() {
        let mut block = vec![0u8; 64];
        for (i, b) in [3usize, 4, 17, 40, 41, 63].iter().enumerate() {
            block[*b] = (i as u8 + 1) * 0x11;
        }
        for order in 0..=6 {
            let entries = (block.len() as u64 * 8) >> order;
            for from in [0, 1, 5, entries / 3, entries - 1, entries] {
                let want: Vec<(u64, u64)> = (from..entries)
                    .map(|i| (i, refcount_at(&block, i, order)))
                    .filter(|&(_, rc)| rc != 0)
                    .collect();
                let mut got = Vec::new();
                for_each_nonzero(&block, from, entries, order, |i, rc| got.push((i, rc)));
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
