//! Expectations files: the outcome each case is known to have under an
//! implementation, keyed by the implementation's name (an exec program's
//! own, from `capabilities`) and exact version,
//! so that a CI job fails on a change, not on every known
//! non-conformance. `run --write-expect FILE` writes one, `run --expect
//! FILE` checks a run against it ([`crate::runner::gate`]).
//!
//! The format is TOML, sorted and one case a line (format 1):
//!
//! ```toml
//! format = 1
//!
//! [expect."qemu"."10.0.2"]
//! "bitmaps.dir.in-use/0001" = "lenient"
//! "valid/0001" = "pass"
//! ```
//!
//! Comments are allowed anywhere (they are not kept when `--write-expect`
//! rewrites the file). A version table named `*` applies to every version
//! of that implementation that has no table of its own. A case missing
//! from the table is expected to `pass`.

use crate::runner::corpus::input::{self, InputError};
use crate::runner::judge::outcome::OutcomeKind;
use crate::runner::report::RunReport;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The format number this runner reads and writes.
pub const FORMAT: u32 = 1;

/// The version key of a table that applies to every version.
pub const ANY_VERSION: &str = "*";

/// The version key written when an implementation did not tell its version.
pub const UNKNOWN_VERSION: &str = "unknown";

/// case ID -> outcome.
pub type Outcomes = BTreeMap<String, OutcomeKind>;

/// An expectations file: implementation -> version -> case -> outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Expectations {
    pub format: u32,
    #[serde(default)]
    pub expect: BTreeMap<String, BTreeMap<String, Outcomes>>,
}

/// Why an expectations file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error("cannot read the expectations file")]
    Read(#[source] InputError),
    #[error("{} is not an expectations file: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: format {found} is not supported (this runner reads format {FORMAT})", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Expectations {
    /// Parses the text of an expectations file (`path` for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Expectations, ExpectError> {
        let e: Expectations = toml::from_str(text).map_err(|source| ExpectError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if e.format != FORMAT {
            return Err(ExpectError::Format {
                path: path.to_owned(),
                found: e.format,
            });
        }
        Ok(e)
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Expectations, ExpectError> {
        let text = input::read_text_capped(path, input::EXPECT_CAP, "an expectations file")
            .map_err(ExpectError::Read)?;
        Expectations::parse(&text, path)
    }

    /// Reads `path` if it exists, else an empty file's expectations.
    pub fn load_or_empty(path: &Path) -> Result<Expectations, ExpectError> {
        if path.exists() {
            Expectations::load(path)
        } else {
            Ok(Expectations {
                format: FORMAT,
                ..Expectations::default()
            })
        }
    }

    /// The table for `implementation` at `version` (exact, else `*`), and
    /// the version key it was found under.
    pub fn table(&self, implementation: &str, version: &str) -> Option<(&str, &Outcomes)> {
        let versions = self.expect.get(implementation)?;
        versions
            .get_key_value(version)
            .or_else(|| versions.get_key_value(ANY_VERSION))
            .map(|(k, t)| (k.as_str(), t))
    }

    /// The version keys held for `implementation`.
    pub fn versions(&self, implementation: &str) -> Vec<&str> {
        self.expect
            .get(implementation)
            .map(|v| v.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Records every outcome of `report` under its implementation's
    /// version (from the report's provenance), replacing those cases'
    /// earlier entries and keeping every other entry.
    pub fn record(&mut self, report: &RunReport) {
        self.format = FORMAT;
        for c in &report.cases {
            for r in &c.results {
                let version = version_of(report, &r.implementation);
                self.expect
                    .entry(r.implementation.clone())
                    .or_default()
                    .entry(version)
                    .or_default()
                    .insert(c.id.clone(), r.outcome.kind);
            }
        }
    }

    /// The file's text: a header comment, then every table sorted.
    pub fn to_toml(&self) -> String {
        let mut o = String::from(HEADER);
        let _ = writeln!(o, "format = {FORMAT}");
        for (name, versions) in &self.expect {
            for (version, cases) in versions {
                let _ = writeln!(o, "\n[expect.{}.{}]", quote(name), quote(version));
                for (case, kind) in cases {
                    let _ = writeln!(o, "{} = \"{kind}\"", quote(case));
                }
            }
        }
        o
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), ExpectError> {
        std::fs::write(path, self.to_toml()).map_err(|source| ExpectError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// The version an expectations table is keyed by for `implementation` in
/// `report`.
pub fn version_of(report: &RunReport, implementation: &str) -> String {
    report
        .provenance
        .as_ref()
        .and_then(|p| p.implementation(implementation))
        .and_then(|i| i.identity.version.clone())
        .unwrap_or_else(|| UNKNOWN_VERSION.to_owned())
}

const HEADER: &str = "\
# qcow2-conform expectations: the known outcome of every case under each
# implementation and exact version (see CI.md in the corpus kit). Written by
# `qcow2-conform run --write-expect FILE`, checked by `run --expect FILE`.
# One table per implementation and version (`*`: any version without its
# own table); a case that is not listed is expected to pass. Comments are
# allowed; --write-expect rewrites the file sorted, without them.
";

/// `s` as a TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use crate::runner::gate::expect::*;

    #[test]
    fn round_trips_with_comments_and_quotes() {
        let text = "# a comment\nformat = 1\n\n[expect.\"exec:python3 'a b'\".\"*\"]\n\"x/1\" = \"lenient\" # known\n";
        let e = Expectations::parse(text, Path::new("f")).unwrap();
        let (v, t) = e.table("exec:python3 'a b'", "9.9").unwrap();
        assert_eq!(v, "*");
        assert_eq!(t["x/1"], OutcomeKind::Lenient);
        let again = Expectations::parse(&e.to_toml(), Path::new("f")).unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn refuses_other_formats_and_unknown_outcomes() {
        assert!(matches!(
            Expectations::parse("format = 2\n", Path::new("f")),
            Err(ExpectError::Format { found: 2, .. })
        ));
        assert!(Expectations::parse(
            "format = 1\n[expect.q.\"1\"]\n\"x\" = \"fine\"\n",
            Path::new("f")
        )
        .is_err());
    }
}
