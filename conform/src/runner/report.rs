//! Reports of a run: what each case did under each implementation
//! ([`CaseRun`], [`CaseResult`]), where the run comes from
//! ([`Provenance`]), what failed it ([`GateSummary`]), the terminal matrix
//! and `--json`. JUnit is [`super::junit`].

use super::judge::{Outcome, OutcomeKind};
use super::observation::Observation;
pub use super::provenance::Provenance;
use generator::Expected;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The JSON report's format tag.
pub const FORMAT: &str = "qcow2-conform-run/1";

/// The result of one case under one implementation.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub implementation: String,
    pub outcome: Outcome,
    pub observation: Observation,
}

/// Everything about one case of the run.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRun {
    pub id: String,
    pub file: String,
    pub description: String,
    pub expected: Expected,
    pub results: Vec<CaseResult>,
}

/// The whole run, as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub format: String,
    pub corpus: String,
    pub implementations: Vec<String>,
    /// Per implementation: outcome -> number of cases.
    pub totals: BTreeMap<String, BTreeMap<String, usize>>,
    /// The corpus files hashed the same before and after the run.
    pub corpus_unchanged: bool,
    pub corpus_changes: Vec<String>,
    pub duration_ms: u64,
    /// Why the run stopped before it finished (SIGINT, SIGTERM); its
    /// unfinished cases are `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// Tool, corpus digest, implementation versions, host, time, command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// What the run was held to and every result that failed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSummary>,
    pub cases: Vec<CaseRun>,
}

/// How a failing result differs from what was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// An outcome named by `--fail-on` (no expectations file).
    Failing,
    /// A failing outcome other than the expected one.
    Regressed,
    /// A known failure now has an outcome that does not fail: the
    /// expectations file needs updating.
    Improved,
}

/// One result that fails the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub implementation: String,
    pub case: String,
    pub outcome: OutcomeKind,
    /// The expected outcome, with an expectations file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<OutcomeKind>,
    pub change: Change,
}

impl Failure {
    /// One line: `regressed qemu valid/0001: pass -> lenient`.
    pub fn line(&self) -> String {
        match (self.change, self.expected) {
            (Change::Failing, _) | (_, None) => {
                format!("{} {}: {}", self.implementation, self.case, self.outcome)
            }
            (Change::Regressed, Some(e)) => format!(
                "regressed {} {}: expected {e}, now {}",
                self.implementation, self.case, self.outcome
            ),
            (Change::Improved, Some(e)) => format!(
                "improved {} {}: expected {e}, now {} (update the expectations file)",
                self.implementation, self.case, self.outcome
            ),
        }
    }
}

/// The rules a run is held to, as the report records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSummary {
    pub fail_on: Vec<OutcomeKind>,
    /// The expectations file, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectations: Option<String>,
    /// Every result that fails the run.
    pub failed: Vec<Failure>,
}

impl RunReport {
    pub fn new(
        corpus: String,
        implementations: Vec<String>,
        cases: Vec<CaseRun>,
        changes: Vec<String>,
        duration_ms: u64,
    ) -> RunReport {
        let mut totals: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for c in &cases {
            for r in &c.results {
                *totals
                    .entry(r.implementation.clone())
                    .or_default()
                    .entry(r.outcome.kind.as_str().to_owned())
                    .or_default() += 1;
            }
        }
        RunReport {
            format: FORMAT.into(),
            corpus,
            implementations,
            totals,
            corpus_unchanged: changes.is_empty(),
            corpus_changes: changes,
            duration_ms,
            interrupted: None,
            provenance: None,
            gate: None,
            cases,
        }
    }

    /// Every outcome kind that occurred.
    pub fn kinds(&self) -> Vec<OutcomeKind> {
        let mut k: Vec<OutcomeKind> = self
            .cases
            .iter()
            .flat_map(|c| c.results.iter().map(|r| r.outcome.kind))
            .collect();
        k.sort();
        k.dedup();
        k
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Rows of the terminal matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// One row per case.
    Case,
    /// One row per rule (the case ID's prefix before `/`).
    Rule,
}

fn colour(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Pass => "32",
        OutcomeKind::Recorded => "2",
        OutcomeKind::Lenient | OutcomeKind::Strict => "33",
        OutcomeKind::Mismatch | OutcomeKind::Corrupting | OutcomeKind::Crash => "1;31",
        OutcomeKind::Hang => "35",
        OutcomeKind::Error => "1;37;41",
    }
}

fn paint(text: &str, kind: OutcomeKind, on: bool) -> String {
    if on {
        format!("\x1b[{}m{text}\x1b[0m", colour(kind))
    } else {
        text.to_owned()
    }
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n >= w {
        s.to_owned()
    } else {
        format!("{s}{}", " ".repeat(w - n))
    }
}

fn short_impl(name: &str) -> String {
    if name.chars().count() > 24 {
        let tail: String = name
            .chars()
            .rev()
            .take(21)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("...{tail}")
    } else {
        name.to_owned()
    }
}

/// The terminal matrix (rows by case or rule, a column per
/// implementation), then every result that is neither pass nor recorded,
/// with its reasons, then the totals.
pub fn matrix(report: &RunReport, rows: Rows, coloured: bool) -> String {
    let impls = &report.implementations;
    // row key -> implementation -> outcome counts
    let mut table: Vec<(String, Vec<BTreeMap<OutcomeKind, usize>>)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for c in &report.cases {
        let key = match rows {
            Rows::Case => c.id.clone(),
            Rows::Rule => c.id.split('/').next().unwrap_or(&c.id).to_owned(),
        };
        let i = *index.entry(key.clone()).or_insert_with(|| {
            table.push((key, vec![BTreeMap::new(); impls.len()]));
            table.len() - 1
        });
        for r in &c.results {
            if let Some(j) = impls.iter().position(|n| *n == r.implementation) {
                *table[i].1[j].entry(r.outcome.kind).or_default() += 1;
            }
        }
    }
    let cell = |counts: &BTreeMap<OutcomeKind, usize>, paint_on: bool| -> (String, usize) {
        // Worst first (reverse of the declaration order, recorded last).
        let mut parts = Vec::new();
        let mut plain = 0;
        let mut kinds: Vec<_> = counts.iter().collect();
        kinds.sort_by_key(|(k, _)| match k {
            OutcomeKind::Recorded => 0,
            OutcomeKind::Pass => 1,
            k => 10 + **k as usize,
        });
        kinds.reverse();
        for (k, n) in kinds {
            let text = if rows == Rows::Case && *n == 1 {
                k.as_str().to_owned()
            } else {
                format!("{n} {k}")
            };
            plain += text.chars().count() + 1;
            parts.push(paint(&text, *k, paint_on));
        }
        (parts.join(" "), plain.saturating_sub(1))
    };
    let key_w = table
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    let col_w: Vec<usize> = impls
        .iter()
        .enumerate()
        .map(|(j, name)| {
            table
                .iter()
                .map(|(_, c)| cell(&c[j], false).1)
                .max()
                .unwrap_or(0)
                .max(short_impl(name).chars().count())
        })
        .collect();
    let mut o = String::new();
    let head = match rows {
        Rows::Case => "case",
        Rows::Rule => "rule",
    };
    let _ = write!(o, "{}", pad(head, key_w));
    for (j, n) in impls.iter().enumerate() {
        let _ = write!(o, "  {}", pad(&short_impl(n), col_w[j]));
    }
    o.push('\n');
    for (key, counts) in &table {
        let _ = write!(o, "{}", pad(key, key_w));
        for (j, c) in counts.iter().enumerate() {
            let (text, plain) = cell(c, coloured);
            let _ = write!(o, "  {text}{}", " ".repeat(col_w[j].saturating_sub(plain)));
        }
        o.push('\n');
    }
    let mut problems = Vec::new();
    for c in &report.cases {
        for r in &c.results {
            if r.outcome.kind.fails_by_default() {
                problems.push((c, r));
            }
        }
    }
    if !problems.is_empty() {
        o.push('\n');
        for (c, r) in &problems {
            let _ = writeln!(
                o,
                "{} {} [{}] ({})",
                paint(r.outcome.kind.as_str(), r.outcome.kind, coloured),
                c.id,
                r.implementation,
                c.file
            );
            for d in r.outcome.detail.iter().take(4) {
                let _ = writeln!(o, "    {d}");
            }
        }
    }
    o.push('\n');
    for name in impls {
        let t = report.totals.get(name).cloned().unwrap_or_default();
        let parts: Vec<String> = OutcomeKind::ALL
            .iter()
            .filter_map(|k| {
                t.get(k.as_str())
                    .map(|n| paint(&format!("{n} {k}"), *k, coloured))
            })
            .collect();
        let _ = writeln!(o, "{name}: {}", parts.join(", "));
    }
    if !report.corpus_unchanged {
        let _ = writeln!(
            o,
            "CORPUS CHANGED during the run: {}",
            report.corpus_changes.join("; ")
        );
    }
    o
}
