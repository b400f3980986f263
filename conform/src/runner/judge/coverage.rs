//! Which obligations a case exercised for an implementation: every
//! obligation that binds its kind ([`spec_model::obligations::binding`])
//! is listed in the outcome, exercised or not, with why not. An
//! obligation not exercised is never counted as met.

use super::context::Context;
use crate::runner::judge::outcome::ObligationState;
use crate::runner::observation::{GuestCheck, Observation};
use generator::Expected;
use spec_model::obligations::{binding, Kind};
use spec_model::{ExtensionState, Obligation, Verdict};

/// Why a case did not exercise an obligation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not exercised: {0}")]
pub struct NotExercised(pub String);

/// Whether a case can exercise `o` for an implementation of kind `k` that
/// does all its kind allows (opens the image, reads it, writes it): from
/// the manifest's expectation and the model's facts alone (`cx.facts`,
/// `cx.model`), so that the obligations table of `docs/findings.md` fills
/// in from the corpus. `Err(why)` when it cannot.
pub fn case_exercises(
    o: Obligation,
    k: Kind,
    e: &Expected,
    cx: &Context,
) -> Result<(), NotExercised> {
    let need = |ok: bool, why: &str| {
        if ok {
            Ok(())
        } else {
            Err(NotExercised(why.to_owned()))
        }
    };
    let model = cx.model.unwrap_or(&[]);
    let any_bitmaps = !model.is_empty() || e.bitmaps.as_ref().is_some_and(|b| !b.is_empty());
    let model_why = |token: &str| {
        model
            .iter()
            .any(|b| b.why_unusable.as_deref() == Some(token))
    };
    let consistent = e.bitmaps_extension == ExtensionState::Consistent;
    match o {
        Obligation::OpenUnknownIncompatible => need(
            cx.unsupported_incompatible() != 0,
            "the image sets no incompatible bit it does not support",
        ),
        Obligation::OpenConforming => {
            need(e.verdict == Verdict::Valid, "the image does not conform")
        }
        Obligation::WriteClearUnknownAutoclear => {
            let mut unknown = cx.facts.map_or(0, |f| f.autoclear) & !0b10;
            if k.bitmaps_aware {
                unknown &= !1;
            }
            need(k.writer, "it does not write").and(need(
                unknown != 0,
                "the image sets no auto-clear bit it does not know",
            ))
        }
        Obligation::WriteLeavesValid => need(k.writer, "it does not write").and(need(
            e.verdict != Verdict::Invalid,
            "the image was invalid before the write",
        )),
        Obligation::CryptDecryptOnRead => need(
            cx.facts.is_some_and(|f| f.crypt_method != 0),
            "the image is not encrypted",
        ),
        Obligation::CryptNoPlaintext => need(k.writer, "it does not write").and(need(
            cx.facts.is_some_and(|f| f.crypt_method != 0),
            "the image is not encrypted",
        )),
        Obligation::CryptRefuseWithoutKey => Ok(()),
        Obligation::KeepUnknownAsIs => need(k.writer, "it does not write").and(need(
            cx.facts.is_some_and(|f| f.keeps_unknown),
            "the image has no unknown header extension and no bitmap extra data",
        )),
        Obligation::GuestVirtualSize | Obligation::GuestReadAsMapped => {
            need(cx.facts.is_some(), "the model finds no header")
        }
        Obligation::GuestShortBackingZeros => need(
            cx.facts.is_some_and(|f| f.backing_end.is_some()),
            "the image has no backing file shorter than its disk",
        ),
        Obligation::BitmapsIgnoreInconsistent => need(
            e.bitmaps_extension == ExtensionState::Inconsistent,
            "the bitmaps extension is not inconsistent",
        ),
        Obligation::BitmapsNeverUseInUse => need(
            model_why("in_use")
                || e.bitmaps
                    .as_ref()
                    .is_some_and(|b| b.iter().any(|x| x.flags.in_use)),
            "no bitmap is in_use",
        ),
        Obligation::BitmapsNeverUseIncompatibleExtraData => need(
            model_why("extra-data"),
            "no bitmap has extra data without extra_data_compatible",
        ),
        Obligation::BitmapsNeverUseInvalid => need(
            e.verdict == Verdict::Invalid && any_bitmaps,
            "no bitmap of an invalid image",
        ),
        Obligation::BitmapsListAsStored => need(any_bitmaps, "the image has no bitmap"),
        Obligation::BitmapsReadContents => need(
            model.iter().any(|b| b.usable)
                || e.bitmaps
                    .as_ref()
                    .is_some_and(|b| b.iter().any(|x| x.usable)),
            "no usable bitmap",
        ),
        Obligation::BitmapsUseConforming => need(
            e.verdict == Verdict::Valid
                && e.bitmaps
                    .as_ref()
                    .is_some_and(|b| b.iter().any(|x| x.usable)),
            "no conforming usable bitmap",
        ),
        Obligation::BitmapsMarkWritten => need(k.writer, "it does not write").and(need(
            consistent && e.verdict != Verdict::Invalid && any_bitmaps,
            "no consistent bitmaps extension",
        )),
        Obligation::BitmapsMarkInUse | Obligation::BitmapsStoreOnClose => Err(NotExercised(
            "observed only by live sequences (campaign --sequences)".to_owned(),
        )),
        Obligation::BitmapsOpsAsModelled => need(
            e.verdict == Verdict::Valid && consistent,
            "bitmap operations run only on valid images with a consistent extension",
        ),
    }
}

/// Whether the observation shows `o` exercised, once the case can
/// exercise it ([`case_exercises`]).
fn observed(o: Obligation, obs: &Observation) -> Result<(), NotExercised> {
    let written = obs.write.as_ref().is_some_and(|w| w.written);
    let need = |ok: bool, why: &str| {
        if ok {
            Ok(())
        } else {
            Err(NotExercised(why.to_owned()))
        }
    };
    match o {
        Obligation::WriteClearUnknownAutoclear
        | Obligation::WriteLeavesValid
        | Obligation::KeepUnknownAsIs
        | Obligation::BitmapsMarkWritten => need(written, "nothing was written"),
        Obligation::CryptNoPlaintext => need(written, "nothing was written").and(need(
            obs.write.as_ref().is_some_and(|w| w.plaintext_searched),
            "the adapter does not say what it wrote, so the file was not searched for it",
        )),
        Obligation::GuestVirtualSize => need(
            super::guest::reported_size(obs).is_some()
                || obs
                    .write
                    .as_ref()
                    .is_some_and(|w| w.after.verdict_after.is_some()),
            "it reported no virtual size and no written copy was read",
        ),
        Obligation::GuestReadAsMapped => need(
            obs.guest.as_ref().is_some_and(|g| g.ranges_compared > 0),
            "no guest data was compared",
        ),
        Obligation::GuestShortBackingZeros => need(
            obs.guest.as_ref().is_some_and(|g| {
                g.past_backing_compared > 0
                    || g.read_errors.iter().any(|e| GuestCheck::past_backing(e))
            }),
            "it read no guest data past the end of the shorter backing file",
        ),
        Obligation::CryptDecryptOnRead => need(
            obs.guest
                .as_ref()
                .is_some_and(|g| g.ranges_compared > 0 || g.read_error_count > 0),
            "it read no allocated cluster of the encrypted disk",
        ),
        Obligation::BitmapsListAsStored => need(obs.opened, "it did not open the image"),
        Obligation::BitmapsReadContents => need(
            obs.bitmaps
                .iter()
                .any(|b| b.content_sha256.is_some() || b.dirty_ranges.is_some()),
            "no bitmap contents read",
        ),
        Obligation::BitmapsOpsAsModelled => {
            need(obs.ops.is_some(), "the bitmap-operations check did not run")
        }
        _ => Ok(()),
    }
}

/// Whether `o` was exercised by this case and observation; `Err(why)`
/// when it was not.
fn exercised(
    o: Obligation,
    k: Kind,
    e: &Expected,
    obs: &Observation,
    cx: &Context,
) -> Result<(), NotExercised> {
    case_exercises(o, k, e, cx).and_then(|()| observed(o, obs))
}

/// Every obligation binding `kind`, exercised or not.
pub fn states(kind: Kind, e: &Expected, obs: &Observation, cx: &Context) -> Vec<ObligationState> {
    binding(kind)
        .map(|o| match exercised(o, kind, e, obs, cx) {
            Ok(()) => ObligationState {
                id: o.id(),
                exercised: true,
                why_not: String::new(),
            },
            Err(NotExercised(why_not)) => ObligationState {
                id: o.id(),
                exercised: false,
                why_not,
            },
        })
        .collect()
}
