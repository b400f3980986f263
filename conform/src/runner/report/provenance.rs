//! Where a report comes from, so that a CI log can be traced back: the
//! tool and its version, the corpus and its digest, each implementation's
//! exact version ([`Identity`]), the host, when it started (RFC 3339) and
//! the command line. Written into the JSON report, the HTML page's header
//! and the JUnit properties.

use crate::runner::adapter::{Adapter, Identity};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// The tool's name and version (`qcow2-conform 0.1.0`).
pub fn tool_version() -> String {
    format!("qcow2-conform {}", env!("CARGO_PKG_VERSION"))
}

/// One implementation of the run and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Implementation {
    /// The adapter's name in the report (`qemu`, `exec:...`).
    pub name: String,
    #[serde(flatten)]
    pub identity: Identity,
}

impl Implementation {
    /// `name version` (or `name (version unknown)`).
    pub fn label(&self) -> String {
        match &self.identity.version {
            Some(v) => format!("{} {v}", self.name),
            None => format!("{} (version unknown)", self.name),
        }
    }
}

/// Where a report comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `qcow2-conform VERSION`.
    pub tool: String,
    /// SHA-256 over every corpus file's path and fingerprint
    /// ([`corpus_digest`]).
    pub corpus_digest: String,
    pub implementations: Vec<Implementation>,
    pub host: String,
    /// When the run started, RFC 3339 in UTC.
    pub started: String,
    /// The command line, one argument per entry.
    pub command_line: Vec<String>,
    /// Whether and how every program of the run was sandboxed
    /// ([`crate::runner::process::sandbox`]); absent in reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::runner::process::sandbox::Status>,
}

impl Provenance {
    /// The provenance of a run of `adapters` over a corpus whose files hash
    /// to `corpus_files`, started at `started`.
    pub fn collect(
        adapters: &[Box<dyn Adapter>],
        corpus_files: &BTreeMap<PathBuf, String>,
        started: SystemTime,
    ) -> Provenance {
        Provenance {
            tool: tool_version(),
            corpus_digest: corpus_digest(corpus_files),
            implementations: adapters
                .iter()
                .map(|a| Implementation {
                    name: a.name().to_owned(),
                    identity: a.identity(),
                })
                .collect(),
            host: host(),
            started: rfc3339(started),
            command_line: std::env::args().collect(),
            sandbox: Some(crate::runner::process::sandbox::status()),
        }
    }

    /// The implementation named `name`, if it ran.
    pub fn implementation(&self, name: &str) -> Option<&Implementation> {
        self.implementations.iter().find(|i| i.name == name)
    }

    /// Name/value pairs, in a fixed order (JUnit properties).
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut p = vec![
            ("tool".to_owned(), self.tool.clone()),
            ("corpus_digest".to_owned(), self.corpus_digest.clone()),
            ("host".to_owned(), self.host.clone()),
            ("started".to_owned(), self.started.clone()),
            ("command_line".to_owned(), self.command_line.join(" ")),
        ];
        if let Some(s) = &self.sandbox {
            p.push(("sandbox.mode".to_owned(), s.mode.clone()));
            p.push(("sandbox.sandboxed".to_owned(), s.sandboxed.to_string()));
            p.push(("sandbox.detail".to_owned(), s.detail.clone()));
        }
        for i in &self.implementations {
            let v = i
                .identity
                .version
                .clone()
                .unwrap_or_else(|| "unknown".into());
            p.push((format!("implementation.{}.version", i.name), v));
            if let Some(d) = &i.identity.detail {
                p.push((format!("implementation.{}.detail", i.name), d.clone()));
            }
            if let Some(n) = &i.identity.product {
                p.push((format!("implementation.{}.product", i.name), n.clone()));
            }
        }
        p
    }

    /// One line for a page header or a log.
    pub fn summary(&self) -> String {
        let impls: Vec<String> = self.implementations.iter().map(|i| i.label()).collect();
        format!(
            "{} · {} · corpus sha256 {} · host {} · started {} · `{}`{}",
            self.tool,
            impls.join(", "),
            self.corpus_digest,
            self.host,
            self.started,
            self.command_line.join(" "),
            self.sandbox_line()
                .map(|l| format!(" · {l}"))
                .unwrap_or_default()
        )
    }

    /// Whether the run's programs were sandboxed, in words (`None` for a
    /// report that does not say).
    pub fn sandbox_line(&self) -> Option<String> {
        self.sandbox.as_ref().map(|s| {
            let how = if s.sandboxed {
                "sandboxed"
            } else {
                "NOT sandboxed"
            };
            format!("{how} (--sandbox {}: {})", s.mode, s.detail)
        })
    }
}

/// SHA-256 over `PATH\tFINGERPRINT\n` of every file, sorted by path: two
/// corpora with the same files give the same digest wherever they lie.
pub fn corpus_digest(files: &BTreeMap<PathBuf, String>) -> String {
    let mut h = Sha256::new();
    for (p, f) in files {
        h.update(p.to_string_lossy().as_bytes());
        h.update(b"\t");
        h.update(f.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The host's name (empty when the system will not tell).
pub fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// `t` as RFC 3339 in UTC, to the second (`2026-11-27T12:00:52Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use crate::runner::report::provenance::*;

    #[test]
    fn digest_depends_on_paths_and_contents_only() {
        let mut a = BTreeMap::new();
        a.insert(PathBuf::from("manifest.json"), "aa".to_owned());
        a.insert(PathBuf::from("images/x.qcow2"), "bb".to_owned());
        let d = corpus_digest(&a);
        assert_eq!(d.len(), 64);
        assert_eq!(d, corpus_digest(&a.clone()));
        a.insert(PathBuf::from("images/x.qcow2"), "bc".to_owned());
        assert_ne!(d, corpus_digest(&a));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
