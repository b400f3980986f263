//! Findings: one broken (or noteworthy) rule at one file offset.

use crate::rules::{Rule, Severity};
use serde::Serialize;

/// One finding of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    /// File offset of the offending field or structure.
    pub offset: u64,
    /// Names the field and its value.
    pub message: String,
}

/// At most this many findings of one rule are kept; the rest are counted in
/// one closing finding, so a hostile file cannot flood the report.
pub const MAX_FINDINGS_PER_RULE: u32 = 64;

/// Formats a finding's message into a buffer big enough for almost every
/// message, so that building it costs one allocation and no regrowth
/// (`format!` starts small and reallocates as it writes).
pub(crate) fn message(args: std::fmt::Arguments<'_>) -> String {
    let mut s = String::with_capacity(128);
    // Writing to a String cannot fail.
    let _ = std::fmt::Write::write_fmt(&mut s, args);
    s
}

/// Collects findings, capping each rule's count.
#[derive(Debug, Default)]
pub struct Findings {
    list: Vec<Finding>,
    /// Findings recorded per (rule, severity). A short list searched
    /// linearly: an image breaks few distinct rules, and this is looked up
    /// for every finding, so hashing would cost more than the scan.
    per_rule: Vec<((Rule, Severity), u32)>,
    bitmap_cluster_error: bool,
}

impl Findings {
    /// Records a finding with the rule's first (or only) severity.
    pub fn add(&mut self, rule: Rule, offset: u64, message: impl Into<String>) {
        self.add_as(rule, rule.severities()[0], offset, message)
    }

    /// Records a finding with an explicit severity (for rules with two).
    pub fn add_as(
        &mut self,
        rule: Rule,
        severity: Severity,
        offset: u64,
        message: impl Into<String>,
    ) {
        self.add_as_with(rule, severity, offset, || message.into())
    }

    /// Like [`Findings::add`], but builds the message only when the finding
    /// is kept: a hostile file can break one rule thousands of times, and
    /// formatting the messages past the cap would dominate the check.
    pub fn add_with(&mut self, rule: Rule, offset: u64, message: impl FnOnce() -> String) {
        self.add_as_with(rule, rule.severities()[0], offset, message)
    }

    /// [`Findings::add_as`] with a lazily built message (see `add_with`).
    pub fn add_as_with(
        &mut self,
        rule: Rule,
        severity: Severity,
        offset: u64,
        message: impl FnOnce() -> String,
    ) {
        debug_assert!(
            rule.severities().contains(&severity),
            "{rule} as {severity:?}"
        );
        let key = (rule, severity);
        let n = match self.per_rule.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.per_rule.push((key, 1));
                1
            }
        };
        if n <= MAX_FINDINGS_PER_RULE {
            self.list.push(Finding {
                rule,
                severity,
                offset,
                message: message(),
            });
        }
    }

    /// Notes that a bitmap structure shares a cluster with another
    /// structure (or is referenced more often than its refcount allows):
    /// the bitmaps extension is then invalid as a whole.
    pub fn mark_bitmaps_overlap(&mut self) {
        self.bitmap_cluster_error = true;
    }

    /// True when any error makes the bitmaps extension unusable.
    pub fn bitmaps_invalid(&self) -> bool {
        self.bitmap_cluster_error || self.any_error(|r| r.id().starts_with("bitmaps."))
    }

    /// True when any finding of `rule` was recorded.
    pub fn has(&self, rule: Rule) -> bool {
        self.per_rule.iter().any(|((r, _), _)| *r == rule)
    }

    /// True when any error finding satisfies `pred`.
    pub fn any_error(&self, pred: impl Fn(Rule) -> bool) -> bool {
        self.per_rule
            .iter()
            .any(|((r, s), _)| *s == Severity::Error && pred(*r))
    }

    /// The findings sorted by offset (then rule), with one summary finding
    /// per capped rule.
    pub fn into_sorted(mut self) -> Vec<Finding> {
        let mut capped: Vec<_> = self
            .per_rule
            .iter()
            .filter(|(_, n)| *n > MAX_FINDINGS_PER_RULE)
            .map(|((r, s), n)| (*r, *s, *n))
            .collect();
        capped.sort();
        for (rule, severity, n) in capped {
            let last = self
                .list
                .iter()
                .filter(|f| f.rule == rule && f.severity == severity)
                .map(|f| f.offset)
                .max()
                .unwrap_or(0);
            self.list.push(Finding {
                rule,
                severity,
                offset: last,
                message: format!(
                    "{} more findings of this rule not listed",
                    n - MAX_FINDINGS_PER_RULE
                ),
            });
        }
        self.list.sort_by_key(|f| (f.offset, f.rule));
        self.list.dedup();
        self.list
    }
}
