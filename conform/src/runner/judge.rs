//! Judging: what an implementation did with an image ([`Observation`])
//! against what the spec says about it ([`Expected`]), as one of the
//! outcomes of `DESIGN.md`.
//!
//! Order of precedence: `hang` and `crash` first (whatever the image), then
//! `corrupting` (the write check), then `recorded` for images the spec is
//! silent about, then the verdict-specific judgement where `lenient` beats
//! `mismatch` beats `strict` beats `pass`. Every reason found is kept in
//! the outcome's detail, not only the winning one.

use super::observation::{GuestCheck, Observation, ObservedBitmap};
use super::text::short;
use generator::expected::ExpectedBitmap;
use generator::Expected;
use serde::Serialize;
use spec_model::{Rule, Severity};

/// One outcome of `DESIGN.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// Behaviour allowed by the expected verdict.
    Pass,
    /// Accepted or used a bitmap that the spec says must not be used.
    Lenient,
    /// Refused a conforming image or bitmap (not for a documented limit).
    Strict,
    /// Accepted, but names, granularity, flags or contents differ.
    Mismatch,
    /// A write left the image non-conforming or its bits wrong.
    Corrupting,
    /// A signal, a sanitizer report, or no protocol answer.
    Crash,
    /// A program ran out of time.
    Hang,
    /// The spec is silent: kept, not judged.
    Recorded,
    /// The runner could not set the case up (a missing companion, a failed
    /// copy): not judged, never charged to the implementation; `run` exits 1.
    Error,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 9] = [
        OutcomeKind::Pass,
        OutcomeKind::Lenient,
        OutcomeKind::Strict,
        OutcomeKind::Mismatch,
        OutcomeKind::Corrupting,
        OutcomeKind::Crash,
        OutcomeKind::Hang,
        OutcomeKind::Recorded,
        OutcomeKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Pass => "pass",
            OutcomeKind::Lenient => "lenient",
            OutcomeKind::Strict => "strict",
            OutcomeKind::Mismatch => "mismatch",
            OutcomeKind::Corrupting => "corrupting",
            OutcomeKind::Crash => "crash",
            OutcomeKind::Hang => "hang",
            OutcomeKind::Recorded => "recorded",
            OutcomeKind::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<OutcomeKind> {
        OutcomeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Fails a run by default (everything but pass, recorded and the
    /// runner's own `error`, which is not the implementation's fault).
    pub fn fails_by_default(self) -> bool {
        !matches!(
            self,
            OutcomeKind::Pass | OutcomeKind::Recorded | OutcomeKind::Error
        )
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An outcome with every reason behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub detail: Vec<String>,
}

impl Outcome {
    fn new(kind: OutcomeKind, detail: Vec<String>) -> Outcome {
        Outcome { kind, detail }
    }
}

fn severities(id: &str) -> &'static [Severity] {
    Rule::from_id(id).map(|r| r.severities()).unwrap_or(&[])
}

/// The expected rules that are documented limits (a clean refusal passes).
fn limit_rules(e: &Expected) -> Vec<&str> {
    e.rules
        .iter()
        .filter(|r| severities(r).contains(&Severity::Limit))
        .map(String::as_str)
        .collect()
}

/// Whether an invalid image's expected rules make its bitmaps extension
/// unusable: a bitmaps rule that is an error or makes the extension
/// inconsistent.
fn extension_unusable(e: &Expected) -> bool {
    e.bitmaps_extension == spec_model::ExtensionState::Inconsistent
        || e.rules.iter().any(|r| {
            r.starts_with("bitmaps.")
                && severities(r)
                    .iter()
                    .any(|s| matches!(s, Severity::Error | Severity::Inconsistent))
        })
}

fn names(bitmaps: &[ObservedBitmap]) -> String {
    bitmaps
        .iter()
        .map(|b| short(&b.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn why_unusable(e: &ExpectedBitmap) -> &'static str {
    if e.flags.in_use {
        "it is in_use"
    } else {
        "it has extra data without extra_data_compatible"
    }
}

/// Judges one observation against the expected verdict.
pub fn judge(expected: &Expected, obs: &Observation) -> Outcome {
    judge_with_model(expected, obs, None)
}

/// As [`judge`], with the reference model's per-bitmap usability of the
/// image (name, usable) for invalid cases whose manifest entry lists no
/// bitmaps: an invalid image may still have usable bitmaps (an error
/// outside the extension), or unusable ones for a reason the rule IDs
/// alone do not show (an overlap involving a bitmap cluster).
pub fn judge_with_model(
    expected: &Expected,
    obs: &Observation,
    model: Option<&[(String, bool)]>,
) -> Outcome {
    let stderr_hint = || {
        obs.stderr_excerpt
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!("last stderr line: {}", l.trim()))
    };
    if obs.timed_out {
        let mut d = vec![
            "a program ran past the time limit and was killed with its process group".to_owned(),
        ];
        d.extend(stderr_hint());
        return Outcome::new(OutcomeKind::Hang, d);
    }
    if let Some(sig) = obs.signal {
        let mut d = vec![format!(
            "killed by signal {sig} ({})",
            super::process::signal_name(sig)
        )];
        d.extend(obs.sanitizer.clone());
        d.extend(stderr_hint());
        return Outcome::new(OutcomeKind::Crash, d);
    }
    if let Some(s) = &obs.sanitizer {
        return Outcome::new(OutcomeKind::Crash, vec![format!("sanitizer report: {s}")]);
    }
    if let Some(p) = &obs.protocol_error {
        return Outcome::new(OutcomeKind::Crash, vec![format!("no usable answer: {p}")]);
    }
    if let Some(w) = &obs.write {
        if !w.found.problems.is_empty() {
            let mut d = vec![format!(
                "after writing {} bytes at {} (written: {}):",
                w.len, w.offset, w.written
            )];
            d.extend(w.found.problems.iter().cloned());
            return Outcome::new(OutcomeKind::Corrupting, d);
        }
    }
    if let Some(o) = &obs.ops {
        if !o.found.problems.is_empty() {
            let mut d = vec![format!(
                "QEMU's bitmap operations ({} step(s)) left the image wrong:",
                o.steps.len()
            )];
            d.extend(o.found.problems.iter().cloned());
            return Outcome::new(OutcomeKind::Corrupting, d);
        }
    }
    if obs.bitmaps_unaware {
        return judge_unaware(expected, obs);
    }
    match expected.verdict {
        spec_model::Verdict::Valid => judge_valid(expected, obs),
        spec_model::Verdict::Invalid => judge_invalid(expected, obs, model),
        v => {
            let mut d = vec![format!(
                "the spec is silent ({}): {}",
                v.as_str(),
                summary(obs)
            )];
            if !expected.rules.is_empty() {
                d.push(format!("rules: {}", expected.rules.join(", ")));
            }
            Outcome::new(OutcomeKind::Recorded, d)
        }
    }
}

/// An implementation that does not know bitmaps (`obs.bitmaps_unaware`):
/// bitmap expectations do not apply. A conforming image must open (unless
/// a documented limit is involved) and read as the model reads it; an
/// invalid one may be refused or read; an unspecified one is recorded.
/// Guest data read from an invalid image is judged only when every broken
/// rule is a bitmaps rule (the mapping itself is intact).
fn judge_unaware(e: &Expected, obs: &Observation) -> Outcome {
    let limits = limit_rules(e);
    let mut r = Reasons::default();
    let guest = obs.guest.as_ref();
    let read = |g: &GuestCheck| {
        format!(
            "read {} of {} sample range(s) ({} bytes) as the model does",
            g.ranges_compared, g.ranges, g.bytes_compared
        )
    };
    match e.verdict {
        spec_model::Verdict::Valid => {
            if !obs.opened {
                let err = obs.error.as_deref().unwrap_or("no message");
                if limits.is_empty() {
                    r.strict
                        .push(format!("refused to open a conforming image: {err}"));
                } else {
                    r.pass.push(format!(
                        "refused to open a conforming image beyond documented limits ({}): {err}",
                        limits.join(", ")
                    ));
                }
            } else if let Some(g) = guest {
                r.mismatch.extend(g.differences());
                if g.read_error_count > 0 {
                    let mut errs = g.read_errors.clone();
                    if g.read_error_count > errs.len() {
                        errs.push(format!("(and {} more)", g.read_error_count - errs.len()));
                    }
                    if limits.is_empty() {
                        r.strict.extend(errs);
                    } else {
                        r.pass.extend(
                            errs.into_iter()
                                .map(|m| format!("{m} (allowed: limits {})", limits.join(", "))),
                        );
                    }
                }
                if !g.differs() && g.read_error_count == 0 {
                    r.pass.push(read(g));
                }
            } else {
                r.pass.push("opened the conforming image".to_owned());
            }
        }
        spec_model::Verdict::Invalid => {
            let rules = e.rules.join(", ");
            if !obs.opened {
                r.pass.push(format!(
                    "refused the invalid image ({rules}): {}",
                    obs.error.as_deref().unwrap_or("no message")
                ));
            } else {
                let mapping_intact =
                    !e.rules.is_empty() && e.rules.iter().all(|x| x.starts_with("bitmaps."));
                match guest {
                    Some(g) if g.differs() && mapping_intact => {
                        r.mismatch.extend(g.differences().into_iter().map(|d| {
                            format!("{d} (the image breaks only bitmaps rules: {rules})")
                        }))
                    }
                    Some(g) if g.differs() => r.pass.push(format!(
                        "opened the invalid image ({rules}); its guest data differs from the model's, not judged: {}",
                        g.differences().join("; ")
                    )),
                    Some(g) => r.pass.push(format!(
                        "opened the invalid image ({rules}) and {}",
                        read(g)
                    )),
                    None => r.pass.push(format!("opened the invalid image ({rules})")),
                }
            }
        }
        v => {
            let mut d = vec![format!(
                "the spec is silent ({}): {}",
                v.as_str(),
                summary(obs)
            )];
            if let Some(g) = guest {
                d.extend(g.differences());
                d.extend(g.read_errors.iter().cloned());
            }
            if !e.rules.is_empty() {
                d.push(format!("rules: {}", e.rules.join(", ")));
            }
            return Outcome::new(OutcomeKind::Recorded, d);
        }
    }
    r.finish()
}

/// One line on what the implementation did.
fn summary(obs: &Observation) -> String {
    if !obs.opened {
        return format!(
            "refused to open ({})",
            obs.error.as_deref().unwrap_or("no message")
        );
    }
    let used = obs.bitmaps.iter().filter(|b| b.used()).count();
    format!(
        "opened, listed {} bitmap(s), used {used}",
        obs.bitmaps.len()
    )
}

/// Collects reasons by outcome; the worst kind wins.
#[derive(Default)]
struct Reasons {
    lenient: Vec<String>,
    mismatch: Vec<String>,
    strict: Vec<String>,
    pass: Vec<String>,
}

impl Reasons {
    fn finish(self) -> Outcome {
        let (kind, first) = if !self.lenient.is_empty() {
            (OutcomeKind::Lenient, &self.lenient)
        } else if !self.mismatch.is_empty() {
            (OutcomeKind::Mismatch, &self.mismatch)
        } else if !self.strict.is_empty() {
            (OutcomeKind::Strict, &self.strict)
        } else {
            (OutcomeKind::Pass, &self.pass)
        };
        let mut d = first.clone();
        for (k, v) in [
            (OutcomeKind::Lenient, &self.lenient),
            (OutcomeKind::Mismatch, &self.mismatch),
            (OutcomeKind::Strict, &self.strict),
            (OutcomeKind::Pass, &self.pass),
        ] {
            if k != kind {
                d.extend(v.iter().map(|s| {
                    if k == OutcomeKind::Pass {
                        s.clone()
                    } else {
                        format!("also {k}: {s}")
                    }
                }));
            }
        }
        Outcome::new(kind, d)
    }
}

fn judge_valid(e: &Expected, obs: &Observation) -> Outcome {
    let limits = limit_rules(e);
    let mut r = Reasons::default();
    if !obs.opened {
        let err = obs.error.as_deref().unwrap_or("no message");
        if limits.is_empty() {
            r.strict
                .push(format!("refused to open a conforming image: {err}"));
        } else {
            r.pass.push(format!(
                "refused to open a conforming image beyond documented limits ({}): {err}",
                limits.join(", ")
            ));
        }
        return r.finish();
    }
    match e.bitmaps_extension {
        spec_model::ExtensionState::Absent => {
            if !obs.bitmaps.is_empty() {
                r.mismatch.push(format!(
                    "lists bitmaps the image does not have: {}",
                    names(&obs.bitmaps)
                ));
            }
        }
        spec_model::ExtensionState::Inconsistent => {
            for b in &obs.bitmaps {
                if b.used() {
                    r.lenient.push(format!(
                        "used bitmap {} of an inconsistent bitmaps extension (autoclear bit 0 clear or a version 2 image)",
                        short(&b.name)
                    ));
                } else {
                    r.pass.push(format!(
                        "listed bitmap {} of the inconsistent extension without using it",
                        short(&b.name)
                    ));
                }
            }
        }
        _ => compare_bitmaps(e, obs, &limits, &mut r),
    }
    if r.pass.is_empty() && r.lenient.is_empty() && r.mismatch.is_empty() && r.strict.is_empty() {
        r.pass.push(summary(obs));
    }
    r.finish()
}

/// Expected and observed bitmaps side by side, matched by name.
fn compare_bitmaps(e: &Expected, obs: &Observation, limits: &[&str], r: &mut Reasons) {
    let expected = e.bitmaps.as_deref().unwrap_or(&[]);
    let mut matched = vec![false; obs.bitmaps.len()];
    for want in expected {
        let found = obs
            .bitmaps
            .iter()
            .enumerate()
            .find(|(i, o)| !matched[*i] && o.name == want.name);
        let Some((i, got)) = found else {
            if want.usable && !limits.is_empty() {
                r.pass.push(format!(
                    "did not list bitmap {} (allowed: limits {})",
                    short(&want.name),
                    limits.join(", ")
                ));
            } else if want.usable {
                r.strict.push(format!(
                    "did not list the conforming bitmap {}",
                    short(&want.name)
                ));
            } else {
                r.mismatch.push(format!(
                    "did not list bitmap {}, which is present (though unusable: {})",
                    short(&want.name),
                    why_unusable(want)
                ));
            }
            continue;
        };
        matched[i] = true;
        if got.granularity_bits != Some(want.granularity_bits) {
            r.mismatch.push(format!(
                "bitmap {}: granularity {} instead of 2^{}",
                short(&want.name),
                got.granularity_bits
                    .map(|g| format!("2^{g}"))
                    .unwrap_or_else(|| "not a power of two".into()),
                want.granularity_bits
            ));
        }
        if got.flags.in_use != want.flags.in_use || got.flags.auto != want.flags.auto {
            r.mismatch.push(format!(
                "bitmap {}: flags in_use={} auto={} instead of in_use={} auto={}",
                want.name, got.flags.in_use, got.flags.auto, want.flags.in_use, want.flags.auto
            ));
        }
        if want.usable {
            if got.used() {
                match (&want.content_sha256, &got.content_sha256) {
                    (Some(w), Some(g)) if w != g => r.mismatch.push(format!(
                        "bitmap {}: contents differ (sha256 {g}, {} bits set; expected {w}, {} bits set)",
                        short(&want.name),
                        got.set_bits.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                        want.set_bits.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    )),
                    (Some(_), None) => r.pass.push(format!(
                        "bitmap {}: usable, contents not reported",
                        short(&want.name)
                    )),
                    _ => {}
                }
            } else if !limits.is_empty() {
                r.pass.push(format!(
                    "refused bitmap {} (allowed: limits {}): {}",
                    short(&want.name),
                    limits.join(", "),
                    got.error.as_deref().unwrap_or("no message")
                ));
            } else {
                r.strict.push(format!(
                    "refused to use the conforming bitmap {}: {}",
                    short(&want.name),
                    got.error.as_deref().unwrap_or("no message")
                ));
            }
        } else if got.used() {
            r.lenient.push(format!(
                "used bitmap {}, which must not be used: {}",
                short(&want.name),
                why_unusable(want)
            ));
        }
    }
    let extra: Vec<ObservedBitmap> = obs
        .bitmaps
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(b, _)| b.clone())
        .collect();
    if !extra.is_empty() {
        r.mismatch.push(format!(
            "lists bitmaps the image does not have: {}",
            names(&extra)
        ));
    }
}

fn judge_invalid(e: &Expected, obs: &Observation, model: Option<&[(String, bool)]>) -> Outcome {
    let mut r = Reasons::default();
    let rules = if e.rules.is_empty() {
        "no rule named".to_owned()
    } else {
        e.rules.join(", ")
    };
    if let Some(c) = &obs.integrity {
        if c.flags_corrupt() && obs.opened {
            r.pass.push(format!(
                "its checker reports {} corruption(s) and {} check error(s), yet it opens the image and lists {} bitmap(s)",
                c.corruptions,
                c.check_errors,
                obs.bitmaps.len()
            ));
        } else if c.ran && !c.flags_corrupt() {
            r.pass.push(format!(
                "its checker finds no corruption ({} leak(s))",
                c.leaks
            ));
        }
    }
    if !obs.opened {
        r.pass.push(format!(
            "refused the invalid image ({rules}): {}",
            obs.error.as_deref().unwrap_or("no message")
        ));
        return r.finish();
    }
    let used: Vec<&ObservedBitmap> = obs.bitmaps.iter().filter(|b| b.used()).collect();
    if let Some(expected) = &e.bitmaps {
        // Per-bitmap expectations: using an unusable one is lenient.
        for b in &used {
            let want = expected.iter().find(|w| w.name == b.name);
            if want.is_none_or(|w| !w.usable) {
                r.lenient.push(format!(
                    "used bitmap {} of an invalid image ({rules}), which must not be used",
                    short(&b.name)
                ));
            }
        }
    } else if let Some(model) = model {
        for b in &used {
            let usable = model.iter().find(|(n, _)| *n == b.name).map(|(_, u)| *u);
            if usable != Some(true) {
                r.lenient.push(format!(
                    "used bitmap {} of an invalid image ({rules}), which the model says must not be used",
                    short(&b.name)
                ));
            }
        }
        if r.lenient.is_empty() && !used.is_empty() {
            r.pass.push(format!(
                "used {} bitmap(s) that stay usable despite {rules} (the error is outside the bitmaps extension)",
                used.len()
            ));
        }
    } else if extension_unusable(e) {
        for b in &used {
            r.lenient.push(format!(
                "used bitmap {} although the bitmaps extension is invalid ({rules})",
                short(&b.name)
            ));
        }
    } else if !used.is_empty() {
        r.pass.push(format!(
            "used {} bitmap(s) of an image that breaks {rules}, outside the bitmaps extension (not judged)",
            used.len()
        ));
    }
    if r.lenient.is_empty() {
        r.pass.push(format!(
            "opened the invalid image ({rules}), listed {} bitmap(s), used none that must not be used",
            obs.bitmaps.len()
        ));
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::observation::{IntegrityCheck, ObservedFlags};
    use generator::expected::ExpectedFlags;

    fn valid_one() -> Expected {
        Expected {
            verdict: spec_model::Verdict::Valid,
            rules: vec![],
            bitmaps_extension: spec_model::ExtensionState::Consistent,
            bitmaps: Some(vec![ExpectedBitmap {
                name: "b".into(),
                granularity_bits: 16,
                usable: true,
                flags: ExpectedFlags {
                    in_use: false,
                    auto: true,
                },
                content_sha256: Some("aa".into()),
                set_bits: Some(1),
            }]),
        }
    }

    fn seen(sha: &str) -> Observation {
        Observation {
            opened: true,
            bitmaps: vec![ObservedBitmap {
                name: "b".into(),
                granularity_bits: Some(16),
                flags: ObservedFlags {
                    in_use: false,
                    auto: true,
                },
                usable: true,
                content_sha256: Some(sha.into()),
                ..ObservedBitmap::default()
            }],
            ..Observation::default()
        }
    }

    #[test]
    fn valid_cases() {
        assert_eq!(judge(&valid_one(), &seen("aa")).kind, OutcomeKind::Pass);
        assert_eq!(judge(&valid_one(), &seen("ab")).kind, OutcomeKind::Mismatch);
        let mut refused = seen("aa");
        refused.bitmaps[0].usable = false;
        refused.bitmaps[0].content_sha256 = None;
        assert_eq!(judge(&valid_one(), &refused).kind, OutcomeKind::Strict);
        let mut e = valid_one();
        e.rules.push("bitmaps.dir.granularity".into());
        assert_eq!(judge(&e, &refused).kind, OutcomeKind::Pass);
        let closed = Observation::default();
        assert_eq!(judge(&valid_one(), &closed).kind, OutcomeKind::Strict);
        let mut hung = seen("aa");
        hung.timed_out = true;
        assert_eq!(judge(&valid_one(), &hung).kind, OutcomeKind::Hang);
        let mut crashed = seen("aa");
        crashed.signal = Some(11);
        assert_eq!(judge(&valid_one(), &crashed).kind, OutcomeKind::Crash);
    }

    #[test]
    fn invalid_cases() {
        let e = Expected {
            verdict: spec_model::Verdict::Invalid,
            rules: vec!["bitmaps.dir.flags-reserved".into()],
            bitmaps_extension: spec_model::ExtensionState::Consistent,
            bitmaps: None,
        };
        assert_eq!(judge(&e, &Observation::default()).kind, OutcomeKind::Pass);
        assert_eq!(judge(&e, &seen("aa")).kind, OutcomeKind::Lenient);
        let mut listed = seen("aa");
        listed.bitmaps[0].usable = false;
        listed.bitmaps[0].content_sha256 = None;
        listed.integrity = Some(IntegrityCheck {
            ran: true,
            corruptions: 2,
            ..IntegrityCheck::default()
        });
        let o = judge(&e, &listed);
        assert_eq!(o.kind, OutcomeKind::Pass);
        assert!(o.detail[0].contains("2 corruption"), "{o:?}");
        let mut u = e.clone();
        u.verdict = spec_model::Verdict::Unspecified;
        assert_eq!(judge(&u, &seen("aa")).kind, OutcomeKind::Recorded);
    }
}
