//! `report diff`: how the outcomes of two JSON run reports differ, per
//! implementation and case. Only outcome kinds are compared, so timings,
//! temporary paths, reasons' wording and provenance never show as a
//! change; implementation versions and the corpus digest are shown beside
//! the changes.

use crate::runner::corpus::input::{self, InputError};
use crate::runner::judge::outcome::OutcomeKind;
use crate::runner::report::provenance::Provenance;
use crate::runner::report::sanitise::one_line;
use crate::runner::report::GateSummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a report cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot read the run report")]
    Read(#[source] InputError),
    #[error("{} is not a run report (`run --json`): {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The part of a run report a diff (and `run --rerun`) reads.
#[derive(Debug, Deserialize)]
pub struct ReportView {
    #[serde(default)]
    pub provenance: Option<Provenance>,
    #[serde(default)]
    pub gate: Option<GateSummary>,
    pub cases: Vec<CaseView>,
}

#[derive(Debug, Deserialize)]
pub struct CaseView {
    pub id: String,
    pub results: Vec<ResultView>,
}

#[derive(Debug, Deserialize)]
pub struct ResultView {
    pub implementation: String,
    pub outcome: OutcomeView,
    /// Only its duration (`run --order-from`).
    #[serde(default)]
    pub observation: Option<DurationView>,
}

#[derive(Debug, Deserialize)]
pub struct DurationView {
    #[serde(default)]
    pub duration_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct OutcomeView {
    pub kind: OutcomeKind,
}

impl ReportView {
    pub fn load(path: &Path) -> Result<ReportView, DiffError> {
        let bytes =
            input::read_capped(path, input::REPORT_CAP, "a run report").map_err(DiffError::Read)?;
        serde_json::from_slice(&bytes).map_err(|source| DiffError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// (implementation, case) -> outcome.
    fn outcomes(&self) -> BTreeMap<(String, String), OutcomeKind> {
        self.cases
            .iter()
            .flat_map(|c| {
                c.results
                    .iter()
                    .map(|r| ((r.implementation.clone(), c.id.clone()), r.outcome.kind))
            })
            .collect()
    }

    /// (case, implementation) -> how long its observation took.
    pub fn durations(&self) -> std::collections::HashMap<(String, String), u64> {
        self.cases
            .iter()
            .flat_map(|c| {
                c.results.iter().map(|r| {
                    let ms = r.observation.as_ref().map_or(0, |o| o.duration_ms);
                    ((c.id.clone(), r.implementation.clone()), ms)
                })
            })
            .collect()
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.provenance
            .iter()
            .flat_map(|p| &p.implementations)
            .map(|i| (i.name.clone(), i.label()))
            .collect()
    }
}

/// What kind of change one result made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Now an outcome that fails by default, and a different one.
    Regressed,
    /// Was failing, now passes or is recorded.
    Improved,
    /// Any other change of outcome.
    Changed,
    /// A result only the new report has (not failing).
    Added,
    /// A result only the old report has.
    Removed,
}

/// One result whose outcome differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeChange {
    pub implementation: String,
    pub case: String,
    pub old: Option<OutcomeKind>,
    pub new: Option<OutcomeKind>,
    pub direction: Direction,
}

/// The difference between two reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportDiff {
    /// Implementation -> `name version` in the old and new report.
    pub old_versions: BTreeMap<String, String>,
    pub new_versions: BTreeMap<String, String>,
    pub old_corpus_digest: Option<String>,
    pub new_corpus_digest: Option<String>,
    /// Results compared (present in both).
    pub compared: usize,
    pub regressions: usize,
    pub changes: Vec<OutcomeChange>,
}

/// How the outcomes of `new` differ from those of `old`.
pub fn diff(old: &ReportView, new: &ReportView) -> ReportDiff {
    let (a, b) = (old.outcomes(), new.outcomes());
    let mut changes = Vec::new();
    let mut compared = 0;
    for (key, &o) in &a {
        let n = b.get(key).copied();
        if n.is_some() {
            compared += 1;
        }
        let direction = match n {
            None => Direction::Removed,
            Some(n) if n == o => continue,
            Some(n) if n.fails_by_default() => Direction::Regressed,
            Some(_) if o.fails_by_default() => Direction::Improved,
            Some(_) => Direction::Changed,
        };
        changes.push(change(key, Some(o), n, direction));
    }
    for (key, &n) in &b {
        if !a.contains_key(key) {
            let direction = if n.fails_by_default() {
                Direction::Regressed
            } else {
                Direction::Added
            };
            changes.push(change(key, None, Some(n), direction));
        }
    }
    changes.sort_by(|x, y| {
        (x.direction, &x.implementation, &x.case).cmp(&(y.direction, &y.implementation, &y.case))
    });
    let digest = |r: &ReportView| r.provenance.as_ref().map(|p| p.corpus_digest.clone());
    ReportDiff {
        old_versions: old.versions(),
        new_versions: new.versions(),
        old_corpus_digest: digest(old),
        new_corpus_digest: digest(new),
        compared,
        regressions: changes
            .iter()
            .filter(|c| c.direction == Direction::Regressed)
            .count(),
        changes,
    }
}

fn change(
    (implementation, case): &(String, String),
    old: Option<OutcomeKind>,
    new: Option<OutcomeKind>,
    direction: Direction,
) -> OutcomeChange {
    OutcomeChange {
        implementation: implementation.clone(),
        case: case.clone(),
        old,
        new,
        direction,
    }
}

impl ReportDiff {
    /// The human form: versions that changed, one line per change, totals.
    pub fn text(&self) -> String {
        let mut o = String::new();
        for (name, new) in &self.new_versions {
            match self.old_versions.get(name) {
                Some(old) if old != new => {
                    let _ = writeln!(o, "version: {} -> {}", one_line(old), one_line(new));
                }
                _ => {}
            }
        }
        if self.old_corpus_digest != self.new_corpus_digest {
            let show = |d: &Option<String>| {
                d.as_deref()
                    .map_or_else(|| "unknown".into(), |d| one_line(d).into_owned())
            };
            let _ = writeln!(
                o,
                "corpus: {} -> {} (different corpora)",
                show(&self.old_corpus_digest),
                show(&self.new_corpus_digest)
            );
        }
        let show = |k: Option<OutcomeKind>| k.map_or("-", OutcomeKind::as_str);
        for c in &self.changes {
            let d = serde_json::to_value(c.direction).unwrap_or_default();
            let _ = writeln!(
                o,
                "{:<9} {} {}: {} -> {}",
                d.as_str().unwrap_or(""),
                one_line(&c.implementation),
                one_line(&c.case),
                show(c.old),
                show(c.new)
            );
        }
        if self.changes.is_empty() {
            let _ = writeln!(o, "no change: {} results compared", self.compared);
        } else {
            let _ = writeln!(
                o,
                "{} change(s), {} regression(s), {} results compared",
                self.changes.len(),
                self.regressions,
                self.compared
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use crate::runner::report::diff::*;

    fn view(outcomes: &[(&str, OutcomeKind)]) -> ReportView {
        ReportView {
            provenance: None,
            gate: None,
            cases: outcomes
                .iter()
                .map(|(id, k)| CaseView {
                    id: (*id).into(),
                    results: vec![ResultView {
                        implementation: "qemu".into(),
                        outcome: OutcomeView { kind: *k },
                        observation: None,
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn classifies_changes() {
        use OutcomeKind::*;
        let old = view(&[("a", Pass), ("b", Lenient), ("c", Pass), ("d", Pass)]);
        let new = view(&[("a", Strict), ("b", Pass), ("c", Pass), ("e", Crash)]);
        let d = diff(&old, &new);
        let got: Vec<_> = d
            .changes
            .iter()
            .map(|c| (c.case.as_str(), c.direction))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Direction::Regressed),
                ("e", Direction::Regressed),
                ("b", Direction::Improved),
                ("d", Direction::Removed)
            ]
        );
        assert_eq!(d.regressions, 2);
        assert_eq!(d.compared, 3);
        assert!(diff(&old, &old).changes.is_empty());
    }
}
