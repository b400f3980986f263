//! The expected verdict of a mutation, by construction: from the rule's
//! severity and what the prepared spec implies, never from running the
//! model.

use super::{ExtState, Mutation};
use crate::expected::{self, verdict_for, Expected};
use crate::spec::ImageSpec;
use spec_model::{ExtensionState, Severity};

/// The expected verdict of `m` applied to an image described by `spec`.
pub(super) fn expect(m: &Mutation, spec: &ImageSpec) -> Expected {
    let state = match m.extension {
        ExtState::FromSpec if spec.bitmaps.is_empty() => ExtensionState::Absent,
        ExtState::FromSpec => ExtensionState::Consistent,
        ExtState::Absent => ExtensionState::Absent,
        ExtState::Inconsistent => ExtensionState::Inconsistent,
    };
    let mut implied = expected::implied_rules(spec);
    if state != ExtensionState::Consistent {
        // An ignored (or unreadable) extension is not validated.
        implied.retain(|(r, _)| !r.id().starts_with("bitmaps."));
    }
    let error = m.severity == Severity::Error;
    let severities = std::iter::once(m.severity)
        .chain(m.also.iter().map(|_| Severity::Error))
        .chain(implied.iter().map(|(_, s)| *s));
    let mut rules: Vec<String> = m.rules().map(|r| r.id().to_string()).collect();
    if !error {
        // Without an error every structure is read, so the spec's notes
        // and limits are reported too. After an error, parsing may stop
        // before them.
        for (r, _) in &implied {
            if !rules.iter().any(|x| x == r.id()) {
                rules.push(r.id().to_string());
            }
        }
    }
    let bitmaps = (!error).then(|| match state {
        ExtensionState::Consistent => expected::bitmaps(spec),
        ExtensionState::Inconsistent => expected::bitmaps(spec)
            .into_iter()
            .map(|mut b| {
                b.usable = false;
                b.content_sha256 = None;
                b.set_bits = None;
                b
            })
            .collect(),
        _ => Vec::new(),
    });
    Expected {
        verdict: verdict_for(severities),
        rules,
        bitmaps_extension: state,
        bitmaps,
    }
}
