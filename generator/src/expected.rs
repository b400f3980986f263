//! What a conforming checker must say about an image built from a spec,
//! derived from the spec alone.

use crate::spec::ImageSpec;
use serde::Serialize;

/// The expected verdict entry of one bitmap (the manifest's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedBitmap {
    pub name: String,
    pub granularity_bits: u8,
    pub usable: bool,
    pub flags: ExpectedFlags,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_bits: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExpectedFlags {
    pub in_use: bool,
    pub auto: bool,
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
