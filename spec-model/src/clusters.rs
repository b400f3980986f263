//! Cluster accounting, the way a refcount rebuild sees the file: every
//! cluster that a structure references is claimed by that structure; the
//! claims are later compared with the stored refcounts.
//!
//! The map is sparse: it stores spans of consecutive clusters that share
//! an owner and a reference count, so its size follows the number of
//! claims the file's structures make, never the file's apparent length
//! (a sparse file of 16 TiB costs nothing for its holes).

use crate::finding::Findings;
use crate::rules::{Rule, Severity};
use serde::Serialize;
use std::collections::BTreeMap;

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

/// Consecutive clusters `[start, end)` with one owner and reference count
/// (the start is the key of [`ClusterMap`]'s tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    end: u64,
    owner: Owner,
    refs: u32,
}

/// One stretch of clusters as [`ClusterMap::segments`] yields it: free
/// clusters (owner `Free`, no references) included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub owner: Owner,
    pub refs: u32,
}

/// Owner and reference count of the clusters the file covers, as spans.
/// Clusters not in any span are free with no references.
///
/// The most recent span is kept apart (`hot`) while claims extend it one
/// cluster after the other, as they do when tables map consecutive
/// clusters, so the common case costs no tree operation.
#[derive(Debug)]
pub struct ClusterMap {
    cluster_bits: u32,
    /// Clusters that the file (partly) covers.
    len: u64,
    spans: BTreeMap<u64, Span>,
    /// A span not yet in `spans`: (start, span, start of the first span of
    /// the tree after it, or `u64::MAX`).
    hot: Option<(u64, Span, u64)>,
}

impl ClusterMap {
    /// A map for a file of `file_len` bytes.
    pub fn new(cluster_bits: u32, file_len: u64) -> ClusterMap {
        ClusterMap {
            cluster_bits,
            len: file_len.div_ceil(1u64 << cluster_bits),
            spans: BTreeMap::new(),
            hot: None,
        }
    }

    /// Number of clusters that the file (partly) covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Owner and reference count of cluster `index`.
    pub fn get(&self, index: u64) -> (Owner, u32) {
        if let Some((start, span, _)) = self.hot {
            if (start..span.end).contains(&index) {
                return (span.owner, span.refs);
            }
        }
        match self.spans.range(..=index).next_back() {
            Some((_, s)) if s.end > index => (s.owner, s.refs),
            _ => (Owner::Free, 0),
        }
    }

    /// The clusters `[from, to)` (clipped to the file) as stretches of one
    /// owner and reference count, in order, free stretches included.
    pub fn segments(&mut self, from: u64, to: u64) -> Vec<Segment> {
        self.flush();
        let to = to.min(self.len);
        let mut out = Vec::new();
        let mut pos = from;
        if pos >= to {
            return out;
        }
        if let Some((_, span)) = self.spans.range(..pos).next_back() {
            if span.end > pos {
                out.push(Segment {
                    start: pos,
                    end: span.end.min(to),
                    owner: span.owner,
                    refs: span.refs,
                });
                pos = span.end.min(to);
            }
        }
        for (&s, span) in self.spans.range(pos..to) {
            if s > pos {
                out.push(Segment {
                    start: pos,
                    end: s,
                    owner: Owner::Free,
                    refs: 0,
                });
            }
            out.push(Segment {
                start: s,
                end: span.end.min(to),
                owner: span.owner,
                refs: span.refs,
            });
            pos = span.end.min(to);
        }
        if pos < to {
            out.push(Segment {
                start: pos,
                end: to,
                owner: Owner::Free,
                refs: 0,
            });
        }
        out
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
        let end = (last.saturating_add(1)).min(self.len);
        result.past_end = last >= self.len;
        if first >= end {
            return result;
        }
        // Fast path: the claim continues the hot span over free clusters.
        if let Some((_, span, next)) = &mut self.hot {
            if span.end == first && span.owner == owner && span.refs == 1 && end <= *next {
                span.end = end;
                return result;
            }
        }
        self.flush();
        let next = self
            .spans
            .range(first..)
            .next()
            .map_or(u64::MAX, |(&s, _)| s);
        let before_free = self
            .spans
            .range(..first)
            .next_back()
            .is_none_or(|(_, s)| s.end <= first);
        if before_free && end <= next {
            // All free: a new span, kept hot.
            let span = Span {
                end,
                owner,
                refs: 1,
            };
            self.hot = Some((first, span, next));
            return result;
        }
        let cluster_bits = self.cluster_bits;
        self.update(first, end, |span, seg_start, seg_end| {
            let prev = span.owner;
            result.shared |= prev != Owner::Free;
            if prev == Owner::Free {
                span.owner = owner;
            } else if !(prev == owner && owner.shareable()) {
                report_overlap(findings, seg_start, seg_end, prev, owner, at, cluster_bits);
            }
            span.refs = span.refs.saturating_add(1);
        });
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
        let end = last.saturating_add(1).min(self.len);
        if first >= end {
            return;
        }
        self.flush();
        self.update(first, end, |span, _, _| {
            span.refs = span.refs.saturating_add(extra)
        });
    }

    /// Clusters per owner, for the dump's usage summary.
    pub fn usage(&mut self) -> Vec<(Owner, u64)> {
        self.flush();
        let mut counts = [0u64; 14];
        let mut used = 0u64;
        for (&s, span) in &self.spans {
            counts[span.owner as usize] += span.end - s;
            used += span.end - s;
        }
        counts[Owner::Free as usize] += self.len - used;
        Owner::ALL
            .iter()
            .map(|o| (*o, counts[*o as usize]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Moves the hot span into the tree, merged with its neighbours.
    fn flush(&mut self) {
        let Some((start, mut span, next)) = self.hot.take() else {
            return;
        };
        // The hot span lies on free clusters: only its two neighbours can
        // be equal to it.
        if next == span.end {
            if let Some(after) = self.spans.get(&next).copied() {
                if after.owner == span.owner && after.refs == span.refs {
                    self.spans.remove(&next);
                    span.end = after.end;
                }
            }
        }
        if let Some((_, before)) = self.spans.range_mut(..start).next_back() {
            if before.end == start && before.owner == span.owner && before.refs == span.refs {
                before.end = span.end;
                return;
            }
        }
        self.spans.insert(start, span);
    }

    /// Applies `f` to every cluster of `[first, end)` (all inside the
    /// file), span by span: free stretches become spans first, spans that
    /// cross the bounds are split, and equal neighbours are merged after.
    fn update(&mut self, first: u64, end: u64, mut f: impl FnMut(&mut Span, u64, u64)) {
        self.split_at(first);
        self.split_at(end);
        let mut gaps = Vec::new();
        let mut pos = first;
        for (&s, span) in self.spans.range(first..end) {
            if s > pos {
                gaps.push((pos, s));
            }
            pos = span.end;
        }
        if pos < end {
            gaps.push((pos, end));
        }
        for (a, b) in gaps {
            self.spans.insert(
                a,
                Span {
                    end: b,
                    owner: Owner::Free,
                    refs: 0,
                },
            );
        }
        for (&s, span) in self.spans.range_mut(first..end) {
            let seg_end = span.end;
            f(span, s, seg_end);
        }
        self.merge_around(first, end);
    }

    /// Splits the span containing cluster `at` (if any starts before it)
    /// into `[start, at)` and `[at, end)`.
    fn split_at(&mut self, at: u64) {
        let Some((_, span)) = self.spans.range_mut(..at).next_back() else {
            return;
        };
        if span.end > at {
            let tail = Span {
                end: span.end,
                ..*span
            };
            span.end = at;
            self.spans.insert(at, tail);
        }
    }

    /// Merges equal adjacent spans from the one before `first` to the one
    /// starting at `end`; drops spans that are free with no references.
    fn merge_around(&mut self, first: u64, end: u64) {
        let from = self
            .spans
            .range(..first)
            .next_back()
            .map_or(first, |(&s, _)| s);
        let keys: Vec<u64> = self.spans.range(from..=end).map(|(&s, _)| s).collect();
        let mut prev: Option<u64> = None;
        for k in keys {
            let Some(cur) = self.spans.get(&k).copied() else {
                continue;
            };
            if cur.owner == Owner::Free && cur.refs == 0 {
                self.spans.remove(&k);
                prev = None;
                continue;
            }
            if let Some(p) = prev {
                if let Some(ps) = self.spans.get_mut(&p) {
                    if ps.end == k && ps.owner == cur.owner && ps.refs == cur.refs {
                        ps.end = cur.end;
                        self.spans.remove(&k);
                        continue;
                    }
                }
            }
            prev = Some(k);
        }
    }
}

/// Reports `refcount.overlap` at `at` for every cluster of `[first, end)`,
/// in order: listed while the rule has room, counted after.
fn report_overlap(
    findings: &mut Findings,
    first: u64,
    end: u64,
    prev: Owner,
    owner: Owner,
    at: u64,
    cluster_bits: u32,
) {
    let mut c = first;
    while c < end && (c == first || findings.room(Rule::RefcountOverlap, Severity::Error) > 0) {
        findings.add_with(
            Rule::RefcountOverlap,
            at,
            msg!(
                "cluster at {:#x} is used by the {} and by the {}",
                c << cluster_bits,
                prev.name(),
                owner.name()
            ),
        );
        c += 1;
    }
    let rest = u32::try_from(end - c).unwrap_or(u32::MAX);
    findings.count_unlisted(Rule::RefcountOverlap, Severity::Error, rest);
    if owner.is_bitmap() || prev.is_bitmap() {
        findings.mark_bitmaps_overlap();
    }
}

#[cfg(test)]
mod tests {
    use super::{ClusterMap, Owner};
    use crate::finding::Findings;

    /// The per-cluster map the spans replace: owner and references per
    /// cluster, claims applied one cluster at a time.
    struct Naive {
        owner: Vec<Owner>,
        refs: Vec<u32>,
        overlaps: u32,
    }

    impl Naive {
        fn claim(&mut self, first: u64, end: u64, owner: Owner) -> bool {
            let mut shared = false;
            for c in first..end.min(self.owner.len() as u64) {
                let i = c as usize;
                let prev = self.owner[i];
                shared |= prev != Owner::Free;
                if prev == Owner::Free {
                    self.owner[i] = owner;
                } else if !(prev == owner && owner.shareable()) {
                    self.overlaps += 1;
                }
                self.refs[i] += 1;
            }
            shared
        }
    }

    #[test]
    fn spans_agree_with_a_per_cluster_map() {
        let owners = [
            Owner::L2Table,
            Owner::GuestData,
            Owner::CompressedData,
            Owner::RefcountBlock,
            Owner::BitmapData,
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let len = 1 + next(300);
            let mut map = ClusterMap::new(9, len * 512 - next(511));
            let mut naive = Naive {
                owner: vec![Owner::Free; map.len() as usize],
                refs: vec![0; map.len() as usize],
                overlaps: 0,
            };
            let mut findings = Findings::default();
            for step in 0..60 {
                let first = next(len + 4);
                // Mostly single clusters in order, as tables map them.
                let n = if next(3) == 0 { 1 + next(40) } else { 1 };
                let owner = owners[next(owners.len() as u64) as usize];
                if next(8) == 0 {
                    let extra = 1 + next(3) as u32;
                    map.add_refs(first * 512, n * 512, extra);
                    for c in first..(first + n).min(map.len()) {
                        naive.refs[c as usize] += extra;
                    }
                    continue;
                }
                // A distinct offset per claim: identical findings at one
                // offset are listed once.
                let claim = map.claim(&mut findings, first * 512, n * 512, owner, step);
                let shared = naive.claim(first, first + n, owner);
                assert_eq!(claim.shared, shared, "round {round} step {step}");
                assert_eq!(
                    claim.past_end,
                    first + n > map.len(),
                    "round {round} step {step}"
                );
            }
            for c in 0..map.len() {
                let i = c as usize;
                assert_eq!(
                    map.get(c),
                    (naive.owner[i], naive.refs[i]),
                    "round {round} cluster {c}"
                );
            }
            let mut covered = 0;
            for s in map.segments(0, u64::MAX) {
                assert_eq!(s.start, covered, "round {round}");
                for c in s.start..s.end {
                    assert_eq!(
                        (s.owner, s.refs),
                        (naive.owner[c as usize], naive.refs[c as usize])
                    );
                }
                covered = s.end;
            }
            assert_eq!(covered, map.len());
            let overlaps = findings
                .into_sorted()
                .iter()
                .filter(|f| f.rule == crate::rules::Rule::RefcountOverlap)
                .count() as u32;
            // Listed up to the rule's cap, then one summary finding.
            let cap = crate::finding::MAX_FINDINGS_PER_RULE;
            let want = naive.overlaps.min(cap) + u32::from(naive.overlaps > cap);
            assert_eq!(overlaps, want, "round {round}: naive {}", naive.overlaps);
        }
    }
}
