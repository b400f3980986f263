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
