//! Judging: what an implementation did with an image ([`Observation`])
//! against what the spec says about it ([`Expected`]), as one of the
//! outcomes of `DESIGN.md`, with its cause ([`super::cause`]).
//!
//! Order of precedence: `hang` and `crash` first (whatever the image), then
//! `corrupting` (the write check), then `recorded` for images the spec is
//! silent about, then the verdict-specific judgement where `lenient` beats
//! `mismatch` beats `strict` beats `pass`. Every reason found is kept in
//! the outcome's detail, not only the winning one; the first reason of the
//! winning kind is the cause.

use super::adapter::Capabilities;
use super::cause::{Check, ImageFacts, ModelBitmap};
pub use super::judge_context::Context;
use super::judge_context::{cut_at_nul, find_name, name_cut};
use super::observation::{GuestCheck, Observation, ObservedBitmap};
use super::outcome::{Bucket, Reasons};
pub use super::outcome::{Outcome, OutcomeKind};
use super::text::short;
use generator::expected::ExpectedBitmap;
use generator::Expected;
use spec_model::{Rule, Severity};
use std::path::Path;

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

/// [`why_unusable`] as a cause token ([`ModelBitmap::why_unusable`]).
fn why_token(e: &ExpectedBitmap) -> &'static str {
    if e.flags.in_use {
        "in_use"
    } else {
        "extra-data"
    }
}

/// The first bitmaps rule among an invalid image's expected rules in
/// catalogue order, as a cause token (`bitmaps` when none is named).
fn bitmap_rules_token(e: &Expected) -> String {
    e.rules
        .iter()
        .filter(|r| r.starts_with("bitmaps."))
        .filter_map(|r| Rule::from_id(r))
        .min()
        .map_or_else(|| "bitmaps".to_owned(), |r| r.id().to_owned())
}

/// Judges one observation against the expected verdict.
pub fn judge(expected: &Expected, obs: &Observation) -> Outcome {
    judge_in(expected, obs, &Context::default())
}

/// As [`judge`], with the reference model's per-bitmap usability of the
/// image (name, usable) for invalid cases whose manifest entry lists no
/// bitmaps: an invalid image may still have usable bitmaps (an error
/// outside the extension), or unusable ones for a reason the rule IDs
/// alone do not show (an overlap involving a bitmap cluster).
pub fn judge_with_model(
    expected: &Expected,
    obs: &Observation,
    model: Option<&[ModelBitmap]>,
) -> Outcome {
    judge_in(
        expected,
        obs,
        &Context {
            model,
            ..Context::default()
        },
    )
}

/// As [`judge_in`], with the context read from `image` (the case's image,
/// not the implementation's copy) and the adapter's capabilities.
pub fn judge_image(
    expected: &Expected,
    obs: &Observation,
    image: &Path,
    caps: Capabilities,
) -> Outcome {
    let read = ImageFacts::read(image);
    let model = read.as_ref().map(|(_, u)| u.as_slice());
    judge_in(
        expected,
        obs,
        &Context {
            model,
            facts: read.as_ref().map(|(f, _)| f),
            supported_incompatible: caps.incompatible_features_supported,
        },
    )
}

/// Judges one observation against the expected verdict, in `cx`.
pub fn judge_in(expected: &Expected, obs: &Observation, cx: &Context) -> Outcome {
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
        return Outcome::new(OutcomeKind::Hang, d, cx.cause(Check::Timeout, None));
    }
    if let Some(sig) = obs.signal {
        let name = super::process::signal_name(sig);
        let mut d = vec![format!("killed by signal {sig} ({name})")];
        d.extend(obs.sanitizer.clone());
        // The signal and the last line the program wrote before it (a
        // panic message, an assertion): two different crashes that die of
        // the same signal are two buckets.
        let last = obs
            .stderr_excerpt
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty());
        let message = match last {
            Some(l) => format!("{name}: {}", l.trim()),
            None => name.to_owned(),
        };
        d.extend(stderr_hint());
        return Outcome::new(
            OutcomeKind::Crash,
            d,
            cx.cause(Check::Signal, Some(&message)),
        );
    }
    if let Some(s) = &obs.sanitizer {
        let first = s.lines().next();
        return Outcome::new(
            OutcomeKind::Crash,
            vec![format!("sanitizer report: {s}")],
            cx.cause(Check::Sanitizer, first),
        );
    }
    if let Some(p) = &obs.protocol_error {
        return Outcome::new(
            OutcomeKind::Crash,
            vec![format!("no usable answer: {p}")],
            cx.cause(Check::Protocol, Some(p)),
        );
    }
    if let Some(w) = &obs.write {
        if !w.found.problems.is_empty() {
            let mut d = vec![format!(
                "after writing {} bytes at {} (written: {}):",
                w.len, w.offset, w.written
            )];
            d.extend(w.found.problems.iter().cloned());
            let first = w.found.problems.first().map(String::as_str);
            return Outcome::new(OutcomeKind::Corrupting, d, cx.cause(Check::Write, first));
        }
    }
    if let Some(o) = &obs.ops {
        if !o.found.problems.is_empty() {
            let mut d = vec![format!(
                "QEMU's bitmap operations ({} step(s)) left the image wrong:",
                o.steps.len()
            )];
            d.extend(o.found.problems.iter().cloned());
            let first = o.found.problems.first().map(String::as_str);
            return Outcome::new(
                OutcomeKind::Corrupting,
                d,
                cx.cause(Check::BitmapOps, first),
            );
        }
    }
    if obs.bitmaps_unaware {
        return judge_unaware(expected, obs, cx);
    }
    match expected.verdict {
        spec_model::Verdict::Valid => judge_valid(expected, obs, cx),
        spec_model::Verdict::Invalid => judge_invalid(expected, obs, cx),
        v => recorded(v, expected, obs, cx, Vec::new()),
    }
}

/// An image the spec is silent about: kept with what happened.
fn recorded(
    v: spec_model::Verdict,
    e: &Expected,
    obs: &Observation,
    cx: &Context,
    more: Vec<String>,
) -> Outcome {
    let mut d = vec![format!(
        "the spec is silent ({}): {}",
        v.as_str(),
        summary(obs)
    )];
    d.extend(more);
    if !e.rules.is_empty() {
        d.push(format!("rules: {}", e.rules.join(", ")));
    }
    let msg = (!obs.opened).then_some(obs.error.as_deref()).flatten();
    Outcome::new(OutcomeKind::Recorded, d, cx.cause(Check::Silent, msg))
}

/// An implementation that does not know bitmaps (`obs.bitmaps_unaware`):
/// bitmap expectations do not apply. A conforming image must open (unless
/// a documented limit is involved, or the spec requires the refusal) and
/// read as the model reads it; an invalid one may be refused or read; an
/// unspecified one is recorded. Guest data read from an invalid image is
/// judged only when every broken rule is a bitmaps rule (the mapping
/// itself is intact).
fn judge_unaware(e: &Expected, obs: &Observation, cx: &Context) -> Outcome {
    let limits = limit_rules(e);
    // A bitmap's flags mean nothing to a bitmaps-unaware implementation.
    let facts = cx.facts.map(|f| ImageFacts {
        extra_data_compatible: false,
        ..*f
    });
    let cx = &Context {
        facts: facts.as_ref(),
        ..*cx
    };
    let mut r = cx.reasons();
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
                cx.refused_valid(err, &limits, &mut r);
            } else if let Some(g) = guest {
                for d in g.differences() {
                    r.mismatch.push(Check::GuestData, d);
                }
                if g.read_error_count > 0 {
                    let mut errs = g.read_errors.clone();
                    if g.read_error_count > errs.len() {
                        errs.push(format!("(and {} more)", g.read_error_count - errs.len()));
                    }
                    for m in errs {
                        if limits.is_empty() {
                            r.strict.push_msg(Check::GuestRead, Some(&m), m.clone());
                        } else {
                            let t = format!("{m} (allowed: limits {})", limits.join(", "));
                            r.pass.push_msg(Check::GuestRead, Some(&m), t);
                        }
                    }
                }
                if !g.differs() && g.read_error_count == 0 {
                    r.pass.push(Check::Allowed, read(g));
                }
            } else {
                r.pass
                    .push(Check::Allowed, "opened the conforming image".to_owned());
            }
        }
        spec_model::Verdict::Invalid => {
            let rules = e.rules.join(", ");
            if !obs.opened {
                let err = obs.error.as_deref().unwrap_or("no message");
                r.pass.push_msg(
                    Check::Open,
                    Some(err),
                    format!("refused the invalid image ({rules}): {err}"),
                );
            } else {
                let mapping_intact =
                    !e.rules.is_empty() && e.rules.iter().all(|x| x.starts_with("bitmaps."));
                match guest {
                    Some(g) if g.differs() && mapping_intact => {
                        for d in g.differences() {
                            r.mismatch.push(
                                Check::GuestData,
                                format!("{d} (the image breaks only bitmaps rules: {rules})"),
                            );
                        }
                    }
                    Some(g) if g.differs() => r.pass.push(Check::Allowed, format!(
                        "opened the invalid image ({rules}); its guest data differs from the model's, not judged: {}",
                        g.differences().join("; ")
                    )),
                    Some(g) => r.pass.push(
                        Check::Allowed,
                        format!("opened the invalid image ({rules}) and {}", read(g)),
                    ),
                    None => r
                        .pass
                        .push(Check::Allowed, format!("opened the invalid image ({rules})")),
                }
            }
        }
        v => {
            let mut more = Vec::new();
            if let Some(g) = guest {
                more.extend(g.differences());
                more.extend(g.read_errors.iter().cloned());
            }
            return recorded(v, e, obs, cx, more);
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

/// Header fields the write check saw rewritten (e.g. the virtual size
/// rounded down to a sector by QEMU): each a mismatch of its own, since a
/// write of guest data is no licence to change what the header says about
/// the disk (see [`super::writes`] for why this is not `corrupting`).
fn header_rewrites(obs: &Observation, r: &mut Reasons) {
    for rw in obs.write.iter().flat_map(|w| &w.rewrites) {
        r.mismatch.push(
            Check::HeaderRewrite,
            format!("the read-write open for the write check rewrote the header: {rw}"),
        );
    }
}

fn judge_valid(e: &Expected, obs: &Observation, cx: &Context) -> Outcome {
    let limits = limit_rules(e);
    let mut r = cx.reasons();
    if !obs.opened {
        let err = obs.error.as_deref().unwrap_or("no message");
        cx.refused_valid(err, &limits, &mut r);
        return r.finish();
    }
    header_rewrites(obs, &mut r);
    match e.bitmaps_extension {
        spec_model::ExtensionState::Absent => {
            if !obs.bitmaps.is_empty() {
                r.mismatch.push(
                    Check::ExtraBitmap,
                    format!(
                        "lists bitmaps the image does not have: {}",
                        names(&obs.bitmaps)
                    ),
                );
            }
        }
        spec_model::ExtensionState::Inconsistent => {
            for b in &obs.bitmaps {
                if b.used() {
                    let v2 = cx.facts.is_some_and(|f| f.version == 2);
                    let fallback = if v2 { "v2-image" } else { "autoclear-clear" };
                    r.lenient.push_unusable(&cx.why_unusable(&b.name, fallback), format!(
                        "used bitmap {} of an inconsistent bitmaps extension (autoclear bit 0 clear or a version 2 image)",
                        short(&b.name)
                    ));
                } else {
                    r.pass.push(
                        Check::Allowed,
                        format!(
                            "listed bitmap {} of the inconsistent extension without using it",
                            short(&b.name)
                        ),
                    );
                }
            }
        }
        _ => compare_bitmaps(e, obs, cx, &limits, &mut r),
    }
    if r.pass.is_empty() && r.lenient.is_empty() && r.mismatch.is_empty() && r.strict.is_empty() {
        r.pass.push(Check::Allowed, summary(obs));
    }
    r.finish()
}

/// Expected and observed bitmaps side by side, matched by name (a name
/// listed cut at its NUL byte matches, as a mismatch).
fn compare_bitmaps(
    e: &Expected,
    obs: &Observation,
    cx: &Context,
    limits: &[&str],
    r: &mut Reasons,
) {
    let expected = e.bitmaps.as_deref().unwrap_or(&[]);
    let mut matched = vec![false; obs.bitmaps.len()];
    for want in expected {
        let free = || {
            obs.bitmaps
                .iter()
                .enumerate()
                .filter(|(i, _)| !matched[*i])
                .map(|(i, o)| (i, o.name.as_str()))
        };
        let exact = free().find(|(_, n)| *n == want.name).map(|(i, _)| i);
        let cut = cut_at_nul(&want.name)
            .and_then(|c| free().find(|(_, n)| *n == c))
            .map(|(i, _)| i);
        let Some(i) = exact.or(cut) else {
            if want.usable && !limits.is_empty() {
                r.pass.push(
                    Check::MissingBitmap,
                    format!(
                        "did not list bitmap {} (allowed: limits {})",
                        short(&want.name),
                        limits.join(", ")
                    ),
                );
            } else if want.usable {
                r.strict.push(
                    Check::MissingBitmap,
                    format!("did not list the conforming bitmap {}", short(&want.name)),
                );
            } else {
                r.mismatch.push(
                    Check::MissingBitmap,
                    format!(
                        "did not list bitmap {}, which is present (though unusable: {})",
                        short(&want.name),
                        why_unusable(want)
                    ),
                );
            }
            continue;
        };
        matched[i] = true;
        let got = &obs.bitmaps[i];
        if exact.is_none() {
            r.mismatch
                .push(Check::NameCut, name_cut(&got.name, &want.name));
        }
        if got.granularity_bits != Some(want.granularity_bits) {
            r.mismatch.push(
                Check::Granularity,
                format!(
                    "bitmap {}: granularity {} instead of 2^{}",
                    short(&want.name),
                    got.granularity_bits
                        .map(|g| format!("2^{g}"))
                        .unwrap_or_else(|| "not a power of two".into()),
                    want.granularity_bits
                ),
            );
        }
        if got.flags.in_use != want.flags.in_use || got.flags.auto != want.flags.auto {
            r.mismatch.push(
                Check::Flags,
                format!(
                    "bitmap {}: flags in_use={} auto={} instead of in_use={} auto={}",
                    want.name, got.flags.in_use, got.flags.auto, want.flags.in_use, want.flags.auto
                ),
            );
        }
        if want.usable {
            if got.used() {
                match (&want.content_sha256, &got.content_sha256) {
                    (Some(w), Some(g)) if w != g => r.mismatch.push(Check::Contents, format!(
                        "bitmap {}: contents differ (sha256 {g}, {} bits set; expected {w}, {} bits set)",
                        short(&want.name),
                        got.set_bits.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                        want.set_bits.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    )),
                    (Some(_), None) => r.pass.push(Check::Allowed, format!(
                        "bitmap {}: usable, contents not reported",
                        short(&want.name)
                    )),
                    _ => {}
                }
            } else {
                let err = got.error.as_deref().unwrap_or("no message");
                let (bucket, text): (&mut Bucket, String) = if !limits.is_empty() {
                    (
                        &mut r.pass,
                        format!(
                            "refused bitmap {} (allowed: limits {}): {err}",
                            short(&want.name),
                            limits.join(", ")
                        ),
                    )
                } else {
                    (
                        &mut r.strict,
                        format!(
                            "refused to use the conforming bitmap {}: {err}",
                            short(&want.name)
                        ),
                    )
                };
                bucket.push_msg(Check::BitmapRefused, Some(err), text);
            }
        } else if got.used() {
            r.lenient.push_unusable(
                &cx.why_unusable(&want.name, why_token(want)),
                format!(
                    "used bitmap {}, which must not be used: {}",
                    short(&want.name),
                    why_unusable(want)
                ),
            );
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
        r.mismatch.push(
            Check::ExtraBitmap,
            format!("lists bitmaps the image does not have: {}", names(&extra)),
        );
    }
}

fn judge_invalid(e: &Expected, obs: &Observation, cx: &Context) -> Outcome {
    let mut r = cx.reasons();
    let rules = if e.rules.is_empty() {
        "no rule named".to_owned()
    } else {
        e.rules.join(", ")
    };
    if let Some(c) = &obs.integrity {
        if c.flags_corrupt() && obs.opened {
            r.pass.push(Check::Allowed, format!(
                "its checker reports {} corruption(s) and {} check error(s), yet it opens the image and lists {} bitmap(s)",
                c.corruptions,
                c.check_errors,
                obs.bitmaps.len()
            ));
        } else if c.ran && !c.flags_corrupt() {
            r.pass.push(
                Check::Allowed,
                format!("its checker finds no corruption ({} leak(s))", c.leaks),
            );
        }
    }
    if !obs.opened {
        let err = obs.error.as_deref().unwrap_or("no message");
        r.pass.push_msg(
            Check::Open,
            Some(err),
            format!("refused the invalid image ({rules}): {err}"),
        );
        return r.finish();
    }
    let used: Vec<&ObservedBitmap> = obs.bitmaps.iter().filter(|b| b.used()).collect();
    // Per-bitmap usability: the manifest's, else the model's.
    let usability: Option<Vec<(&str, bool)>> = match (&e.bitmaps, cx.model) {
        (Some(x), _) => Some(x.iter().map(|w| (w.name.as_str(), w.usable)).collect()),
        (None, Some(m)) => Some(m.iter().map(|b| (b.name.as_str(), b.usable)).collect()),
        (None, None) => None,
    };
    if let Some(list) = &usability {
        let which = if e.bitmaps.is_some() {
            ""
        } else {
            "the model says "
        };
        for b in &used {
            let found = find_name(list.iter().map(|(n, _)| *n).enumerate(), &b.name);
            if let Some((i, true)) = found {
                r.mismatch
                    .push(Check::NameCut, name_cut(&b.name, list[i].0));
            }
            if found.is_none_or(|(i, _)| !list[i].1) {
                let why = match found {
                    Some((i, _)) => cx.why_unusable(list[i].0, &bitmap_rules_token(e)),
                    None => "not-in-image".to_owned(),
                };
                r.lenient.push_unusable(
                    &why,
                    format!(
                        "used bitmap {} of an invalid image ({rules}), which {which}must not be used",
                        short(&b.name)
                    ),
                );
            }
        }
        if e.bitmaps.is_none() && r.lenient.is_empty() && !used.is_empty() {
            r.pass.push(Check::Allowed, format!(
                "used {} bitmap(s) that stay usable despite {rules} (the error is outside the bitmaps extension)",
                used.len()
            ));
        }
    } else if extension_unusable(e) {
        for b in &used {
            r.lenient.push_unusable(
                &cx.why_unusable(&b.name, &bitmap_rules_token(e)),
                format!(
                    "used bitmap {} although the bitmaps extension is invalid ({rules})",
                    short(&b.name)
                ),
            );
        }
    } else if !used.is_empty() {
        r.pass.push(Check::Allowed, format!(
            "used {} bitmap(s) of an image that breaks {rules}, outside the bitmaps extension (not judged)",
            used.len()
        ));
    }
    if r.lenient.is_empty() {
        r.pass.push(Check::Allowed, format!(
            "opened the invalid image ({rules}), listed {} bitmap(s), used none that must not be used",
            obs.bitmaps.len()
        ));
    }
    r.finish()
}
