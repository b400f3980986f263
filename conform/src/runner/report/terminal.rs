//! What `run` prints on the terminal: the matrix (rows by case or rule, a
//! column per implementation, a totals row) laid out by comfy-table to fit
//! the terminal's width, then every result that fails by default with its
//! reasons (and, for a crash, the last lines of the program's standard
//! error), every line cut to the width. Colour only when asked for
//! ([`colour_wanted`]: a terminal, and `NO_COLOR` unset or empty). Also the
//! rate format the progress bars share ([`rate`], [`progress_style`]).

use crate::runner::judge::OutcomeKind;
use crate::runner::report::sanitise::one_line;
use crate::runner::report::{CaseResult, CaseRun, RunReport};
use comfy_table::{Cell, CellAlignment, ContentArrangement, LineStyle, Table, TableStyle};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Width used when the output is not a terminal and `COLUMNS` is unset
/// (CI logs).
pub const DEFAULT_WIDTH: u16 = 120;
/// Narrowest layout attempted.
const MIN_WIDTH: u16 = 40;
/// Lines of a crashing program's standard error shown under its result.
const STDERR_LINES: usize = 3;

/// Rows of the terminal matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// One row per case.
    Case,
    /// One row per rule (the case ID's prefix before `/`).
    Rule,
}

/// How the matrix is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub rows: Rows,
    /// Columns available.
    pub width: u16,
    pub colour: bool,
}

/// Whether to colour output going to a stream that `is_terminal` or not:
/// only on a terminal, and never when `NO_COLOR` is set to a non-empty
/// value (<https://no-color.org>).
pub fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The width to lay out for: `COLUMNS` when set to a number, else the
/// terminal's width when standard output is one, else [`DEFAULT_WIDTH`].
pub fn width() -> u16 {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
    {
        return w.max(MIN_WIDTH);
    }
    match console::Term::stdout().size_checked() {
        Some((_, cols)) if cols > 0 => cols.max(MIN_WIDTH),
        _ => DEFAULT_WIDTH,
    }
}

/// A rate per second with three significant digits at most (`48.9`,
/// `1230`, `0.512`).
pub fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "0".to_owned();
    }
    if per_sec >= 100.0 {
        format!("{per_sec:.0}")
    } else if per_sec >= 10.0 {
        format!("{per_sec:.1}")
    } else if per_sec >= 1.0 {
        format!("{per_sec:.2}")
    } else {
        format!("{per_sec:.3}")
    }
}

/// An indicatif style from `template`, where `{rate}` prints
/// [`rate`] followed by `/s` (indicatif's own `{per_sec}` prints four
/// decimals).
pub fn progress_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", rate(s.per_sec()));
            },
        )
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

/// `s` cut to `width` characters, ending in `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut o: String = s.chars().take(width.saturating_sub(1)).collect();
    o.push('…');
    o
}

/// Outcome counts of one cell, worst first (recorded and pass last).
fn cell_text(counts: &BTreeMap<OutcomeKind, usize>, single: bool, colour: bool) -> String {
    let mut kinds: Vec<_> = counts.iter().collect();
    kinds.sort_by_key(|(k, _)| match k {
        OutcomeKind::Recorded => 0,
        OutcomeKind::Pass => 1,
        k => 10 + **k as usize,
    });
    kinds.reverse();
    kinds
        .into_iter()
        .map(|(k, n)| {
            let text = if single && *n == 1 {
                k.as_str().to_owned()
            } else {
                format!("{n} {k}")
            };
            paint(&text, *k, colour)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The column headers: the implementations' names when they fit beside a
/// key column of a third of the width, else `[1]`, `[2]`, ... with a
/// legend.
fn headers(impls: &[String], width: usize) -> (Vec<String>, Vec<String>) {
    let need: usize = impls.iter().map(|n| n.chars().count() + 3).sum();
    if need + width / 3 <= width {
        return (
            impls.iter().map(|n| one_line(n).into_owned()).collect(),
            Vec::new(),
        );
    }
    let labels = (1..=impls.len()).map(|i| format!("[{i}]")).collect();
    let legend = impls
        .iter()
        .enumerate()
        .map(|(i, n)| cut(&format!("[{}] {}", i + 1, one_line(n)), width))
        .collect();
    (labels, legend)
}

/// The matrix table alone.
fn table(report: &RunReport, layout: Layout) -> (Table, Vec<String>) {
    let impls = &report.implementations;
    let mut rows: Vec<(String, Vec<BTreeMap<OutcomeKind, usize>>)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut totals = vec![BTreeMap::new(); impls.len()];
    for c in &report.cases {
        let key = match layout.rows {
            Rows::Case => c.id.clone(),
            Rows::Rule => c.id.split('/').next().unwrap_or(&c.id).to_owned(),
        };
        let i = *index.entry(key.clone()).or_insert_with(|| {
            rows.push((key, vec![BTreeMap::new(); impls.len()]));
            rows.len() - 1
        });
        for r in &c.results {
            if let Some(j) = impls.iter().position(|n| *n == r.implementation) {
                *rows[i].1[j].entry(r.outcome.kind).or_default() += 1;
                *totals[j].entry(r.outcome.kind).or_default() += 1;
            }
        }
    }
    let width = usize::from(layout.width);
    let (labels, legend) = headers(impls, width);
    let mut t = Table::new();
    // Columns apart by their padding; one rule under the header.
    t.load_style(TableStyle::new().header_separator(LineStyle::none().fill('-').junction('-')))
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(layout.width);
    let head = match layout.rows {
        Rows::Case => "case",
        Rows::Rule => "rule",
    };
    t.set_header(std::iter::once(head.to_owned()).chain(labels));
    let single = layout.rows == Rows::Case;
    for (key, counts) in &rows {
        t.add_row(
            std::iter::once(Cell::new(one_line(key))).chain(
                counts
                    .iter()
                    .map(|c| Cell::new(cell_text(c, single, layout.colour))),
            ),
        );
    }
    t.add_row(
        std::iter::once(Cell::new("total").set_alignment(CellAlignment::Right)).chain(
            totals
                .iter()
                .map(|c| Cell::new(cell_text(c, false, layout.colour))),
        ),
    );
    (t, legend)
}

/// The lines under one failing result: its reasons, and for a crash the
/// last lines of the program's standard error.
fn problem_lines(c: &CaseRun, r: &CaseResult, layout: Layout) -> Vec<String> {
    let width = usize::from(layout.width);
    let kind = r.outcome.kind;
    let head = format!(
        "{} {} [{}] ({})",
        kind,
        one_line(&c.id),
        one_line(&r.implementation),
        one_line(&c.file)
    );
    let mut lines = vec![cut(&head, width)];
    if layout.colour {
        let plain = &lines[0];
        lines[0] = format!(
            "{}{}",
            paint(kind.as_str(), kind, true),
            &plain[kind.as_str().len()..]
        );
    }
    for d in r.outcome.detail.iter().take(4) {
        lines.push(cut(&format!("    {}", one_line(d)), width));
    }
    if kind == OutcomeKind::Crash {
        let tail: Vec<&str> = r
            .observation
            .stderr_excerpt
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        for l in &tail[tail.len().saturating_sub(STDERR_LINES)..] {
            lines.push(cut(
                &format!("    stderr: {}", one_line(l.trim_end())),
                width,
            ));
        }
    }
    lines
}

/// The terminal matrix (rows by case or rule, a column per
/// implementation, a totals row), then every result that is neither pass
/// nor recorded with its reasons, every line at most `layout.width`
/// characters.
pub fn render(report: &RunReport, layout: Layout) -> String {
    let (t, legend) = table(report, layout);
    let mut o = String::new();
    for l in legend {
        let _ = writeln!(o, "{l}");
    }
    let _ = writeln!(o, "{}", t.trim_fmt());
    let mut first = true;
    for c in &report.cases {
        for r in c
            .results
            .iter()
            .filter(|r| r.outcome.kind.fails_by_default())
        {
            if std::mem::take(&mut first) {
                o.push('\n');
            }
            for l in problem_lines(c, r, layout) {
                let _ = writeln!(o, "{l}");
            }
        }
    }
    if !report.corpus_unchanged {
        let _ = writeln!(
            o,
            "{}",
            cut(
                &format!(
                    "CORPUS CHANGED during the run: {}",
                    one_line(&report.corpus_changes.join("; "))
                ),
                usize::from(layout.width)
            )
        );
    }
    o
}

/// [`render`] at the width of [`width`].
pub fn matrix(report: &RunReport, rows: Rows, coloured: bool) -> String {
    render(
        report,
        Layout {
            rows,
            width: width(),
            colour: coloured,
        },
    )
}

#[cfg(test)]
mod tests {
    use crate::runner::report::terminal::*;

    #[test]
    fn rates_have_three_significant_digits() {
        assert_eq!(rate(48.8658), "48.9");
        assert_eq!(rate(1234.4), "1234");
        assert_eq!(rate(3.7219), "3.72");
        assert_eq!(rate(0.51234), "0.512");
        assert_eq!(rate(0.0), "0");
    }

    #[test]
    fn cuts_at_the_width() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
