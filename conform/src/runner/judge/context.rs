//! What the judge ([`super::judge`]) knows about a case besides the
//! expectation and the observation ([`Context`]: the model's per-bitmap
//! usability, the image's header facts, the incompatible features the
//! implementation supports), the refusals that context explains, and the
//! matching of bitmap names an implementation cut at a NUL byte.

use super::cause::{describe_incompatible, Cause, Check, ImageFacts, ModelBitmap};
use super::outcome::Reasons;
use super::text::short;

/// What the judge may know besides the expectation and the observation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The model's view of every bitmap of the case's image: usability
    /// for invalid cases whose manifest entry lists no bitmaps, and why a
    /// bitmap must not be used for every case.
    pub model: Option<&'a [ModelBitmap]>,
    /// The image's header and directory facts.
    pub facts: Option<&'a ImageFacts>,
    /// The incompatible feature bits the implementation supports
    /// ([`super::adapter::Capabilities::incompatible_features_supported`]).
    pub supported_incompatible: Option<u64>,
}

impl Context<'_> {
    /// The image features a cause names: those of [`ImageFacts::features`]
    /// less the incompatible bits the implementation is known to support
    /// (incidental to whatever it did).
    pub fn features(&self) -> Vec<String> {
        let Some(f) = self.facts else {
            return Vec::new();
        };
        let supported = self.supported_incompatible.unwrap_or(0);
        ImageFacts {
            incompatible: f.incompatible & !supported,
            ..*f
        }
        .features()
    }

    /// Why the model says the bitmap named `name` (as the image has it)
    /// must not be used; `fallback` when the model has no word on it.
    pub fn why_unusable(&self, name: &str, fallback: &str) -> String {
        self.model
            .and_then(|m| m.iter().find(|b| b.name == name))
            .and_then(|b| b.why_unusable.clone())
            .unwrap_or_else(|| fallback.to_owned())
    }

    pub fn reasons(&self) -> Reasons {
        Reasons::with_features(self.features())
    }

    /// A cause from `check`, naming the image's features where the check
    /// does ([`Check::names_image_features`]).
    pub fn cause(&self, check: Check, message: Option<&str>) -> Cause {
        let features = if check.names_image_features() {
            self.features()
        } else {
            Vec::new()
        };
        Cause::new(check, message).with_features(&features)
    }

    /// When a refusal (`error`) is one the spec requires, because the
    /// image sets incompatible feature bits the implementation does not
    /// support (the header section: an implementation must fail to open
    /// an image with an incompatible bit it does not know), the reason.
    /// Without the adapter's word on what it supports, a message naming
    /// "incompatible" counts as that refusal.
    pub fn required_refusal(&self, error: &str) -> Option<String> {
        let bits = self.facts?.incompatible;
        let unsupported = match self.supported_incompatible {
            Some(s) => bits & !s,
            None if error.to_ascii_lowercase().contains("incompatible") => bits,
            None => 0,
        };
        if unsupported == 0 {
            return None;
        }
        let plural = if unsupported.count_ones() > 1 {
            "s"
        } else {
            ""
        };
        Some(format!(
            "refused: incompatible feature{plural} {}, which it does not support; the spec requires that refusal: {error}",
            describe_incompatible(unsupported)
        ))
    }

    /// A refusal to open a conforming image: a pass when the spec requires
    /// it or a documented limit allows it, else strict.
    pub fn refused_valid(&self, err: &str, limits: &[&str], r: &mut Reasons) {
        if let Some(why) = self.required_refusal(err) {
            r.pass.push_msg(Check::UnsupportedFeature, Some(err), why);
        } else if limits.is_empty() {
            let flag = if self.facts.is_some_and(|f| f.extra_data_compatible) {
                " (a bitmap has extra data with extra_data_compatible, flag bit 2, set: a reader may ignore that extra data)"
            } else {
                ""
            };
            r.strict.push_msg(
                Check::Open,
                Some(err),
                format!("refused to open a conforming image{flag}: {err}"),
            );
        } else {
            r.pass.push_msg(
                Check::Open,
                Some(err),
                format!(
                    "refused to open a conforming image beyond documented limits ({}): {err}",
                    limits.join(", ")
                ),
            );
        }
    }
}

/// The part of a bitmap name before its first NUL byte, when it has one.
pub fn cut_at_nul(name: &str) -> Option<&str> {
    name.find('\0').map(|i| &name[..i])
}

/// Where `name` (as an implementation listed it) is among `names`: by
/// equality, else as a name cut at its NUL byte (the flag says which).
pub fn find_name<'a>(
    mut names: impl Iterator<Item = (usize, &'a str)> + Clone,
    name: &str,
) -> Option<(usize, bool)> {
    if let Some((i, _)) = names.clone().find(|(_, n)| *n == name) {
        return Some((i, false));
    }
    names
        .find(|(_, n)| cut_at_nul(n) == Some(name))
        .map(|(i, _)| (i, true))
}

pub fn name_cut(listed: &str, full: &str) -> String {
    format!(
        "listed {} for the bitmap named {}: name cut at the NUL byte",
        short(listed),
        short(full)
    )
}
