//! The obligations table of `docs/findings.md` (between [`BEGIN`] and
//! [`END`]): for every obligation of [`spec_model::obligations`], whom it
//! binds, which corpus cases can exercise it, and per pinned
//! implementation whether it meets it. Which cases exercise an obligation
//! is derived from the manifest and the model's facts about each image
//! ([`crate::runner::judge::coverage::case_exercises`]), never listed by
//! hand, so a new corpus case fills the table in; whether an
//! implementation meets it comes from its pinned matrix
//! ([`crate::matrix::PinnedMatrix::broken`]).

use crate::matrix::PinnedMatrix;
use crate::runner::adapters::probe::ProbeKind;
use crate::runner::adapters::qemu::INCOMPATIBLE_SUPPORTED;
use crate::runner::judge::cause::{ImageFacts, ModelBitmap};
use crate::runner::judge::context::Context;
use crate::runner::judge::coverage::case_exercises;
use generator::ManifestCase;
use spec_model::obligations::{Kind, Observed};
use spec_model::Obligation;
use std::fmt::Write as _;
use std::path::Path;

/// The line before the generated table.
pub const BEGIN: &str = "<!-- obligations-table:begin (generated from corpus/manifest.json, the model and snapshots/matrix@*.snap by `cargo run -p conform --bin findings-tables`; do not edit) -->";
/// The line after it.
pub const END: &str = "<!-- obligations-table:end -->";

/// What an implementation family is, for obligations: a writer or not,
/// bitmaps-aware or not, given the passphrase or not, and the
/// incompatible bits it supports. `None` for a family the suite does not
/// know (an exec program).
pub fn family_kind(family: &str) -> Option<(bool, bool, bool, Option<u64>)> {
    if family == "qemu" || family == "qemu-live" {
        return Some((true, true, true, Some(INCOMPATIBLE_SUPPORTED)));
    }
    let k = ProbeKind::from_name(family)?;
    Some((k.can_write(), false, false, k.incompatible_supported()))
}

/// One corpus case as the model sees it.
pub struct CaseFacts {
    pub case: ManifestCase,
    pub facts: Option<ImageFacts>,
    pub model: Vec<ModelBitmap>,
}

/// Every case of the corpus in `dir` with the model's facts.
pub fn read_corpus(dir: &Path) -> Result<Vec<CaseFacts>, crate::runner::corpus::CorpusError> {
    let manifest = crate::runner::corpus::load(dir)?;
    Ok(manifest
        .cases
        .into_iter()
        .map(|case| {
            let read = ImageFacts::read(&dir.join(&case.file));
            let (facts, model) = match read {
                Some((f, m)) => (Some(f), m),
                None => (None, Vec::new()),
            };
            CaseFacts { case, facts, model }
        })
        .collect())
}

/// The cases that can exercise `o` for the implementation of `family`.
fn exercising<'a>(o: Obligation, family: &str, cases: &'a [CaseFacts]) -> Vec<&'a str> {
    let Some((writer, aware, secret, supported)) = family_kind(family) else {
        return Vec::new();
    };
    // The pinned matrices run with the write check and without
    // `--bitmap-ops` or live sequences.
    let in_matrix = o.observed().iter().any(|w| {
        matches!(
            w,
            Observed::Open | Observed::GuestRead | Observed::BitmapListing | Observed::WriteCheck
        )
    });
    if !in_matrix {
        return Vec::new();
    }
    cases
        .iter()
        .filter(|c| {
            let encrypted = c.facts.is_some_and(|f| f.crypt_method != 0);
            let k = Kind {
                writer,
                bitmaps_aware: aware,
                holds_key: encrypted.then_some(secret && c.case.secret.is_some()),
            };
            if !o.binds().binds(k) {
                return false;
            }
            let cx = Context {
                model: Some(c.model.as_slice()),
                facts: c.facts.as_ref(),
                supported_incompatible: supported,
                kind: Some(k),
            };
            case_exercises(o, k, &c.case.expected, &cx).is_ok()
        })
        .map(|c| c.case.id.as_str())
        .collect()
}

/// The generated table.
pub fn render(pinned: &[PinnedMatrix], cases: &[CaseFacts]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Every obligation of `qcow2-conform obligations`, the corpus cases that exercise it (for an implementation of a kind it binds, as the manifest and the model say), and per implementation: `meets (n)` over its n cases, `breaks k/n` where k of them end in an outcome naming it, `no case` where it binds but no case exercises it, `-` where it does not bind (an obligation observed only by `run --bitmap-ops` or live sequences has no case in the matrix run). A `*` marks an obligation the suite holds stricter than the spec's words (`qcow2-conform obligations` says why).\n"
    );
    s.push_str(&crate::matrix::table_head(
        &["obligation", "binds", "cases"],
        pinned,
    ));
    for o in Obligation::ALL {
        let mut all: Vec<&str> = Vec::new();
        let mut cells = Vec::new();
        for m in pinned {
            let ex = exercising(*o, m.family(), cases);
            all.extend(ex.iter().copied());
            let bound = family_kind(m.family()).is_some_and(|(w, a, secret, _)| {
                [None, Some(false), Some(true)].into_iter().any(|key| {
                    o.binds().binds(Kind {
                        writer: w,
                        bitmaps_aware: a,
                        holds_key: key.map(|k| k && secret),
                    })
                })
            });
            let judged: Vec<&str> = ex
                .iter()
                .copied()
                .filter(|c| {
                    m.outcomes.get(*c).is_some_and(|k| {
                        !matches!(k.as_str(), "crash" | "hang" | "error" | "recorded")
                    })
                })
                .collect();
            let broken = judged
                .iter()
                .filter(|c| m.broken.get(**c).is_some_and(|b| b == o.id()))
                .count();
            cells.push(if !bound {
                "-".to_owned()
            } else if judged.is_empty() {
                "no case".to_owned()
            } else if broken == 0 {
                format!("meets ({})", judged.len())
            } else {
                format!("breaks {broken}/{}", judged.len())
            });
        }
        all.sort_unstable();
        all.dedup();
        let shown = match all.len() {
            0 => "none".to_owned(),
            n if n <= 2 => all
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            n => format!("{n}, e.g. `{}`", all[0]),
        };
        let star = if o.stricter().is_some() { " *" } else { "" };
        let _ = writeln!(
            s,
            "| `{}`{star} | {} | {shown} | {} |",
            o.id(),
            o.binds().describe(),
            cells.join(" | ")
        );
    }
    s
}
