//! What the judge knows about a case besides the expectation and the
//! observation ([`Context`]: the model's per-bitmap usability, the image's
//! header facts, the implementation's kind and the incompatible features
//! it supports), and the matching of bitmap names an implementation cut at
//! a NUL byte.

use crate::runner::judge::cause::{Cause, Check, ImageFacts, ModelBitmap};
use crate::runner::judge::outcome::Reasons;
use crate::runner::text::short;
use spec_model::obligations::Kind;

/// The incompatible feature bits the spec defines (0-4); bits 5-63 are
/// reserved, so no implementation supports them.
pub const DEFINED_INCOMPATIBLE: u64 = 0x1f;

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
    /// ([`crate::runner::adapter::Capabilities::incompatible_features_supported`]).
    pub supported_incompatible: Option<u64>,
    /// The implementation's kind (writer, bitmaps-aware, holding the key):
    /// which obligations bind it. `None`: unknown (no obligation coverage
    /// is reported, and the observation's `bitmaps_unaware` decides).
    pub kind: Option<Kind>,
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

    /// The incompatible bits the image sets that the implementation does
    /// not support, as far as the judge can tell: with the adapter's word,
    /// every bit outside it (for an implementation that never writes, the
    /// dirty and corrupt bits count as understood: they only constrain
    /// refcounts and writes); without it, only the reserved bits 5-63.
    pub fn unsupported_incompatible(&self) -> u64 {
        let Some(f) = self.facts else { return 0 };
        let mut supported = self.supported_incompatible.unwrap_or(DEFINED_INCOMPATIBLE);
        if self.kind.is_some_and(|k| !k.writer) {
            supported |= 0b11;
        }
        f.incompatible & !supported
    }

    /// The image is encrypted and the implementation does not hold its key.
    pub fn keyless_encrypted(&self) -> bool {
        self.kind.is_some_and(|k| k.holds_key == Some(false))
    }

    /// The implementation reads bitmap metadata (its kind says so, else the
    /// observation's `bitmaps_unaware` flag, `unaware`, decides).
    pub fn bitmaps_aware(&self, unaware: bool) -> bool {
        self.kind.map_or(!unaware, |k| k.bitmaps_aware)
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

/// The reason text of a name listed cut at its NUL byte, with the spec's
/// word on it.
pub fn name_cut(listed: &str, full: &str) -> String {
    format!(
        "listed {} for the bitmap named {}: name cut at the NUL byte (the name occupies all name_size bytes, Bitmap directory)",
        short(listed),
        short(full)
    )
}
