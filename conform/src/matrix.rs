//! The pinned matrix: the outcome of every (implementation, version,
//! case), checked in as one insta snapshot per implementation and version
//! (`snapshots/matrix@IMPL@VERSION.snap`, written by
//! `conform/tests/snapshots.rs`), and the count tables of
//! `docs/findings.md` generated from them (between [`BEGIN`] and [`END`];
//! `cargo run -p conform --bin findings-tables` rewrites them,
//! `conform/tests/findings_tables.rs` fails when they disagree).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The line before the generated tables in `docs/findings.md`.
pub const BEGIN: &str = "<!-- matrix-tables:begin (generated from snapshots/matrix@*.snap by `cargo run -p conform --bin findings-tables`; do not edit) -->";
/// The line after them.
pub const END: &str = "<!-- matrix-tables:end -->";

/// The outcomes, in the order of the tables' columns (the runner's own
/// order, [`crate::runner::judge::OutcomeKind::ALL`]).
fn kinds() -> impl Iterator<Item = &'static str> {
    crate::runner::judge::OutcomeKind::ALL
        .iter()
        .map(|k| k.as_str())
}

/// One implementation at one version over the corpus: case ID to outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedMatrix {
    /// The `--impl` name (`qemu`, `qemu@7.2`, `libqcow@20260703`).
    pub implementation: String,
    /// Its version (`10.0.2`, `7.2.22`, `20201213`).
    pub version: String,
    pub outcomes: BTreeMap<String, String>,
    /// Per case whose outcome names one: the obligation it breaks
    /// ([`crate::runner::judge::cause::Cause::obligation`]); the obligations table
    /// of `docs/findings.md` reads it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broken: BTreeMap<String, String>,
}

/// Why the pinned matrices or the doc could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an insta snapshot of a pinned matrix: {why}")]
    Snapshot { path: PathBuf, why: String },
    #[error("the document has no generated block (a line {BEGIN:?}, then one {END:?})")]
    NoMarkers,
}

impl PinnedMatrix {
    /// The snapshot's name: `matrix@IMPL@VERSION`.
    pub fn snapshot_name(implementation: &str, version: &str) -> String {
        format!("matrix@{implementation}@{version}")
    }

    /// The implementation's family: its name before `@` (`qemu@7.2` and
    /// `qemu` are both `qemu`).
    pub fn family(&self) -> &str {
        self.implementation
            .split_once('@')
            .map_or(self.implementation.as_str(), |(f, _)| f)
    }

    /// How many cases ended in `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.outcomes.values().filter(|k| *k == kind).count()
    }
}

/// Every pinned matrix in `dir` (files `matrix@*.snap`), ordered by
/// implementation family, then version (oldest first, numerically).
pub fn read_pinned(dir: &Path) -> Result<Vec<PinnedMatrix>, MatrixError> {
    let read_err = |path: &Path, source| MatrixError::Read {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let path = entry.map_err(|e| read_err(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("matrix@") && name.ends_with(".snap")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        out.push(parse_snapshot(&path, &text)?);
    }
    out.sort_by(|a, b| {
        (a.family(), version_key(&a.version)).cmp(&(b.family(), version_key(&b.version)))
    });
    Ok(out)
}

/// A version as numbers for ordering (`7.2.22` before `10.0.2`).
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The JSON body of the insta snapshot `path` holds (after its `---`
/// front matter).
fn parse_snapshot(path: &Path, text: &str) -> Result<PinnedMatrix, MatrixError> {
    let bad = |why: String| MatrixError::Snapshot {
        path: path.to_owned(),
        why,
    };
    let body = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map(|(_, body)| body)
        .ok_or_else(|| bad("no `---` front matter".into()))?;
    serde_json::from_str(body).map_err(|e| bad(e.to_string()))
}

/// The generated block: the counts per implementation and version, and
/// every case that some implementation version does not pass, with the
/// outcome of each (so each finding names the versions it was seen in).
pub fn render_tables(pinned: &[PinnedMatrix]) -> String {
    let mut s = String::new();
    let cases: BTreeSet<&String> = pinned.iter().flat_map(|m| m.outcomes.keys()).collect();
    let _ = writeln!(
        s,
        "Outcomes over the shared corpus ({} cases), one row per implementation and version:\n",
        cases.len()
    );
    let _ = writeln!(
        s,
        "| implementation | version | {} |",
        kinds().collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(kinds().count()));
    for m in pinned {
        let counts: Vec<String> = kinds().map(|k| m.count(k).to_string()).collect();
        let _ = writeln!(
            s,
            "| `{}` | {} | {} |",
            m.implementation,
            m.version,
            counts.join(" | ")
        );
    }
    let _ = writeln!(
        s,
        "\nEvery case that some implementation does not pass, by version (`.` pass, `-` not run):\n"
    );
    s.push_str(&table_head(&["case"], pinned));
    for case in cases {
        let cells: Vec<&str> = pinned
            .iter()
            .map(|m| match m.outcomes.get(case).map(String::as_str) {
                None => "-",
                Some("pass") => ".",
                Some(k) => k,
            })
            .collect();
        if cells.iter().all(|c| *c == "." || *c == "-") {
            continue;
        }
        let _ = writeln!(s, "| `{case}` | {} |", cells.join(" | "));
    }
    s
}

/// The head of a Markdown table: the columns `first`, then one column per
/// pinned matrix (`FAMILY VERSION`), and the separator row.
pub fn table_head(first: &[&str], pinned: &[PinnedMatrix]) -> String {
    let heads: Vec<String> = pinned
        .iter()
        .map(|m| format!("{} {}", m.family(), m.version))
        .collect();
    format!(
        "| {} | {} |\n|{}{}\n",
        first.join(" | "),
        heads.join(" | "),
        "---|".repeat(first.len()),
        "---|".repeat(pinned.len())
    )
}

/// `doc` with the block between [`BEGIN`] and [`END`] replaced by
/// `tables`.
pub fn splice(doc: &str, tables: &str) -> Result<String, MatrixError> {
    splice_between(doc, BEGIN, END, tables)
}

/// `doc` with the block between the lines `begin` and `end` replaced by
/// `text`.
pub fn splice_between(
    doc: &str,
    begin: &str,
    end: &str,
    text: &str,
) -> Result<String, MatrixError> {
    let start = doc.find(begin).ok_or(MatrixError::NoMarkers)? + begin.len();
    let stop = doc[start..].find(end).ok_or(MatrixError::NoMarkers)? + start;
    Ok(format!("{}\n{}{}", &doc[..start], text, &doc[stop..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(implementation: &str, version: &str, outcomes: &[(&str, &str)]) -> PinnedMatrix {
        PinnedMatrix {
            implementation: implementation.into(),
            version: version.into(),
            outcomes: outcomes
                .iter()
                .map(|(c, k)| (c.to_string(), k.to_string()))
                .collect(),
            broken: BTreeMap::new(),
        }
    }

    #[test]
    fn tables_count_and_list_only_cases_some_version_fails() {
        let pinned = [
            m("qemu@7.2", "7.2.22", &[("a", "pass"), ("b", "strict")]),
            m("qemu", "10.0.2", &[("a", "pass"), ("b", "pass")]),
        ];
        let t = render_tables(&pinned);
        assert!(t.contains("| `qemu@7.2` | 7.2.22 | 1 | 0 | 1 |"), "{t}");
        assert!(t.contains("| `b` | strict | . |"), "{t}");
        assert!(!t.contains("| `a` |"), "{t}");
    }

    #[test]
    fn splicing_replaces_only_the_block() {
        let doc = format!("head\n{BEGIN}\nold\n{END}\ntail\n");
        let got = splice(&doc, "new\n").unwrap();
        assert_eq!(got, format!("head\n{BEGIN}\nnew\n{END}\ntail\n"));
        assert!(matches!(splice("x", "y"), Err(MatrixError::NoMarkers)));
    }

    #[test]
    fn snapshots_parse_and_order_by_version() {
        let d = tempfile::tempdir().unwrap();
        for (i, v) in [("qemu", "10.0.2"), ("qemu@7.2", "7.2.22")] {
            let body = serde_json::to_string(&m(i, v, &[("a", "pass")])).unwrap();
            let name = PinnedMatrix::snapshot_name(i, v);
            std::fs::write(
                d.path().join(format!("{name}.snap")),
                format!("---\nsource: x\n---\n{body}\n"),
            )
            .unwrap();
        }
        let got = read_pinned(d.path()).unwrap();
        assert_eq!(got[0].version, "7.2.22");
        assert_eq!(got[1].version, "10.0.2");
    }
}
