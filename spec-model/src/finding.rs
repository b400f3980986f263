//! Findings: one broken (or noteworthy) rule at one file offset.

use crate::rules::{Catalogued, Rule, Severity};
use serde::Serialize;
use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// One finding of the model: of a final-spec [`Rule`], or of another
/// catalogue (the drafts' rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding<K = Rule> {
    pub rule: K,
    pub severity: Severity,
    /// File offset of the offending field or structure.
    pub offset: u64,
    /// Names the field and its value.
    pub message: Message,
}

/// A finding's message. The messages of one check are written into one
/// buffer that its findings share, so keeping a finding costs no
/// allocation of its own (a fuzzed image yields dozens of findings, and
/// under AddressSanitizer every allocation is expensive).
#[derive(Clone)]
pub struct Message {
    text: Arc<str>,
    range: Range<usize>,
}

impl Message {
    /// The message text.
    pub fn as_str(&self) -> &str {
        self.text.get(self.range.clone()).unwrap_or_default()
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        let range = 0..s.len();
        Message {
            text: s.into(),
            range,
        }
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::from(s.to_string())
    }
}

impl Deref for Message {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Message {}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// At most this many findings of one rule are kept; the rest are counted in
/// one closing finding, so a hostile file cannot flood the report.
pub const MAX_FINDINGS_PER_RULE: u32 = 64;

/// Appends a formatted message to the shared message buffer (used by the
/// `msg!` closures).
pub(crate) fn write_message(out: &mut String, args: fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = fmt::Write::write_fmt(out, args);
}

/// Findings room is made for when the first one arrives.
const INITIAL_FINDINGS: usize = 64;

/// Severities per rule in [`Findings`]' count table.
const SEVERITIES: usize = 6;

/// A kept finding whose message lies in [`Findings`]' buffer.
#[derive(Debug)]
struct Kept<K> {
    rule: K,
    severity: Severity,
    offset: u64,
    start: usize,
    end: usize,
}

/// Collects findings of one catalogue (the final spec's [`Rule`] unless
/// said otherwise), capping each rule's count.
#[derive(Debug)]
pub struct Findings<K = Rule> {
    list: Vec<Kept<K>>,
    /// The kept findings' messages, one after the other.
    text: String,
    /// Findings recorded per (rule, severity), indexed by
    /// `rule * SEVERITIES + severity`: every finding bumps one counter, so
    /// counting must not search (empty until the first finding).
    counts: Vec<u32>,
    /// The (rule, severity) pairs with a non-zero count, in first-seen
    /// order: an image breaks few distinct rules, so the queries below
    /// scan this short list.
    per_rule: Vec<(K, Severity)>,
    bitmap_cluster_error: bool,
}

impl<K> Default for Findings<K> {
    fn default() -> Self {
        Findings {
            list: Vec::new(),
            text: String::new(),
            counts: Vec::new(),
            per_rule: Vec::new(),
            bitmap_cluster_error: false,
        }
    }
}

impl<K: Catalogued> Findings<K> {
    /// Records a finding with the rule's first (or only) severity.
    pub fn add(&mut self, rule: K, offset: u64, message: impl AsRef<str>) {
        self.add_as(rule, rule.severities()[0], offset, message)
    }

    /// Records a finding with an explicit severity (for rules with two).
    pub fn add_as(&mut self, rule: K, severity: Severity, offset: u64, message: impl AsRef<str>) {
        self.add_as_with(rule, severity, offset, |out| out.push_str(message.as_ref()))
    }

    /// Like [`Findings::add`], but writes the message (into the buffer it
    /// is given) only when the finding is kept: a hostile file can break
    /// one rule thousands of times, and formatting the messages past the
    /// cap would dominate the check. `msg!("...")` makes such a closure.
    pub fn add_with(&mut self, rule: K, offset: u64, message: impl FnOnce(&mut String)) {
        self.add_as_with(rule, rule.severities()[0], offset, message)
    }

    /// [`Findings::add_as`] with a lazily written message (see `add_with`).
    pub fn add_as_with(
        &mut self,
        rule: K,
        severity: Severity,
        offset: u64,
        message: impl FnOnce(&mut String),
    ) {
        debug_assert!(
            rule.severities().contains(&severity),
            "{rule} as {severity:?}"
        );
        if self.counts.is_empty() {
            // First finding: room for a typical damaged image's findings
            // at once, rather than a dozen reallocations while they arrive.
            self.counts = vec![0; K::COUNT * SEVERITIES];
            self.list.reserve(INITIAL_FINDINGS);
            self.text.reserve(INITIAL_FINDINGS * 64);
        }
        let slot = &mut self.counts[rule.index() * SEVERITIES + severity as usize];
        *slot += 1;
        let n = *slot;
        if n == 1 {
            self.per_rule.push((rule, severity));
        }
        if n <= MAX_FINDINGS_PER_RULE {
            self.keep(rule, severity, offset, message);
        }
    }

    /// How many more findings of `rule` at `severity` would be listed
    /// before the rule's cap.
    pub fn room(&self, rule: K, severity: Severity) -> u32 {
        let recorded = self
            .counts
            .get(rule.index() * SEVERITIES + severity as usize)
            .copied()
            .unwrap_or(0);
        MAX_FINDINGS_PER_RULE.saturating_sub(recorded)
    }

    /// Records `n` findings of `rule` at `severity` that the caller knows
    /// lie past the rule's cap ([`Findings::room`] is 0): they are counted
    /// in its summary, exactly as if each had been added.
    pub fn count_unlisted(&mut self, rule: K, severity: Severity, n: u32) {
        if n == 0 {
            return;
        }
        debug_assert_eq!(self.room(rule, severity), 0, "{rule} is not capped");
        if let Some(slot) = self
            .counts
            .get_mut(rule.index() * SEVERITIES + severity as usize)
        {
            *slot = slot.saturating_add(n);
        }
    }

    /// Appends a kept finding, writing its message into the shared buffer.
    fn keep(
        &mut self,
        rule: K,
        severity: Severity,
        offset: u64,
        message: impl FnOnce(&mut String),
    ) {
        let start = self.text.len();
        message(&mut self.text);
        self.list.push(Kept {
            rule,
            severity,
            offset,
            start,
            end: self.text.len(),
        });
    }

    /// True when any finding of `rule` was recorded.
    pub fn has(&self, rule: K) -> bool {
        self.per_rule.iter().any(|(r, _)| *r == rule)
    }

    /// True when any error finding satisfies `pred`.
    pub fn any_error(&self, pred: impl Fn(K) -> bool) -> bool {
        self.per_rule
            .iter()
            .any(|(r, s)| *s == Severity::Error && pred(*r))
    }

    /// The findings sorted by offset (then catalogue order), with one
    /// summary finding per capped rule (see [`Catalogued::SUMMARY_LAST`]).
    pub fn into_sorted(mut self) -> Vec<Finding<K>> {
        let mut capped: Vec<_> = self
            .per_rule
            .iter()
            .map(|&(r, s)| (r, s, self.counts[r.index() * SEVERITIES + s as usize]))
            .filter(|(_, _, n)| *n > MAX_FINDINGS_PER_RULE)
            .collect();
        capped.sort();
        for (rule, severity, n) in capped {
            let last = if K::SUMMARY_LAST {
                u64::MAX
            } else {
                self.list
                    .iter()
                    .filter(|f| f.rule == rule && f.severity == severity)
                    .map(|f| f.offset)
                    .max()
                    .unwrap_or(0)
            };
            self.keep(
                rule,
                severity,
                last,
                msg!(
                    "{} more findings of this rule not listed",
                    n - MAX_FINDINGS_PER_RULE
                ),
            );
        }
        // By offset, then rule, then arrival: the keys are unique, so an
        // unstable sort of them (no scratch buffer) gives the stable order.
        let mut order: Vec<u128> = self
            .list
            .iter()
            .enumerate()
            .map(|(i, f)| u128::from(f.offset) << 64 | (f.rule.index() as u128) << 32 | i as u128)
            .collect();
        order.sort_unstable();
        let text: Arc<str> = self.text.into();
        let mut out: Vec<Finding<K>> = Vec::with_capacity(order.len());
        let mut last: Option<&Kept<K>> = None;
        for key in order {
            let Some(f) = self.list.get(key as u32 as usize) else {
                continue;
            };
            // Repeats of one finding (same rule, severity, offset and
            // message) are listed once.
            if last.is_some_and(|l| {
                l.rule == f.rule
                    && l.severity == f.severity
                    && l.offset == f.offset
                    && text.get(l.start..l.end) == text.get(f.start..f.end)
            }) {
                continue;
            }
            last = Some(f);
            out.push(Finding {
                rule: f.rule,
                severity: f.severity,
                offset: f.offset,
                message: Message {
                    text: Arc::clone(&text),
                    range: f.start..f.end,
                },
            });
        }
        out
    }
}

impl Findings<Rule> {
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
}

#[cfg(test)]
mod tests {
    use super::{Findings, MAX_FINDINGS_PER_RULE};
    use crate::rules::{Rule, Severity};

    /// Adds `n` leak findings one by one, each at its own offset.
    fn leaks(f: &mut Findings, n: u32) {
        for i in 0..n {
            f.add_as(
                Rule::RefcountLeak,
                Severity::Leak,
                u64::from(i) * 512,
                format!("leak {i}"),
            );
        }
    }

    #[test]
    fn counting_unlisted_findings_equals_adding_them() {
        let (mut added, mut counted) = (Findings::default(), Findings::default());
        leaks(&mut added, MAX_FINDINGS_PER_RULE + 10);
        leaks(&mut counted, MAX_FINDINGS_PER_RULE);
        assert_eq!(counted.room(Rule::RefcountLeak, Severity::Leak), 0);
        counted.count_unlisted(Rule::RefcountLeak, Severity::Leak, 10);
        let (added, counted) = (added.into_sorted(), counted.into_sorted());
        assert_eq!(added, counted);
        let summary = counted.last().map(|f| f.message.to_string());
        assert_eq!(
            summary.as_deref(),
            Some("10 more findings of this rule not listed")
        );
    }

    #[test]
    fn room_counts_down_to_the_cap() {
        let mut f = Findings::default();
        assert_eq!(
            f.room(Rule::RefcountLeak, Severity::Leak),
            MAX_FINDINGS_PER_RULE
        );
        leaks(&mut f, 5);
        assert_eq!(
            f.room(Rule::RefcountLeak, Severity::Leak),
            MAX_FINDINGS_PER_RULE - 5
        );
        assert_eq!(
            f.room(Rule::RefcountOverlap, Severity::Error),
            MAX_FINDINGS_PER_RULE
        );
    }

    #[test]
    fn sorted_by_offset_then_rule_keeping_arrival_order_and_dropping_repeats() {
        let mut f = Findings::default();
        f.add(Rule::RefcountOverlap, 0x200, "b");
        f.add(Rule::RefcountOverlap, 0x200, "a");
        f.add(Rule::RefcountOverlap, 0x200, "a");
        f.add(Rule::L1Alignment, 0x200, "c");
        f.add(Rule::RefcountOverlap, 0x100, "d");
        let got: Vec<(u64, Rule, String)> = f
            .into_sorted()
            .into_iter()
            .map(|x| (x.offset, x.rule, x.message.to_string()))
            .collect();
        let (l1, ov) = (Rule::L1Alignment, Rule::RefcountOverlap);
        let mut want = vec![
            (0x100, ov, "d".to_string()),
            (0x200, ov, "b".to_string()),
            (0x200, ov, "a".to_string()),
        ];
        // Same offset: by rule order in the catalogue.
        let at = if (l1 as u32) < (ov as u32) { 1 } else { 3 };
        want.insert(at, (0x200, l1, "c".to_string()));
        assert_eq!(got, want);
    }
}
