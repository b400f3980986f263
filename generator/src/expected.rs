//! What a conforming checker must say about an image, derived from the
//! spec (and, for mutants, from the targeted rule's severity), never from
//! running the model. This is the `expected` object of the corpus manifest.

use crate::spec::ImageSpec;
use serde::{Deserialize, Serialize};
use spec_model::{BitmapReport, ExtensionState, Report, Rule, Severity, Verdict};
use std::fmt;

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

impl ExpectedBitmap {
    /// The verdict's entry for a bitmap the model reported.
    pub fn from_report(b: &BitmapReport) -> ExpectedBitmap {
        ExpectedBitmap {
            name: b.name.clone(),
            granularity_bits: b.granularity_bits,
            usable: b.usable,
            flags: ExpectedFlags {
                in_use: b.flags.in_use,
                auto: b.flags.auto,
            },
            content_sha256: b.contents.content_sha256.clone(),
            set_bits: b.contents.set_bits,
        }
    }

    /// Whether the model's entry `got` says what this one expects.
    pub fn matches(&self, got: &BitmapReport) -> bool {
        got.name == self.name
            && got.granularity_bits == self.granularity_bits
            && got.flags.in_use == self.flags.in_use
            && got.flags.auto == self.flags.auto
            && got.usable == self.usable
            && got.contents.content_sha256 == self.content_sha256
            && got.contents.set_bits == self.set_bits
    }
}

/// [`Verdict`] in the manifest: the same lowercase words spec-model
/// serialises it as.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Verdict", rename_all = "lowercase")]
enum VerdictDef {
    Valid,
    Invalid,
    Unspecified,
}

/// [`ExtensionState`] in the manifest, as [`VerdictDef`].
#[derive(Serialize, Deserialize)]
#[serde(remote = "ExtensionState", rename_all = "lowercase")]
enum ExtensionStateDef {
    Absent,
    Consistent,
    Inconsistent,
}

/// The word the verdict contract uses for an extension state.
pub fn extension_name(state: ExtensionState) -> &'static str {
    match state {
        ExtensionState::Absent => "absent",
        ExtensionState::Consistent => "consistent",
        ExtensionState::Inconsistent => "inconsistent",
    }
}

/// The manifest's `expected` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// `valid`, `invalid` or `unspecified`.
    #[serde(with = "VerdictDef")]
    pub verdict: Verdict,
    /// Rule IDs a conforming checker must report (at least these).
    pub rules: Vec<String>,
    /// `absent`, `consistent` or `inconsistent`.
    #[serde(with = "ExtensionStateDef")]
    pub bitmaps_extension: ExtensionState,
    /// For valid and unspecified cases; content fields only for usable bitmaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmaps: Option<Vec<ExpectedBitmap>>,
}

/// The verdict that findings of these severities imply.
pub fn verdict_for(severities: impl IntoIterator<Item = Severity>) -> Verdict {
    let mut v = Verdict::Valid;
    for s in severities {
        match s {
            Severity::Error => return Verdict::Invalid,
            Severity::Unspecified => v = Verdict::Unspecified,
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
        verdict: verdict_for(implied.iter().map(|(_, s)| *s)),
        rules: implied.iter().map(|(r, _)| r.id().to_string()).collect(),
        bitmaps_extension: if spec.bitmaps.is_empty() {
            ExtensionState::Absent
        } else {
            ExtensionState::Consistent
        },
        bitmaps: Some(bitmaps(spec)),
    }
}

impl Expected {
    /// What the reference model says of an image, as an expectation (for
    /// images whose expectation is not known by construction): its
    /// verdict and extension state, every rule it reports except leaks
    /// (sorted), and its bitmaps unless the image is invalid.
    pub fn from_report(r: &Report) -> Expected {
        let mut rules: Vec<String> = r
            .findings
            .iter()
            .filter(|f| f.severity != Severity::Leak)
            .map(|f| f.rule.id().to_string())
            .collect();
        rules.sort();
        rules.dedup();
        Expected {
            verdict: r.verdict,
            rules,
            bitmaps_extension: r.bitmaps_extension,
            bitmaps: (r.verdict != Verdict::Invalid)
                .then(|| r.bitmaps.iter().map(ExpectedBitmap::from_report).collect()),
        }
    }

    /// Where the model's report `r` departs from this expectation: the
    /// [`verdict_differences`](Self::verdict_differences), then the
    /// [`bitmap_differences`](Self::bitmap_differences). Empty when the
    /// report conforms.
    pub fn differences(&self, r: &Report) -> Vec<Difference> {
        let mut out = self.verdict_differences(r);
        out.extend(self.bitmap_differences(r));
        out
    }

    /// The verdict and extension state when they differ, every expected
    /// rule `r` does not report (at any severity), and, for an invalid
    /// expectation, every error `r` reports that is not expected.
    pub fn verdict_differences(&self, r: &Report) -> Vec<Difference> {
        let mut out = Vec::new();
        if r.verdict != self.verdict {
            out.push(Difference::Verdict {
                got: r.verdict,
                want: self.verdict,
            });
        }
        if r.bitmaps_extension != self.bitmaps_extension {
            out.push(Difference::Extension {
                got: r.bitmaps_extension,
                want: self.bitmaps_extension,
            });
        }
        for rule in &self.rules {
            if !r.findings.iter().any(|f| f.rule.id() == rule) {
                out.push(Difference::RuleMissing(rule.clone()));
            }
        }
        if self.verdict == Verdict::Invalid {
            for rule in r.rules_with(Severity::Error) {
                if !self.rules.iter().any(|x| x == rule) {
                    out.push(Difference::UnexpectedError(rule));
                }
            }
        }
        out
    }

    /// When bitmaps are expected: a different number of them, and every
    /// entry (in directory order) that does not [match](ExpectedBitmap::matches).
    pub fn bitmap_differences(&self, r: &Report) -> Vec<Difference> {
        let mut out = Vec::new();
        let Some(want) = &self.bitmaps else {
            return out;
        };
        if want.len() != r.bitmaps.len() {
            out.push(Difference::BitmapCount {
                got: r.bitmaps.len(),
                want: want.len(),
            });
        }
        for (got, w) in r.bitmaps.iter().zip(want) {
            if !w.matches(got) {
                out.push(Difference::Bitmap(Box::new((got.clone(), w.clone()))));
            }
        }
        out
    }
}

/// One way a model report departs from an [`Expected`]. Its `Display` is
/// the `corpus verify` message; the alternate form (`{:#}`) shows both
/// sides of a differing bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    Verdict {
        got: Verdict,
        want: Verdict,
    },
    Extension {
        got: ExtensionState,
        want: ExtensionState,
    },
    /// An expected rule not reported at all.
    RuleMissing(String),
    /// An error reported for an invalid image that the expectation does
    /// not list.
    UnexpectedError(&'static str),
    BitmapCount {
        got: usize,
        want: usize,
    },
    /// A bitmap entry (as reported, as expected) that differs.
    Bitmap(Box<(BitmapReport, ExpectedBitmap)>),
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Verdict { got, want } => {
                write!(f, "verdict {} (expected {})", got.as_str(), want.as_str())
            }
            Difference::Extension { got, want } => write!(
                f,
                "bitmaps_extension \"{}\" (expected {})",
                extension_name(*got),
                extension_name(*want)
            ),
            Difference::RuleMissing(rule) => write!(f, "rule {rule} not reported"),
            Difference::UnexpectedError(rule) => write!(f, "unexpected error {rule}"),
            Difference::BitmapCount { got, want } => {
                write!(f, "{got} bitmaps (expected {want})")
            }
            Difference::Bitmap(b) if f.alternate() => {
                write!(f, "bitmap differs:\n got {:?}\nwant {:?}", b.0, b.1)
            }
            Difference::Bitmap(b) => {
                write!(f, "bitmap {:?} differs from the manifest", b.1.name)
            }
        }
    }
}
