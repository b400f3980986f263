//! Judging campaign images under an adapter, and the deduplication key
//! that says when two disagreements are the same.

use crate::runner::{self, adapters::Adapter, judge::OutcomeKind, CaseResult, RunOptions};
use anyhow::{Context, Result};
use generator::expected::Expected;
use generator::ManifestCase;
use spec_model::{Rule, Severity, Verdict};
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

/// Deduplication key: outcome and the model's error rules (or verdict).
pub fn key(kind: OutcomeKind, expected: &Expected) -> String {
    let rules = error_rules(expected);
    let what = if expected.verdict == Verdict::Invalid && !rules.is_empty() {
        rules.join("+")
    } else {
        expected.verdict.as_str().to_string()
    };
    format!("{}--{}", kind.as_str(), what)
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
