//! Judging: what an implementation did with an image ([`Observation`])
//! against what the spec says about it ([`Expected`]) and what the spec
//! obliges an implementation of its kind to do
//! ([`spec_model::obligations`]), as one of the outcomes of `DESIGN.md`,
//! with its cause ([`crate::runner::judge::cause`]) naming the obligation broken.
//!
//! The judge is a room of its own, one file per obligation family:
//! - [`context`][mod@context]: what it knows besides the two (the model's bitmaps, the
//!   image's facts, the implementation's [`Kind`]);
//! - [`write`][mod@write]: the checks that change a copy (`write.*`,
//!   `bitmaps.mark-written`, `bitmaps.ops-as-modelled`);
//! - [`open`][mod@open]: `open.unknown-incompatible`, `open.conforming` and the
//!   documented limits (a limit on bitmaps excuses only an implementation
//!   that reads bitmaps);
//! - [`crypt`][mod@crypt]: `crypt.refuse-without-key`;
//! - [`guest`][mod@guest]: `guest.virtual-size`, `guest.read-as-mapped`;
//! - [`bitmaps`][mod@bitmaps]: listing, contents, bitmaps that must not be used;
//! - [`coverage`][mod@coverage]: every obligation binding the kind, exercised or not
//!   (an obligation not exercised is never a pass).
//!
//! Order of precedence: `hang` and `crash` first (whatever the image), then
//! `corrupting` (the write check, run on every image written), then the
//! obligations that hold whatever the verdict (an unsupported incompatible
//! bit opened; an encrypted image without its key), then `recorded` for
//! images the spec is silent about (unless a name was listed cut at its NUL
//! byte, a mismatch whatever the verdict), then the verdict-specific
//! judgement, where `lenient` beats `mismatch` beats `strict` beats `pass`.
//! Every reason found is kept in the outcome's detail, not only the winning
//! one; the first reason of the winning kind is the cause. A set-up
//! failure is the runner's `error`, never decided here.

pub mod cause;
pub mod outcome;
pub mod write_check;

pub mod bitmaps;
pub mod context;
pub mod coverage;
pub mod crypt;
pub mod guest;
pub mod open;
pub mod write;

use crate::runner::adapter::Capabilities;
use crate::runner::observation::Observation;
use crate::runner::process::case_env;
use crate::runner::process::signal_name;
use cause::{Check, ImageFacts, ModelBitmap};
use context::find_name;
pub use context::Context;
use generator::Expected;
use outcome::Reasons;
pub use outcome::{Outcome, OutcomeKind};
use spec_model::obligations::Kind;
use spec_model::{Rule, Severity};
use std::path::Path;

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

/// The kind of the implementation behind `caps` for an image with
/// `facts`: a writer if it writes guest data, bitmaps-aware if it reads
/// bitmap metadata, holding the key of an encrypted image if it is given
/// the case's passphrase ([`case_env::current`]) and uses it.
pub fn kind_of(caps: &Capabilities, facts: Option<&ImageFacts>, secret: bool) -> Kind {
    let encrypted = facts.is_some_and(|f| f.crypt_method != 0);
    Kind {
        writer: caps.write_guest_data,
        bitmaps_aware: caps.read_metadata,
        holds_key: encrypted.then_some(caps.uses_secret && secret),
    }
}

/// As [`judge_in`], with the context read from `image` (the case's image,
/// not the implementation's copy) and the adapter's capabilities; the
/// passphrase is the case's this thread runs ([`case_env`]).
pub fn judge_image(
    expected: &Expected,
    obs: &Observation,
    image: &Path,
    caps: Capabilities,
) -> Outcome {
    let read = ImageFacts::read(image);
    let model = read.as_ref().map(|(_, u)| u.as_slice());
    let facts = read.as_ref().map(|(f, _)| f);
    judge_in(
        expected,
        obs,
        &Context {
            model,
            facts,
            supported_incompatible: caps.incompatible_features_supported,
            // A program that says it cannot decrypt holds no usable key.
            kind: Some(kind_of(
                &caps,
                facts,
                case_env::current().is_some() && !obs.cannot_decrypt,
            )),
        },
    )
}

/// Judges one observation against the expected verdict, in `cx`; with the
/// implementation's kind known, lists every obligation binding it.
pub fn judge_in(expected: &Expected, obs: &Observation, cx: &Context) -> Outcome {
    let mut outcome = decide(expected, obs, cx);
    if let Some(k) = cx.kind {
        outcome.obligations = coverage::states(k, expected, obs, cx);
    }
    outcome
}

/// The crash, hang and protocol outcomes, whatever the image.
fn ended_badly(obs: &Observation, cx: &Context) -> Option<Outcome> {
    let last_line = || {
        obs.stderr_excerpt
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::trim)
    };
    let hint = || last_line().map(|l| format!("last stderr line: {l}"));
    if let Some(why) = &obs.not_started {
        return Some(Outcome::new(
            OutcomeKind::Error,
            vec![
                format!("not started: {why}"),
                "the adapter would not start the implementation on this image: nothing was judged"
                    .into(),
            ],
            cx.cause(Check::SetUp, Some(why)),
        ));
    }
    if obs.timed_out {
        let mut d = vec![match obs.stalled_ms {
            Some(spun) => format!(
                "a program spun {spun} ms of processor time without a read, a write or a wait \
                 and was killed with its process group as a hang, before the time limit \
                 (run --stall)"
            ),
            None => {
                "a program ran past the time limit and was killed with its process group".to_owned()
            }
        }];
        d.extend(hint());
        return Some(Outcome::new(
            OutcomeKind::Hang,
            d,
            cx.cause(Check::Timeout, None),
        ));
    }
    if let Some(sig) = obs.signal {
        let name = signal_name(sig);
        let mut d = vec![format!("killed by signal {sig} ({name})")];
        d.extend(obs.sanitizer.clone());
        // The signal and the last line the program wrote before it (a
        // panic message, an assertion): two different crashes that die of
        // the same signal are two buckets.
        let message = match last_line() {
            Some(l) => format!("{name}: {l}"),
            None => name.to_owned(),
        };
        d.extend(hint());
        return Some(Outcome::new(
            OutcomeKind::Crash,
            d,
            cx.cause(Check::Signal, Some(&message)),
        ));
    }
    if let Some(s) = &obs.sanitizer {
        return Some(Outcome::new(
            OutcomeKind::Crash,
            vec![format!("sanitizer report: {s}")],
            cx.cause(Check::Sanitizer, s.lines().next()),
        ));
    }
    if let Some(p) = &obs.protocol_error {
        return Some(Outcome::new(
            OutcomeKind::Crash,
            vec![format!("no usable answer: {p}")],
            cx.cause(Check::Protocol, Some(p)),
        ));
    }
    None
}

fn decide(e: &Expected, obs: &Observation, cx: &Context) -> Outcome {
    if let Some(o) = ended_badly(obs, cx) {
        return o;
    }
    if let Some(o) = write::corrupting(obs, cx) {
        return o;
    }
    let aware = cx.bitmaps_aware(obs.bitmaps_unaware);
    // A bitmap's flags mean nothing to a bitmaps-unaware implementation.
    let unaware_facts = cx.facts.map(|f| ImageFacts {
        extra_data_compatible: false,
        bitmap_over_512mib: false,
        ..*f
    });
    let unaware_cx = Context {
        facts: unaware_facts.as_ref(),
        ..*cx
    };
    let cx = if aware { cx } else { &unaware_cx };
    let mut r = cx.reasons();
    open::opened_unsupported(cx, obs.opened, &mut r);
    if crypt::keyless(cx, obs, &mut r) {
        return r.finish();
    }
    crypt::with_key(cx, obs, &mut r);
    match e.verdict {
        spec_model::Verdict::Valid if aware => valid(e, obs, cx, r),
        spec_model::Verdict::Valid => unaware_valid(e, obs, cx, r),
        spec_model::Verdict::Invalid if aware => {
            bitmaps::invalid(e, obs, cx, &mut r);
            r.finish()
        }
        spec_model::Verdict::Invalid => unaware_invalid(e, obs, cx, r),
        v => recorded(v, e, obs, cx, aware, r),
    }
}

/// The rules among the expected ones the spec is silent about.
fn unspecified_rules(e: &Expected) -> Vec<&str> {
    e.rules
        .iter()
        .filter(|r| {
            Rule::from_id(r).is_some_and(|r| r.severities().contains(&Severity::Unspecified))
        })
        .map(String::as_str)
        .collect()
}

/// An image the spec is silent about: kept with what happened, its cause
/// naming the rules the spec is silent on (`unspecified:RULE`), one bucket
/// per such rule. A bitmap listed under its name cut at a NUL byte is a
/// mismatch all the same: the name occupies name_size bytes whatever
/// bytes they are.
fn recorded(
    v: spec_model::Verdict,
    e: &Expected,
    obs: &Observation,
    cx: &Context,
    aware: bool,
    mut r: Reasons,
) -> Outcome {
    if aware {
        if let Some(m) = cx.model {
            for b in &obs.bitmaps {
                let found = find_name(m.iter().map(|x| x.name.as_str()).enumerate(), &b.name);
                if let Some((i, true)) = found {
                    r.mismatch
                        .push(Check::NameCut, context::name_cut(&b.name, &m[i].name));
                }
            }
        }
    }
    if !r.lenient.is_empty() || !r.mismatch.is_empty() {
        return r.finish();
    }
    let mut d = vec![format!(
        "the spec is silent ({}): {}",
        v.as_str(),
        summary(obs)
    )];
    if let Some(g) = obs.guest.as_ref().filter(|_| !aware) {
        d.extend(guest::data_differences(g));
        d.extend(g.read_errors.iter().cloned());
    }
    if !e.rules.is_empty() {
        d.push(format!("rules: {}", e.rules.join(", ")));
    }
    let msg = (!obs.opened).then_some(obs.error.as_deref()).flatten();
    let mut features = cx.features();
    features.extend(
        unspecified_rules(e)
            .into_iter()
            .map(|r| format!("unspecified:{r}")),
    );
    features.sort();
    features.dedup();
    let cause = cx.cause(Check::Silent, msg).with_features(&features);
    Outcome::new(OutcomeKind::Recorded, d, cause)
}

/// One line on what the implementation did.
fn summary(obs: &Observation) -> String {
    if let Some(err) = obs.refusal() {
        return format!("refused to open ({err})");
    }
    let used = obs.bitmaps.iter().filter(|b| b.used()).count();
    format!(
        "opened, listed {} bitmap(s), used {used}",
        obs.bitmaps.len()
    )
}

/// A conforming image, for an implementation that reads bitmaps.
fn valid(e: &Expected, obs: &Observation, cx: &Context, mut r: Reasons) -> Outcome {
    if let Some(err) = obs.refusal() {
        open::refused_valid(cx, e, true, err, &mut r);
        return r.finish();
    }
    guest::virtual_size(cx, obs, &mut r);
    match e.bitmaps_extension {
        spec_model::ExtensionState::Absent => {
            if !obs.bitmaps.is_empty() {
                r.mismatch.push(
                    Check::ExtraBitmap,
                    format!(
                        "lists bitmaps the image does not have: {}",
                        bitmaps::names(&obs.bitmaps)
                    ),
                );
            }
        }
        spec_model::ExtensionState::Inconsistent => bitmaps::inconsistent(obs, cx, &mut r),
        _ => bitmaps::compare_bitmaps(e, obs, cx, &open::limit_rules(e, true), &mut r),
    }
    if r.pass.is_empty() && r.lenient.is_empty() && r.mismatch.is_empty() && r.strict.is_empty() {
        r.pass.push(Check::Allowed, summary(obs));
    }
    r.finish()
}

/// A conforming image, for an implementation that does not read bitmaps:
/// it must open (unless the spec requires the refusal or a limit outside
/// the bitmaps extension excuses it) and read as the model reads it.
fn unaware_valid(e: &Expected, obs: &Observation, cx: &Context, mut r: Reasons) -> Outcome {
    if let Some(err) = obs.refusal() {
        open::refused_valid(cx, e, false, err, &mut r);
        return r.finish();
    }
    guest::virtual_size(cx, obs, &mut r);
    match &obs.guest {
        Some(g) => guest::compared(g, &open::limit_rules(e, false), &mut r),
        None => r
            .pass
            .push(Check::Allowed, "opened the conforming image".to_owned()),
    }
    r.finish()
}

/// An invalid image, for an implementation that does not read bitmaps: it
/// may refuse it or read it; guest data read is judged only when every
/// broken rule is a bitmaps rule (the mapping itself is intact).
fn unaware_invalid(e: &Expected, obs: &Observation, cx: &Context, mut r: Reasons) -> Outcome {
    let rules = e.rules.join(", ");
    if let Some(err) = obs.refusal() {
        open::refused_invalid(&rules, err, &mut r);
        return r.finish();
    }
    let mapping_intact = !e.rules.is_empty() && e.rules.iter().all(|x| x.starts_with("bitmaps."));
    match &obs.guest {
        Some(g) if mapping_intact => {
            guest::virtual_size(cx, obs, &mut r);
            for d in guest::data_differences(g) {
                r.mismatch.push(
                    Check::GuestData,
                    format!("{d} (the image breaks only bitmaps rules: {rules})"),
                );
            }
            if !guest::data_differs(g) {
                r.pass.push(
                    Check::Allowed,
                    format!(
                        "opened the invalid image ({rules}) and {}",
                        guest::read_as_model(g)
                    ),
                );
            }
        }
        Some(g) if guest::data_differs(g) => r.pass.push(
            Check::Allowed,
            format!(
                "opened the invalid image ({rules}); its guest data differs from the model's, not judged: {}",
                guest::data_differences(g).join("; ")
            ),
        ),
        Some(g) => r.pass.push(
            Check::Allowed,
            format!(
                "opened the invalid image ({rules}) and {}",
                guest::read_as_model(g)
            ),
        ),
        None => r
            .pass
            .push(Check::Allowed, format!("opened the invalid image ({rules})")),
    }
    r.finish()
}
