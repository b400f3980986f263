//! Judging campaign images under an adapter, and the deduplication key
//! that says when two disagreements are the same (their cause signature).

use crate::runner::{self, adapters::Adapter, judge::Outcome, CaseResult, RunOptions};
use anyhow::{Context, Result};
use generator::expected::Expected;
use generator::ManifestCase;
use spec_model::{Rule, Severity};
use std::path::Path;

/// The rules of `expected` that can be errors, sorted: what the
/// deduplication key names.
pub(super) fn error_rules(expected: &Expected) -> Vec<&str> {
    let mut rules: Vec<&str> = expected
        .rules
        .iter()
        .filter(|r| Rule::from_id(r).is_some_and(|x| x.severities().contains(&Severity::Error)))
        .map(String::as_str)
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

/// Deduplication key: the outcome's cause signature as a file name
/// (outcome, the check that decided, the image features involved, a hash
/// of the implementation's normalised message; see
/// [`crate::runner::cause`]), so that each key is one behaviour.
pub fn key(outcome: &Outcome) -> String {
    outcome.key()
}

/// Judges a candidate under `adapter` (its image written to `dir`).
pub fn judge(
    adapter: &dyn Adapter,
    dir: &Path,
    c: &super::Candidate,
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
    };
    Ok(runner::run_case(adapter, &case, &path, opts))
}
