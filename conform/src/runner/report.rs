//! Reports of a run: what each case did under each implementation
//! ([`CaseRun`], [`CaseResult`]), `--json` and `--junit`. The terminal
//! matrix is in [`super::terminal`].

use super::judge::{Outcome, OutcomeKind};
use super::observation::Observation;
use generator::Expected;
use serde::Serialize;
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
    pub cases: Vec<CaseRun>,
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

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {
                let _ = write!(o, "&#xfffd;");
            }
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: a test suite per implementation, a test case per case; a
/// failure for every outcome other than pass and recorded.
pub fn junit(report: &RunReport) -> String {
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = report.cases.iter().map(|c| c.results.len()).sum();
    let failures: usize = report
        .cases
        .iter()
        .flat_map(|c| &c.results)
        .filter(|r| r.outcome.kind.fails_by_default())
        .count();
    let _ = writeln!(
        o,
        "<testsuites name=\"qcow2-conform\" tests=\"{total}\" failures=\"{failures}\" time=\"{:.3}\">",
        report.duration_ms as f64 / 1000.0
    );
    for name in &report.implementations {
        let results: Vec<_> = report
            .cases
            .iter()
            .flat_map(|c| c.results.iter().map(move |r| (c, r)))
            .filter(|(_, r)| r.implementation == *name)
            .collect();
        let fails = results
            .iter()
            .filter(|(_, r)| r.outcome.kind.fails_by_default())
            .count();
        let _ = writeln!(
            o,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\">",
            xml_escape(name),
            results.len()
        );
        for (c, r) in results {
            let _ = write!(
                o,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(name),
                xml_escape(&c.id),
                r.observation.duration_ms as f64 / 1000.0
            );
            let detail = r.outcome.detail.join("\n");
            let commands = r.observation.commands.join("\n");
            if r.outcome.kind.fails_by_default() {
                let _ = writeln!(
                    o,
                    ">\n      <failure type=\"{}\" message=\"{}\">{}\n\nreproduce:\n{}</failure>\n    </testcase>",
                    r.outcome.kind,
                    xml_escape(&format!(
                        "{}: {}",
                        r.outcome.kind,
                        r.outcome.detail.first().cloned().unwrap_or_default()
                    )),
                    xml_escape(&detail),
                    xml_escape(&commands)
                );
            } else {
                let _ = writeln!(
                    o,
                    ">\n      <system-out>{}: {}</system-out>\n    </testcase>",
                    r.outcome.kind,
                    xml_escape(&detail)
                );
            }
        }
        o.push_str("  </testsuite>\n");
    }
    o.push_str("</testsuites>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_xml() {
        assert_eq!(
            xml_escape("a<b&\"c'\u{1}"),
            "a&lt;b&amp;&quot;c&apos;&#xfffd;"
        );
    }
}
