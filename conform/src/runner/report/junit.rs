//! `--junit`: the run as JUnit XML the way CI systems read it. One
//! `<testsuite>` per implementation (with `tests`, `failures`, `errors`,
//! `skipped`, `time`, `timestamp`, `hostname` and the run's provenance as
//! `<properties>`), one `<testcase>` per case. Each result's element comes
//! from its [`Status`] under the run's [`Gate`], so a `<failure>` or
//! `<error>` appears exactly where the run fails:
//!
//! - pass: an empty test case;
//! - recorded, outside `--fail-on`, or the expected outcome: `<skipped>`
//!   with the reason;
//! - a failing crash or hang, and the runner's own `error`: `<error>`;
//! - any other failing outcome (or a change against the expectations):
//!   `<failure>`.

use crate::runner::gate::{Gate, Status};
// One sanitiser for XML and HTML: characters XML forbids (U+FFFF, NUL
// and the other C0 controls but tab and newline) and terminal control
// sequences become visible escapes, so the file is always well-formed.
use crate::runner::judge::outcome::OutcomeKind;
use crate::runner::report::sanitise::markup as xml_escape;
use crate::runner::report::{CaseResult, CaseRun, RunReport};
use std::fmt::Write as _;

/// Counts of one suite (or of all).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
    ms: u64,
}

impl Counts {
    fn add(&mut self, status: &Status, kind: OutcomeKind, ms: u64) {
        self.tests += 1;
        self.ms += ms;
        match element(status, kind) {
            Some(("failure", _)) => self.failures += 1,
            Some(("error", _)) => self.errors += 1,
            Some(_) => self.skipped += 1,
            None => {}
        }
    }

    fn attributes(&self) -> String {
        format!(
            "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\"",
            self.tests,
            self.failures,
            self.errors,
            self.skipped,
            self.ms as f64 / 1000.0
        )
    }
}

/// The child element a status gives (`failure`, `error`, `skipped`) and
/// its message, or `None` for a pass.
fn element(status: &Status, kind: OutcomeKind) -> Option<(&'static str, String)> {
    match status {
        Status::Pass => None,
        Status::Accepted(why) => Some(("skipped", why.clone())),
        Status::Incomplete(why) => Some(("error", format!("error: {why}"))),
        Status::Failed(f) => {
            let tag = match kind {
                OutcomeKind::Crash | OutcomeKind::Hang => "error",
                _ => "failure",
            };
            Some((tag, f.line()))
        }
    }
}

/// One `<testcase>`.
fn testcase(o: &mut String, c: &CaseRun, r: &CaseResult, status: &Status) {
    let _ = write!(
        o,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
        xml_escape(&r.implementation),
        xml_escape(&c.id),
        r.observation.duration_ms as f64 / 1000.0
    );
    let kind = r.outcome.kind;
    let detail = r.outcome.detail.join("\n");
    match element(status, kind) {
        None => o.push_str(" />\n"),
        Some(("skipped", why)) => {
            let _ = writeln!(
                o,
                ">\n      <skipped message=\"{}\" />\n    </testcase>",
                xml_escape(&why)
            );
        }
        Some((tag, message)) => {
            let first = r.outcome.detail.first().cloned().unwrap_or_default();
            let _ = writeln!(
                o,
                ">\n      <{tag} type=\"{kind}\" message=\"{}\">{}\n\nreproduce:\n{}</{tag}>\n    </testcase>",
                xml_escape(&format!("{message}: {first}")),
                xml_escape(&detail),
                xml_escape(&r.observation.commands.join("\n"))
            );
        }
    }
}

/// The JUnit XML of `report` under `gate`.
pub fn junit(report: &RunReport, gate: &Gate<'_>) -> String {
    let statuses = gate.statuses(report);
    let mut all = Counts::default();
    let mut suites = String::new();
    let (timestamp, hostname) = match &report.provenance {
        // JUnit's timestamp has no zone (the `started` property has it).
        Some(p) => (p.started.trim_end_matches('Z').to_owned(), p.host.clone()),
        None => (String::new(), String::new()),
    };
    for name in &report.implementations {
        let mut counts = Counts::default();
        let mut cases = String::new();
        for (c, st) in report.cases.iter().zip(&statuses) {
            for (r, s) in c.results.iter().zip(st) {
                if r.implementation == *name {
                    counts.add(s, r.outcome.kind, r.observation.duration_ms);
                    testcase(&mut cases, c, r, s);
                }
            }
        }
        let _ = write!(
            suites,
            "  <testsuite name=\"{}\" {}",
            xml_escape(name),
            counts.attributes()
        );
        if !timestamp.is_empty() {
            let _ = write!(
                suites,
                " timestamp=\"{}\" hostname=\"{}\"",
                xml_escape(&timestamp),
                xml_escape(&hostname)
            );
        }
        suites.push_str(">\n");
        if let Some(p) = &report.provenance {
            suites.push_str("    <properties>\n");
            for (k, v) in p.properties() {
                let _ = writeln!(
                    suites,
                    "      <property name=\"{}\" value=\"{}\" />",
                    xml_escape(&k),
                    xml_escape(&v)
                );
            }
            suites.push_str("    </properties>\n");
        }
        suites.push_str(&cases);
        suites.push_str("  </testsuite>\n");
        all.tests += counts.tests;
        all.failures += counts.failures;
        all.errors += counts.errors;
        all.skipped += counts.skipped;
    }
    all.ms = report.duration_ms;
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"qcow2-conform\" {}>\n{suites}</testsuites>\n",
        all.attributes()
    )
}
