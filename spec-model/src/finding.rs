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

/// Formats a finding's message. `std::fmt::format` sizes the buffer from
/// the arguments and runs the formatting loop inside the standard library,
/// which fuzzing builds do not instrument (a hand-written `write_fmt` into
/// a `String` would be compiled here, with a coverage hook on every write).
pub(crate) fn message(args: std::fmt::Arguments<'_>) -> String {
    std::fmt::format(args)
}

/// Severities per rule in [`Findings`]' count table.
const SEVERITIES: usize = 6;

/// Collects findings, capping each rule's count.
#[derive(Debug, Default)]
pub struct Findings {
    list: Vec<Finding>,
    /// Findings recorded per (rule, severity), indexed by
    /// `rule * SEVERITIES + severity`: every finding bumps one counter, so
    /// counting must not search (empty until the first finding).
    counts: Vec<u32>,
    /// The (rule, severity) pairs with a non-zero count, in first-seen
    /// order: an image breaks few distinct rules, so the queries below
    /// scan this short list.
    per_rule: Vec<(Rule, Severity)>,
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
        if self.counts.is_empty() {
            self.counts = vec![0; Rule::ALL.len() * SEVERITIES];
        }
        let slot = &mut self.counts[rule as usize * SEVERITIES + severity as usize];
        *slot += 1;
        let n = *slot;
        if n == 1 {
            self.per_rule.push((rule, severity));
        }
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
        self.per_rule.iter().any(|(r, _)| *r == rule)
    }

    /// True when any error finding satisfies `pred`.
    pub fn any_error(&self, pred: impl Fn(Rule) -> bool) -> bool {
        self.per_rule
            .iter()
            .any(|(r, s)| *s == Severity::Error && pred(*r))
    }

    /// The findings sorted by offset (then rule), with one summary finding
    /// per capped rule.
    pub fn into_sorted(mut self) -> Vec<Finding> {
        let mut capped: Vec<_> = self
            .per_rule
            .iter()
            .map(|&(r, s)| (r, s, self.counts[r as usize * SEVERITIES + s as usize]))
            .filter(|(_, _, n)| *n > MAX_FINDINGS_PER_RULE)
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
        // Sorted as one integer key per finding (offset, rule, position:
        // stable), then permuted: one comparison per step and each finding
        // moved once.
        let mut keys: Vec<u128> = self
            .list
            .iter()
            .enumerate()
            .map(|(i, f)| u128::from(f.offset) << 64 | (f.rule as u128) << 32 | i as u128)
            .collect();
        keys.sort_unstable();
        let mut slots: Vec<Option<Finding>> = self.list.into_iter().map(Some).collect();
        self.list = keys
            .iter()
            .filter_map(|k| slots[*k as u32 as usize].take())
            .collect();
        self.list.dedup();
        self.list
    }
}
