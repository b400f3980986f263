//! What a conforming checker must say about an image, derived from the
//! spec (and, for mutants, from the targeted rule's severity), never from
//! running the model. This is the `expected` object of the corpus manifest.

use crate::spec::ImageSpec;
use serde::{Deserialize, Serialize};
use spec_model::{Rule, Severity};

/// The expected verdict entry of one bitmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedBitmap {
    pub name: String,
    pub granularity_bits: u8,
    pub usable: bool,
    pub flags: ExpectedFlags,
    /// Present only for usable bitmaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_bits: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedFlags {
    pub in_use: bool,
    pub auto: bool,
}

/// The manifest's `expected` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// `valid`, `invalid` or `unspecified`.
    pub verdict: String,
    /// Rule IDs a conforming checker must report (at least these).
    pub rules: Vec<String>,
    /// `absent`, `consistent` or `inconsistent`.
    pub bitmaps_extension: String,
    /// For valid and unspecified cases; content fields only for usable bitmaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmaps: Option<Vec<ExpectedBitmap>>,
}

/// The verdict that findings of these severities imply.
pub fn verdict_for(severities: impl IntoIterator<Item = Severity>) -> &'static str {
    let mut v = "valid";
    for s in severities {
        match s {
            Severity::Error => return "invalid",
            Severity::Unspecified => v = "unspecified",
            _ => {}
        }
    }
    v
}

/// The bitmaps a valid image built from `spec` holds, in directory order.
pub fn bitmaps(spec: &ImageSpec) -> Vec<ExpectedBitmap> {
    spec.bitmaps
        .iter()
        .map(|b| {
            let usable = !b.in_use && (b.extra_data.is_empty() || b.extra_data_compatible);
            let geo = spec.geometry(b);
            let (sha, bits) = if usable {
                let (h, n) =
                    crate::contents::expected_digest(&b.contents.ranges(geo.nbits()), geo.nbits());
                (Some(h), Some(n))
            } else {
                (None, None)
            };
            ExpectedBitmap {
                name: String::from_utf8_lossy(&b.name).into_owned(),
                granularity_bits: b.granularity_bits,
                usable,
                flags: ExpectedFlags {
                    in_use: b.in_use,
                    auto: b.auto,
                },
                content_sha256: sha,
                set_bits: bits,
            }
        })
        .collect()
}

/// The rules (with severity) that a valid image built from `spec` must be
/// reported for: its notes, limits and unspecified parts.
pub fn implied_rules(spec: &ImageSpec) -> Vec<(Rule, Severity)> {
    let mut out = Vec::new();
    if spec.cluster_bits > spec_model::header::QEMU_MAX_CLUSTER_BITS {
        out.push((Rule::HeaderClusterBits, Severity::Limit));
    }
    if spec.size == 0 && !spec.bitmaps.is_empty() {
        out.push((Rule::BitmapsDirTableSize, Severity::Unspecified));
    }
    for b in &spec.bitmaps {
        if u64::from(b.bitmap_type) != spec_model::fields::bitmap_entry::TYPE_DIRTY_TRACKING {
            out.push((Rule::BitmapsDirType, Severity::Error));
        }
        if !(9..=31).contains(&b.granularity_bits) {
            out.push((Rule::BitmapsDirGranularity, Severity::Limit));
        }
        if b.name.len() > 1023 {
            out.push((Rule::BitmapsDirNameLimit, Severity::Limit));
        }
        if b.name.contains(&0) || std::str::from_utf8(&b.name).is_err() {
            out.push((Rule::BitmapsDirNameBytes, Severity::Unspecified));
        }
        if !b.extra_data.is_empty() {
            out.push((Rule::BitmapsDirExtraData, Severity::Note));
        }
        if b.in_use {
            out.push((Rule::BitmapsDirInUse, Severity::Note));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The expected verdict of an image built from `spec` unchanged.
pub fn for_spec(spec: &ImageSpec) -> Expected {
    let implied = implied_rules(spec);
    Expected {
        verdict: verdict_for(implied.iter().map(|(_, s)| *s)).to_string(),
        rules: implied.iter().map(|(r, _)| r.id().to_string()).collect(),
        bitmaps_extension: if spec.bitmaps.is_empty() {
            "absent"
        } else {
            "consistent"
        }
        .to_string(),
        bitmaps: Some(bitmaps(spec)),
    }
}
