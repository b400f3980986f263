//! Which cases of a corpus a run takes: `--case GLOB` (any of them),
//! `--rule ID` (cases whose expected rules or ID prefix name any of them)
//! and `--rerun REPORT.json` (cases that failed there). Every kind given
//! must match; with none given every case runs.

use crate::runner::judge::outcome::OutcomeKind;
use crate::runner::report::diff::{DiffError, ReportView};
use generator::ManifestCase;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::BTreeSet;
use std::path::Path;

/// Why a filter cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("--case {glob:?}: {source}")]
    Glob {
        glob: String,
        #[source]
        source: globset::Error,
    },
    #[error("--rerun: {0}")]
    Rerun(#[from] DiffError),
}

/// The case filter of a run.
#[derive(Debug, Default)]
pub struct Selection {
    globs: Option<GlobSet>,
    rules: BTreeSet<String>,
    rerun: Option<BTreeSet<String>>,
}

impl Selection {
    /// A filter from the flags (empty lists: no filter of that kind).
    pub fn new(
        globs: &[String],
        rules: &[String],
        rerun: Option<&Path>,
    ) -> Result<Selection, SelectError> {
        let globs = if globs.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|source| SelectError::Glob {
                    glob: g.clone(),
                    source,
                })?);
            }
            Some(b.build().map_err(|source| SelectError::Glob {
                glob: globs.join(" "),
                source,
            })?)
        };
        let rerun = rerun.map(failed_cases).transpose()?;
        Ok(Selection {
            globs,
            rules: rules.iter().cloned().collect(),
            rerun,
        })
    }

    /// Whether `--rerun` named a report in which no case failed: there is
    /// nothing to run again.
    pub fn nothing_to_rerun(&self) -> bool {
        self.rerun.as_ref().is_some_and(BTreeSet::is_empty)
    }

    /// The `--rule` IDs that name no rule of the catalogue (nor a draft's),
    /// each with the catalogue's nearest IDs.
    pub fn unknown_rules(&self) -> Vec<(String, Vec<&'static str>)> {
        let known: Vec<&'static str> = spec_model::Rule::ALL
            .iter()
            .map(|r| r.id())
            .chain(spec_model::drafts::DraftRule::ALL.iter().map(|r| r.id()))
            .collect();
        self.rules
            .iter()
            .filter(|r| !known.contains(&r.as_str()))
            .map(|r| {
                let mut near: Vec<(f64, &'static str)> = known
                    .iter()
                    .map(|k| (strsim::jaro_winkler(r, k), *k))
                    .collect();
                near.sort_by(|a, b| b.0.total_cmp(&a.0));
                (
                    r.clone(),
                    near.into_iter().take(3).map(|(_, k)| k).collect(),
                )
            })
            .collect()
    }

    /// Whether any filter was given.
    pub fn is_filtered(&self) -> bool {
        self.globs.is_some() || !self.rules.is_empty() || self.rerun.is_some()
    }

    /// Whether `case` runs.
    pub fn takes(&self, case: &ManifestCase) -> bool {
        let by_glob = self.globs.as_ref().is_none_or(|g| g.is_match(&case.id));
        let prefix = case.id.split('/').next().unwrap_or(&case.id);
        let by_rule = self.rules.is_empty()
            || self.rules.contains(prefix)
            || case.expected.rules.iter().any(|r| self.rules.contains(r));
        let by_rerun = self.rerun.as_ref().is_none_or(|s| s.contains(&case.id));
        by_glob && by_rule && by_rerun
    }
}

/// The cases that failed in the run report at `path`: those its `gate`
/// lists (or, a report without one, every case with an outcome that fails
/// by default), and those the runner could not set up (`error`).
pub fn failed_cases(path: &Path) -> Result<BTreeSet<String>, SelectError> {
    let r = ReportView::load(path)?;
    let by_gate = r.gate.is_some();
    let mut out: BTreeSet<String> = r
        .gate
        .into_iter()
        .flat_map(|g| g.failed)
        .map(|f| f.case)
        .collect();
    for c in r.cases {
        let failed = c.results.iter().any(|x| {
            let k = x.outcome.kind;
            k == OutcomeKind::Error || (!by_gate && k.fails_by_default())
        });
        if failed {
            out.insert(c.id);
        }
    }
    Ok(out)
}
