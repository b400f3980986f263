//! The state one analysis carries: the image, its header, the cluster map
//! and the findings so far. Each structure's module adds its own methods.

use crate::clusters::{Claim, ClusterMap, Owner};
use crate::finding::Findings;
use crate::header::Header;
use crate::io::{CheckError, Image, MAX_RETAINED};
use crate::rules::Rule;

pub(crate) struct Ctx<R> {
    pub img: Image<R>,
    pub h: Header,
    pub map: ClusterMap,
    pub findings: Findings,
    pub file_len: u64,
    /// References per L2 table offset (tables shared with snapshots).
    pub l2_refs: std::collections::HashMap<u64, u32>,
    /// Bytes of the structures kept for later so far (bitmap tables,
    /// snapshots), against [`crate::io::MAX_RETAINED`].
    pub retained: u64,
}

impl<R> Ctx<R> {
    /// Counts `size` more bytes kept for `structure` at `offset`; past
    /// [`MAX_RETAINED`] in all, the check stops with [`CheckError::Limit`].
    pub fn retain(
        &mut self,
        structure: &'static str,
        offset: u64,
        size: u64,
    ) -> Result<(), CheckError> {
        self.retained = self.retained.saturating_add(size);
        if self.retained > MAX_RETAINED {
            return Err(CheckError::Limit {
                structure,
                offset,
                size,
                limit: MAX_RETAINED,
            });
        }
        Ok(())
    }

    /// Claims `[offset, offset+length)` for `owner`; when part of it lies
    /// past the end of the file, reports `bounds_rule` at `at`.
    pub fn claim_or_report(
        &mut self,
        offset: u64,
        length: u64,
        owner: Owner,
        at: u64,
        bounds_rule: Rule,
        what: &str,
    ) -> Claim {
        let claim = self
            .map
            .claim(&mut self.findings, offset, length, owner, at);
        if claim.past_end {
            self.findings.add_with(
                bounds_rule,
                at,
                msg!(
                    "{what} at {offset:#x} ({length} bytes) runs past the end of the file ({} bytes)",
                    self.file_len
                ),
            );
        }
        claim
    }
}

/// What breaks which rule when a table entry points at a structure of one
/// cluster (an L1 entry at an L2 table, a refcount table entry at a
/// refcount block): the target's alignment and its place in the file.
pub(crate) struct PointedRules<A, B> {
    pub misaligned: (Rule, A),
    pub past_eof: (Rule, B),
}

impl<R: std::io::Read + std::io::Seek> Ctx<R> {
    /// The cluster at `target`, named by the table entry at `at`: unless
    /// `aligned` (the caller's test of the entry) it breaks the
    /// `misaligned` rule, and unless it lies wholly inside the file the
    /// `past_eof` rule (each message written only when reported); either
    /// way `None`. Otherwise the cluster is claimed for `owner`.
    pub fn claim_pointed<A, B>(
        &mut self,
        at: u64,
        target: u64,
        aligned: bool,
        owner: Owner,
        rules: PointedRules<A, B>,
    ) -> Option<Claim>
    where
        A: FnOnce(&mut String),
        B: FnOnce(&mut String),
    {
        let cs = self.h.cluster_size();
        if !aligned {
            let (rule, message) = rules.misaligned;
            self.findings.add_with(rule, at, message);
            return None;
        }
        if !self.img.contains(target, cs) {
            let (rule, message) = rules.past_eof;
            self.findings.add_with(rule, at, message);
            return None;
        }
        Some(self.map.claim(&mut self.findings, target, cs, owner, at))
    }
}
