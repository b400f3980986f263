//! Reports of a run: what each case did under each implementation
//! ([`CaseRun`], [`CaseResult`]), where the run comes from
//! ([`Provenance`]), what failed it ([`GateSummary`]) and `--json`.
//! JUnit is [`crate::runner::report::junit`], the terminal matrix [`crate::runner::report::terminal`].

pub mod diff;
pub mod html;
pub mod junit;
pub mod provenance;
pub mod sanitise;
pub mod terminal;

use crate::runner::judge::{Outcome, OutcomeKind};
use crate::runner::observation::Observation;
use generator::Expected;
pub use provenance::Provenance;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
