//! Judging campaign images under an adapter, and the deduplication key
//! that says when two disagreements are the same (their cause signature).

use crate::runner::{self, adapters::Adapter, judge::Outcome, CaseResult, RunOptions};
use anyhow::{Context, Result};
use generator::expected::Expected;
use generator::ManifestCase;
use std::path::Path;

/// Deduplication key: the outcome's cause signature as a file name
/// (outcome, the check that decided, the image features involved, a hash
/// of the implementation's normalised message; see
/// `runner::judge::cause`), so that each key is one behaviour.
pub fn key(outcome: &Outcome) -> String {
    outcome.key()
}

/// Judges a candidate under `adapter` (its image written to `dir`).
pub fn judge(
    adapter: &dyn Adapter,
    dir: &Path,
    c: &super::candidates::Candidate,
    opts: &RunOptions,
) -> Result<CaseResult> {
    judge_bytes(adapter, dir, "case.qcow2", &c.bytes, &c.expected, opts)
}

/// Judges `bytes` (written to `dir/name`) under `adapter`.
pub(super) fn judge_bytes(
    adapter: &dyn Adapter,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    expected: &Expected,
    opts: &RunOptions,
) -> Result<CaseResult> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    let case = ManifestCase {
        id: name.to_string(),
        file: name.to_string(),
        expected: expected.clone(),
        description: String::new(),
        companions: Vec::new(),
        secret: None,
    };
    Ok(runner::run_case(adapter, &case, &path, opts))
}
