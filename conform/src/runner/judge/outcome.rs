//! The outcomes of `DESIGN.md` ([`OutcomeKind`]), an outcome with its
//! reasons and its cause ([`Outcome`]), and the collector the judge files
//! reasons into while it decides ([`Reasons`]).

use crate::runner::judge::cause::{Cause, Check};
use serde::{Deserialize, Serialize};
use spec_model::Obligation;

/// One outcome of `DESIGN.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// Whether an obligation that binds the implementation was exercised by
/// the case, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObligationState {
    /// The obligation's ID ([`Obligation::id`]).
    pub id: &'static str,
    /// The case let the run observe it (met or broken: the outcome and
    /// its cause say which).
    pub exercised: bool,
    /// Why it was not exercised (empty when it was).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub why_not: String,
}

/// An outcome with every reason behind it and its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub detail: Vec<String>,
    /// What decided the outcome (added to the report after `detail`).
    pub cause: Cause,
    /// Every obligation that binds the implementation's kind, exercised by
    /// this case or not (never counted as met when not exercised); empty
    /// when the judge did not know the implementation's kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<ObligationState>,
}

impl Outcome {
    pub fn new(kind: OutcomeKind, detail: Vec<String>, cause: Cause) -> Outcome {
        Outcome {
            kind,
            detail,
            cause,
            obligations: Vec::new(),
        }
    }

    /// The cause signature: outcome, check, features, normalised message.
    pub fn signature(&self) -> String {
        self.cause.signature(self.kind.as_str())
    }

    /// [`Outcome::signature`] as a file name (the campaign's finding key).
    pub fn key(&self) -> String {
        self.cause.key(self.kind.as_str())
    }
}

/// One reason: the text for the report, the check it comes from and the
/// implementation's message behind it, if any.
#[derive(Debug, Clone)]
pub struct Reason {
    pub check: Check,
    pub message: Option<String>,
    pub text: String,
    /// Features of this reason alone, added to the image's when it is the
    /// cause (such as `unusable:in_use`).
    pub features: Vec<String>,
    /// The obligation the reason bears on (met for a pass, broken
    /// otherwise).
    pub obligation: Option<Obligation>,
}

/// The reasons for one outcome kind, in the order found.
#[derive(Debug, Clone, Default)]
pub struct Bucket(pub Vec<Reason>);

impl Bucket {
    /// Adds a reason without a message of the implementation, bearing on
    /// `check`'s usual obligation ([`usual_obligation`]).
    pub fn push(&mut self, check: Check, text: String) {
        self.push_msg(check, None, text);
    }

    /// Adds a `used-unusable` reason naming why the model says the bitmap
    /// must not be used (`why`, a [`crate::runner::judge::cause::ModelBitmap::why_unusable`]
    /// token) as the feature `unusable:WHY`; the obligation follows the
    /// reason ([`unusable_obligation`]).
    pub fn push_unusable(&mut self, why: &str, text: String) {
        self.0.push(Reason {
            check: Check::UsedUnusable,
            message: None,
            text,
            features: vec![format!("unusable:{why}")],
            obligation: Some(unusable_obligation(why)),
        });
    }

    /// Adds a reason that rests on the implementation's `message`.
    pub fn push_msg(&mut self, check: Check, message: Option<&str>, text: String) {
        self.push_for(usual_obligation(check), check, message, text);
    }

    /// Adds a reason bearing on obligation `o`.
    pub fn push_for(
        &mut self,
        o: Option<Obligation>,
        check: Check,
        message: Option<&str>,
        text: String,
    ) {
        self.0.push(Reason {
            check,
            message: message.map(str::to_owned),
            text,
            features: Vec::new(),
            obligation: o,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Collects reasons by outcome; the worst kind wins, and its first reason
/// is the cause (with the image's `features`).
#[derive(Default)]
pub struct Reasons {
    pub lenient: Bucket,
    pub mismatch: Bucket,
    pub strict: Bucket,
    pub pass: Bucket,
    /// The image features causes name ([`crate::runner::judge::cause::ImageFacts::features`]).
    pub features: Vec<String>,
}

impl Reasons {
    pub fn with_features(features: Vec<String>) -> Reasons {
        Reasons {
            features,
            ..Reasons::default()
        }
    }

    pub fn finish(self) -> Outcome {
        let (kind, first) = if !self.lenient.is_empty() {
            (OutcomeKind::Lenient, &self.lenient)
        } else if !self.mismatch.is_empty() {
            (OutcomeKind::Mismatch, &self.mismatch)
        } else if !self.strict.is_empty() {
            (OutcomeKind::Strict, &self.strict)
        } else {
            (OutcomeKind::Pass, &self.pass)
        };
        let cause = match first.0.first() {
            Some(r) => {
                let mut features = if r.check.names_image_features() {
                    self.features.clone()
                } else {
                    Vec::new()
                };
                features.extend(r.features.iter().cloned());
                features.sort();
                features.dedup();
                Cause::new(r.check, r.message.as_deref())
                    .with_features(&features)
                    .with_obligation(r.obligation)
            }
            None => Cause::default(),
        };
        let mut d: Vec<String> = first.0.iter().map(|r| r.text.clone()).collect();
        for (k, v) in [
            (OutcomeKind::Lenient, &self.lenient),
            (OutcomeKind::Mismatch, &self.mismatch),
            (OutcomeKind::Strict, &self.strict),
            (OutcomeKind::Pass, &self.pass),
        ] {
            if k != kind {
                d.extend(v.0.iter().map(|r| {
                    if k == OutcomeKind::Pass {
                        r.text.clone()
                    } else {
                        format!("also {k}: {}", r.text)
                    }
                }));
            }
        }
        Outcome::new(kind, d, cause)
    }
}

/// The obligation a reason from `check` usually bears on (a reason may
/// name another with [`Bucket::push_for`]); `None` for checks no
/// obligation covers (a crash, a hang, an image the spec is silent about).
pub fn usual_obligation(check: Check) -> Option<Obligation> {
    Some(match check {
        Check::Timeout
        | Check::Signal
        | Check::Sanitizer
        | Check::Protocol
        | Check::Silent
        | Check::SetUp
        | Check::Allowed => return None,
        Check::Write => Obligation::WriteLeavesValid,
        Check::BitmapOps => Obligation::BitmapsOpsAsModelled,
        Check::HeaderRewrite | Check::VirtualSize => Obligation::GuestVirtualSize,
        Check::Open => Obligation::OpenConforming,
        Check::UnsupportedFeature | Check::OpenedUnsupported => Obligation::OpenUnknownIncompatible,
        Check::NameCut | Check::ExtraBitmap | Check::Granularity | Check::Flags => {
            Obligation::BitmapsListAsStored
        }
        Check::MissingBitmap | Check::BitmapRefused => Obligation::BitmapsUseConforming,
        Check::Contents => Obligation::BitmapsReadContents,
        Check::UsedUnusable => Obligation::BitmapsNeverUseInvalid,
        Check::GuestData | Check::GuestRead => Obligation::GuestReadAsMapped,
        Check::Encrypted => Obligation::CryptRefuseWithoutKey,
    })
}

/// The obligation a bitmap used although it must not be breaks, from the
/// model's reason ([`crate::runner::judge::cause::ModelBitmap::why_unusable`]).
pub fn unusable_obligation(why: &str) -> Obligation {
    match why {
        "in_use" => Obligation::BitmapsNeverUseInUse,
        "extra-data" => Obligation::BitmapsNeverUseIncompatibleExtraData,
        "autoclear-clear" | "v2-image" => Obligation::BitmapsIgnoreInconsistent,
        _ => Obligation::BitmapsNeverUseInvalid,
    }
}
