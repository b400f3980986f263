//! What fails a run: each result's [`Status`] under `--fail-on` and, when
//! given, an expectations file ([`crate::runner::gate::expect`]). The exit status, the
//! JUnit file and the report's `gate` section all read the same statuses,
//! so a `<failure>` appears exactly where the run fails.

pub mod expect;
pub mod select;

use crate::runner::judge::outcome::OutcomeKind;
use crate::runner::report::{Change, Failure, GateSummary, RunReport};
use expect::{version_of, Expectations};

/// How one result counts for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Passed.
    Pass,
    /// Not a pass, but does not fail the run: recorded, outside
    /// `--fail-on`, or the outcome the expectations name. The reason says
    /// which (JUnit `<skipped>`).
    Accepted(String),
    /// Fails the run; the reason says why.
    Failed(Failure),
    /// The runner could not set the case up (outcome `error`): the run is
    /// incomplete (JUnit `<error>`, exit status 1).
    Incomplete(String),
}

/// `--fail-on` and the expectations, if any (with the file's name for
/// messages).
pub struct Gate<'a> {
    pub fail_on: &'a [OutcomeKind],
    pub expect: Option<(&'a Expectations, &'a str)>,
}

impl Gate<'_> {
    /// The status of `kind`, the outcome of `case` under `implementation`
    /// in `report`.
    pub fn status(
        &self,
        report: &RunReport,
        implementation: &str,
        case: &str,
        kind: OutcomeKind,
    ) -> Status {
        if kind == OutcomeKind::Error {
            return Status::Incomplete("the runner could not set the case up".into());
        }
        let failing = |k: OutcomeKind| self.fail_on.contains(&k);
        let fail = |expected, change| {
            Status::Failed(Failure {
                implementation: implementation.to_owned(),
                case: case.to_owned(),
                outcome: kind,
                expected,
                change,
            })
        };
        let Some((expect, file)) = self.expect else {
            return if failing(kind) {
                fail(None, Change::Failing)
            } else if kind == OutcomeKind::Pass {
                Status::Pass
            } else if kind == OutcomeKind::Recorded {
                Status::Accepted(
                    "recorded: the spec is silent, the behaviour is kept, not judged".into(),
                )
            } else {
                Status::Accepted(format!("{kind}: not named by --fail-on"))
            };
        };
        let version = version_of(report, implementation);
        let (key, expected) = match expect.table(implementation, &version) {
            Some((key, t)) => (key, t.get(case).copied().unwrap_or(OutcomeKind::Pass)),
            None => ("(none)", OutcomeKind::Pass),
        };
        if kind == expected {
            return match kind {
                OutcomeKind::Pass => Status::Pass,
                _ => Status::Accepted(format!("{kind}: expected ({file}, {implementation} {key})")),
            };
        }
        if failing(kind) {
            fail(Some(expected), Change::Regressed)
        } else if failing(expected) {
            fail(Some(expected), Change::Improved)
        } else if kind == OutcomeKind::Pass {
            Status::Pass
        } else {
            Status::Accepted(format!(
                "{kind}: expected {expected}, neither named by --fail-on"
            ))
        }
    }

    /// Every result's status, in report order (case, then result).
    pub fn statuses(&self, report: &RunReport) -> Vec<Vec<Status>> {
        report
            .cases
            .iter()
            .map(|c| {
                c.results
                    .iter()
                    .map(|r| self.status(report, &r.implementation, &c.id, r.outcome.kind))
                    .collect()
            })
            .collect()
    }

    /// The summary the report records.
    pub fn summary(&self, report: &RunReport) -> GateSummary {
        let failed = self
            .statuses(report)
            .into_iter()
            .flatten()
            .filter_map(|s| match s {
                Status::Failed(f) => Some(f),
                _ => None,
            })
            .collect();
        GateSummary {
            fail_on: self.fail_on.to_vec(),
            expectations: self.expect.map(|(_, f)| f.to_owned()),
            failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use OutcomeKind::*;

    fn status(expect: Option<&Expectations>, case: &str, kind: OutcomeKind) -> Status {
        let report = RunReport::new("c".into(), vec!["x".into()], vec![], vec![], 0);
        let fail_on = [Lenient, Strict, Crash];
        let gate = Gate {
            fail_on: &fail_on,
            expect: expect.map(|e| (e, "e.toml")),
        };
        gate.status(&report, "x", case, kind)
    }

    fn change(s: Status) -> Option<Change> {
        match s {
            Status::Failed(f) => Some(f.change),
            _ => None,
        }
    }

    #[test]
    fn without_expectations_fail_on_decides() {
        assert_eq!(status(None, "a", Pass), Status::Pass);
        assert_eq!(change(status(None, "a", Strict)), Some(Change::Failing));
        assert!(matches!(status(None, "a", Hang), Status::Accepted(w) if w.starts_with("hang:")));
        assert!(
            matches!(status(None, "a", Recorded), Status::Accepted(w) if w.starts_with("recorded:"))
        );
        assert!(matches!(status(None, "a", Error), Status::Incomplete(_)));
    }

    #[test]
    fn expectations_fail_on_changes_only() {
        let text = "format = 1\n[expect.x.\"*\"]\na = \"lenient\"\nb = \"pass\"\n";
        let e = Expectations::parse(text, Path::new("e.toml")).unwrap();
        let e = Some(&e);
        assert!(matches!(status(e, "a", Lenient), Status::Accepted(w) if w.contains("expected")));
        assert_eq!(change(status(e, "a", Strict)), Some(Change::Regressed));
        assert_eq!(change(status(e, "a", Pass)), Some(Change::Improved));
        assert_eq!(change(status(e, "b", Crash)), Some(Change::Regressed));
        // Not listed: expected to pass.
        assert_eq!(status(e, "new", Pass), Status::Pass);
        assert_eq!(change(status(e, "new", Lenient)), Some(Change::Regressed));
        // A change between outcomes outside --fail-on does not fail.
        assert!(matches!(status(e, "b", Recorded), Status::Accepted(_)));
    }
}
