//! Guest cluster mapping: L1 and L2 tables (spec "Cluster mapping",
//! "Extended L2 Entries"), walked to claim every cluster they reference.

use crate::clusters::Owner;
use crate::context::{Ctx, PointedRules};
use crate::fields::header::INCOMPAT_EXTERNAL_DATA;
use crate::fields::mapping as m;
use crate::io::{CheckError, Chunks};
use crate::rules::Rule;
use crate::zeros::nonzero_table_entries;
use serde::Serialize;
use std::io::{Read, Seek};

/// Counts of what the mapping tables reference, for dumps.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MappingStats {
    pub l1_entries_used: u64,
    pub l2_tables: u64,
    pub data_clusters: u64,
    pub zero_clusters: u64,
    pub compressed_clusters: u64,
}

impl<R: Read + Seek> Ctx<R> {
    /// Claims an L1 table and everything it maps. `bounds_rule` is
    /// `l1.bounds` for the active table, `snapshot.bounds` for a snapshot's.
    pub fn walk_l1(
        &mut self,
        l1_offset: u64,
        l1_size: u32,
        owner: Owner,
        bounds_rule: Rule,
        stats: &mut MappingStats,
    ) -> Result<(), CheckError> {
        if l1_size == 0 {
            return Ok(());
        }
        let length = u64::from(l1_size) * 8;
        if l1_offset == 0 || !self.img.contains(l1_offset, length) {
            self.findings.add_with(
                bounds_rule,
                l1_offset,
                msg!(
                    "{} at {l1_offset:#x} with {l1_size} entries lies outside the file ({} bytes){}",
                    owner.name(),
                    self.img.len(),
                    if l1_offset == 0 { " or on the header" } else { "" }
                ),
            );
            return Ok(());
        }
        let claimed = self
            .map
            .claim(&mut self.findings, l1_offset, length, owner, l1_offset);
        if claimed.shared {
            // Overlap reported; not walked, so that tables stacked on one
            // another cannot multiply the work beyond the file's size.
            return Ok(());
        }
        // Sized on first use, once an L2 table is known to lie in the file.
        let mut l2 = Vec::new();
        // Read a chunk at a time (l1_size can claim 32 GiB); zero entries
        // map nothing and break no rule: skipped in runs, and not read at
        // all in a known hole.
        let mut chunks = Chunks::new(l1_offset, length);
        while let Some((base, bytes)) = chunks.next(&mut self.img)? {
            self.walk_l1_chunk(l1_offset, base, bytes, &mut l2, stats)?;
        }
        Ok(())
    }

    /// The L1 entries of one chunk, `base` bytes into the table.
    fn walk_l1_chunk(
        &mut self,
        l1_offset: u64,
        base: u64,
        bytes: &[u8],
        l2: &mut Vec<u8>,
        stats: &mut MappingStats,
    ) -> Result<(), CheckError> {
        let cs = self.h.cluster_size();
        let first = (base / 8) as usize;
        for (k, chunk) in nonzero_table_entries(bytes, 8) {
            let i = first + k;
            let e = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
            let at = l1_offset + 8 * i as u64;
            if e & m::L1_RESERVED_MASK != 0 {
                self.findings.add_with(
                    Rule::L1ReservedBits,
                    at,
                    msg!("L1 entry {i} is {e:#018x}: reserved bits set"),
                );
            }
            let l2_offset = e & m::L1_OFFSET_MASK;
            if l2_offset == 0 {
                continue;
            }
            stats.l1_entries_used += 1;
            let aligned = self.h.aligned(l2_offset);
            let Some(claimed) = self.claim_pointed(
                at,
                l2_offset,
                aligned,
                Owner::L2Table,
                PointedRules {
                    misaligned: (
                        Rule::L1Alignment,
                        msg!("L1 entry {i}: L2 table offset {l2_offset:#x} is not cluster aligned"),
                    ),
                    past_eof: (
                        Rule::L2Bounds,
                        msg!("L1 entry {i}: L2 table at {l2_offset:#x} lies past the end of the file"),
                    ),
                },
            ) else {
                continue;
            };
            if let Some(n) = self.l2_refs.get_mut(&l2_offset) {
                // Shared with a snapshot (or referenced twice): its clusters
                // get the extra references in `apply_l2_multiplicity`.
                *n = n.saturating_add(1);
                continue;
            }
            if claimed.shared {
                continue;
            }
            self.l2_refs.insert(l2_offset, 1);
            stats.l2_tables += 1;
            if self.img.is_hole(l2_offset, cs) {
                // All zero: it maps nothing.
                continue;
            }
            l2.resize(cs as usize, 0);
            self.img.read_into(l2_offset, l2)?;
            self.walk_l2(l2_offset, l2, stats, None);
        }
        Ok(())
    }

    /// Adds the references that the second and later references of a
    /// shared L2 table make to its clusters. Each table is read once more,
    /// so the work stays proportional to the file.
    pub fn apply_l2_multiplicity(&mut self) -> Result<(), CheckError> {
        let mut shared: Vec<(u64, u32)> = self
            .l2_refs
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(o, n)| (*o, *n))
            .collect();
        shared.sort_unstable();
        let mut l2 = Vec::new();
        let mut scratch = MappingStats::default();
        for (offset, n) in shared {
            // Every table here was read once already, so it fits the file.
            if self.img.is_hole(offset, self.h.cluster_size()) {
                continue;
            }
            l2.resize(self.h.cluster_size() as usize, 0);
            self.img.read_into(offset, &mut l2)?;
            self.walk_l2(offset, &l2, &mut scratch, Some(n - 1));
        }
        Ok(())
    }

    /// Validates an L2 table and claims what it references; with `extra`,
    /// only adds that many references to the same clusters (no findings).
    fn walk_l2(&mut self, l2_offset: u64, l2: &[u8], stats: &mut MappingStats, extra: Option<u32>) {
        let saved = extra.map(|_| std::mem::take(&mut self.findings));
        let ext = self.h.extended_l2();
        let external = self.h.incompatible_features & INCOMPAT_EXTERNAL_DATA != 0;
        let entry_size = self.h.l2_entry_size() as usize;
        let cluster_bits = self.h.cluster_bits;
        let cs = self.h.cluster_size();
        // Unallocated entries (all zero) are skipped in runs.
        for (i, chunk) in nonzero_table_entries(l2, entry_size) {
            let e = u64::from_be_bytes(chunk[..8].try_into().unwrap_or_default());
            let sub = if ext {
                u64::from_be_bytes(chunk[8..16].try_into().unwrap_or_default())
            } else {
                0
            };
            let at = l2_offset + (i * entry_size) as u64;
            if e & m::COMPRESSED != 0 {
                // Offset field: bits 0..x-1 with x = 62 - (cluster_bits - 8);
                // the rest up to bit 61 counts additional 512-byte sectors.
                let x = 62 - (cluster_bits - 8);
                let host = e & ((1u64 << x) - 1);
                let sectors = (e & !(m::COMPRESSED | m::COPIED)) >> x;
                let length = (sectors + 1) * 512 - (host & 511);
                stats.compressed_clusters += 1;
                if sub != 0 {
                    self.findings.add_with(
                        Rule::L2Subclusters,
                        at + 8,
                        msg!(
                            "compressed L2 entry {i} has subcluster bitmap {sub:#018x}, must be 0"
                        ),
                    );
                }
                if self.data_past_eof(i, host, at, "compressed data") {
                    continue;
                }
                // The last sector may be cut short by the end of the file.
                let length = length.min(self.img.len() - host);
                self.reference(host, length, Owner::CompressedData, at, extra);
                continue;
            }
            let mut reserved = m::L2_RESERVED_MASK;
            if self.h.version == 2 || ext {
                reserved |= m::ZERO;
            }
            if e & reserved != 0 {
                self.findings.add_with(
                    Rule::L2ReservedBits,
                    at,
                    msg!(
                        "L2 entry {i} is {e:#018x}: reserved bits {:#x} set",
                        e & reserved
                    ),
                );
            }
            let host = e & m::L2_OFFSET_MASK;
            if ext {
                let alloc = sub & 0xffff_ffff;
                let zero = sub >> 32;
                if alloc & zero != 0 || (alloc != 0 && host == 0 && !external) {
                    self.findings.add_with(
                        Rule::L2Subclusters,
                        at + 8,
                        msg!(
                            "L2 entry {i}: subcluster bitmap {sub:#018x} marks a subcluster both allocated and zero, or allocated without an offset"
                        ),
                    );
                }
            }
            if e & m::ZERO != 0 && !ext {
                stats.zero_clusters += 1;
            }
            if host == 0 && !(external && e & m::COPIED != 0) {
                continue;
            }
            if !self.h.aligned(host) {
                self.findings.add_with(
                    Rule::L2Alignment,
                    at,
                    msg!("L2 entry {i}: data offset {host:#x} is not cluster aligned"),
                );
                continue;
            }
            stats.data_clusters += 1;
            if external {
                continue;
            }
            if self.data_past_eof(i, host, at, "data cluster") {
                continue;
            }
            self.reference(host, cs, Owner::GuestData, at, extra);
        }
        if let Some(saved) = saved {
            self.findings = saved;
        }
    }

    /// True, with `l2.data-bounds` reported at `at`, when the `what` that
    /// L2 entry `i` names at `host` starts at or past the end of the file.
    fn data_past_eof(&mut self, i: usize, host: u64, at: u64, what: &str) -> bool {
        let past = host >= self.img.len();
        if past {
            self.findings.add_with(
                Rule::L2DataBounds,
                at,
                msg!("L2 entry {i}: {what} at {host:#x} lies past the end of the file"),
            );
        }
        past
    }

    fn reference(&mut self, offset: u64, length: u64, owner: Owner, at: u64, extra: Option<u32>) {
        match extra {
            None => {
                self.map
                    .claim(&mut self.findings, offset, length, owner, at);
            }
            Some(n) => self.map.add_refs(offset, length, n),
        }
    }
}
