//! Why an outcome is what it is, in a form two outcomes can be compared
//! by: the [`Cause`] (the check that decided, the implementation's own
//! message with its variable parts replaced, the image features involved)
//! and the facts about an image the causes draw on ([`ImageFacts`]). Two
//! findings with the same signature are one behaviour, the way crash
//! buckets group crashes by their stack.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The check that decided an outcome.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// A program ran out of time.
    Timeout,
    /// A program died of a signal.
    Signal,
    /// A sanitizer reported an error.
    Sanitizer,
    /// No usable answer from an exec program or probe.
    Protocol,
    /// The write check found the image wrong afterwards.
    Write,
    /// QEMU's bitmap operations left the image wrong.
    BitmapOps,
    /// A read-write open rewrote a header field.
    HeaderRewrite,
    /// The spec is silent about the image.
    Silent,
    /// The implementation refused to open the image.
    Open,
    /// It refused an image with incompatible features it does not support.
    UnsupportedFeature,
    /// It listed a bitmap under a name cut at a NUL byte.
    NameCut,
    /// It did not list a bitmap the image has.
    MissingBitmap,
    /// It listed a bitmap the image does not have.
    ExtraBitmap,
    /// A bitmap's granularity differs.
    Granularity,
    /// A bitmap's flags differ.
    Flags,
    /// A bitmap's contents differ.
    Contents,
    /// It refused to use a conforming bitmap.
    BitmapRefused,
    /// It used a bitmap that must not be used.
    UsedUnusable,
    /// Guest data read differs from the model's.
    GuestData,
    /// Guest data could not be read.
    GuestRead,
    /// It opened an image with an incompatible feature bit it does not
    /// support.
    OpenedUnsupported,
    /// It returned an encrypted image's payload without its key.
    Encrypted,
    /// It presents a virtual disk of another size than the header's.
    VirtualSize,
    /// The runner could not set the case up (outcome `error`).
    SetUp,
    /// Nothing wrong: what it did is allowed.
    #[default]
    Allowed,
}

impl Check {
    /// Whether a cause from this check names the image's features
    /// ([`ImageFacts::features`]): only refusals, where an incompatible bit
    /// or the `extra_data_compatible` flag is what the implementation
    /// reacted to. Elsewhere (a crash, a write, a contents difference)
    /// they are incidental and would split one behaviour into several
    /// buckets.
    pub fn names_image_features(self) -> bool {
        matches!(
            self,
            Check::Open
                | Check::UnsupportedFeature
                | Check::BitmapRefused
                | Check::Silent
                | Check::OpenedUnsupported
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Timeout => "timeout",
            Check::Signal => "signal",
            Check::Sanitizer => "sanitizer",
            Check::Protocol => "protocol",
            Check::Write => "write",
            Check::BitmapOps => "bitmap-ops",
            Check::HeaderRewrite => "header-rewrite",
            Check::Silent => "silent",
            Check::Open => "open",
            Check::UnsupportedFeature => "unsupported-feature",
            Check::NameCut => "name-cut",
            Check::MissingBitmap => "missing-bitmap",
            Check::ExtraBitmap => "extra-bitmap",
            Check::Granularity => "granularity",
            Check::Flags => "flags",
            Check::Contents => "contents",
            Check::BitmapRefused => "bitmap-refused",
            Check::UsedUnusable => "used-unusable",
            Check::GuestData => "guest-data",
            Check::GuestRead => "guest-read",
            Check::OpenedUnsupported => "opened-unsupported",
            Check::Encrypted => "encrypted",
            Check::VirtualSize => "virtual-size",
            Check::SetUp => "set-up",
            Check::Allowed => "allowed",
        }
    }
}

/// Why an outcome is what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// The check that decided.
    pub check: Check,
    /// The implementation's message behind it, normalised
    /// ([`normalise`]); empty when none is involved.
    pub message: String,
    /// The image features involved ([`ImageFacts::features`]), sorted.
    pub features: Vec<String>,
    /// The obligation ([`spec_model::Obligation`] ID) the outcome rests on:
    /// the one broken, for a non-pass outcome; empty when none applies (a
    /// crash, a hang, an image the spec is silent about).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub obligation: String,
}

impl Cause {
    pub fn new(check: Check, message: Option<&str>) -> Cause {
        Cause {
            check,
            message: message.map(normalise).unwrap_or_default(),
            features: Vec::new(),
            obligation: String::new(),
        }
    }

    /// Names the obligation the outcome rests on.
    pub fn with_obligation(mut self, o: Option<spec_model::Obligation>) -> Cause {
        self.obligation = o.map(|o| o.id().to_owned()).unwrap_or_default();
        self
    }

    /// Sets the image features involved.
    pub fn with_features(mut self, features: &[String]) -> Cause {
        self.features = features.to_vec();
        self
    }

    /// The readable signature after `outcome`:
    /// `outcome | check | features | message`, then `| obligation` when
    /// one is named.
    pub fn signature(&self, outcome: &str) -> String {
        let features = if self.features.is_empty() {
            "-".to_owned()
        } else {
            self.features.join("+")
        };
        let mut s = format!(
            "{outcome} | {} | {features} | {}",
            self.check.as_str(),
            self.message
        );
        if !self.obligation.is_empty() {
            s.push_str(" | ");
            s.push_str(&self.obligation);
        }
        s
    }

    /// The signature as a file name: outcome, check, the obligation (when
    /// one is named), features and the first 8 hex digits of the message's
    /// SHA-256, each part present only when there is one
    /// (`lenient--used-unusable--bitmaps.never-use-invalid--unusable_bitmaps.data.bounds`).
    pub fn key(&self, outcome: &str) -> String {
        let mut parts = vec![outcome.to_owned(), self.check.as_str().to_owned()];
        if !self.obligation.is_empty() {
            parts.push(self.obligation.clone());
        }
        if !self.features.is_empty() {
            parts.push(self.features.join("+").replace([':', '/', ' '], "_"));
        }
        if !self.message.is_empty() {
            let h = Sha256::digest(self.message.as_bytes());
            parts.push(hex::encode(&h[..4]));
        }
        parts.join("--")
    }
}

/// An error message with what varies between two occurrences of the same
/// error replaced: quoted text by `'_'`, paths by `<path>`, hexadecimal
/// numbers by `<hex>`, decimal numbers by `<n>` (digits that follow a
/// letter, as in `L1`, are part of a word and stay), bracketed lists by
/// `[_]` (a list of ranges varies in length), the length note of a
/// shortened name dropped; whitespace collapsed.
pub fn normalise(message: &str) -> String {
    let mut out = String::new();
    for word in message.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&normalise_word(word));
    }
    // Quoted text and lists may span words: replace after joining.
    let out = replace_quoted(&out).replace("... (<n> chars)", "");
    replace_lists(&out)
}

/// Every outermost `[...]` group replaced by `[_]`.
fn replace_lists(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '[' => {
                if depth == 0 {
                    out.push_str("[_]");
                }
                depth += 1;
            }
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn normalise_word(word: &str) -> String {
    let core = word.trim_matches(|c: char| ",.:;()[]".contains(c));
    if core.contains('/') && !core.starts_with(['\'', '"']) {
        return word.replace(core, "<path>");
    }
    let mut out = String::new();
    let chars: Vec<char> = word.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '0' && chars.get(i + 1).is_some_and(|x| *x == 'x' || *x == 'X') {
            let mut j = i + 2;
            while j < chars.len() && chars[j].is_ascii_hexdigit() {
                j += 1;
            }
            out.push_str("<hex>");
            i = j;
        } else if c.is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_alphabetic()) {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            out.push_str("<n>");
            i = j;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn replace_quoted(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find(['\'', '"']) {
        let q = rest[start..].chars().next().unwrap_or('\'');
        let after = &rest[start + 1..];
        match after.find(q) {
            Some(end) => {
                out.push_str(&rest[..start]);
                out.push(q);
                out.push('_');
                out.push(q);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// The names of the incompatible feature bits the spec defines.
pub fn incompatible_name(bit: u32) -> String {
    match bit {
        0 => "dirty".to_owned(),
        1 => "corrupt".to_owned(),
        2 => "external_data_file".to_owned(),
        3 => "compression_type".to_owned(),
        4 => "extended_l2".to_owned(),
        b => format!("bit_{b}"),
    }
}

/// The bits set in `bits`, as `name (bit N)`, joined by `, `.
pub fn describe_incompatible(bits: u64) -> String {
    (0..64)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| format!("{} (bit {b})", incompatible_name(b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// QEMU's cap on one bitmap's data in memory (512 MiB).
pub const QEMU_BITMAP_CAP: u64 = 512 << 20;

/// What the header and the bitmap directory say about an image, as far as
/// causes name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageFacts {
    pub version: u32,
    pub incompatible: u64,
    pub header_length: u32,
    /// Some bitmap has extra data and `extra_data_compatible` (flag bit
    /// 2) set: a reader may use it and ignore the extra data.
    pub extra_data_compatible: bool,
    /// Some bitmap's data (one bit per granule of the disk) is larger than
    /// 512 MiB: QEMU keeps each bitmap in memory and refuses those
    /// (`bitmap-over-512MiB`, a cause feature of refusals).
    pub bitmap_over_512mib: bool,
    /// The header's `autoclear_features` (0 for version 2).
    pub autoclear: u64,
    /// The header's `crypt_method` (0: the payload is not encrypted).
    pub crypt_method: u32,
    /// The header's virtual disk size.
    pub size: u64,
    /// Where a backing file shorter than the disk ends (its guest size),
    /// when the image has one: the rest reads as zeros where the image
    /// allocates nothing (`guest.short-backing-zeros`).
    pub backing_end: Option<u64>,
    /// The image holds something a writer must keep as it is
    /// (`keep.unknown-as-is`): a header extension of an unknown type or a
    /// bitmap's extra data.
    pub keeps_unknown: bool,
}

/// A bitmap as the reference model sees it: its name, whether it may be
/// used, and if not, why ([`ModelBitmap::why_unusable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelBitmap {
    pub name: String,
    pub usable: bool,
    /// Why the model says it must not be used, as a short token that
    /// names a cause feature (`unusable:TOKEN`): `v2-image` and
    /// `autoclear-clear` (an inconsistent extension: the bitmaps section
    /// of the spec says such a bitmap must not be used), the first error rule
    /// of the bitmaps extension in catalogue order (an invalid extension),
    /// `refcount.overlap` (a bitmap structure shares a cluster), `in_use`,
    /// `extra-data` (extra data without `extra_data_compatible`).
    pub why_unusable: Option<String>,
}

impl ImageFacts {
    /// Reads the facts of the image at `path` and the model's view of every
    /// bitmap; `None` when the model cannot read it.
    pub fn read(path: &Path) -> Option<(ImageFacts, Vec<ModelBitmap>)> {
        // Only a regular file, opened non-blocking, holes skipped.
        let model = crate::runner::corpus::image_state::open_model(path).ok()?;
        let report = model.report();
        let a = model.analysis();
        let mut facts = ImageFacts {
            extra_data_compatible: a
                .entries
                .iter()
                .any(|e| e.extra_data_compatible() && e.extra_data_size > 0),
            keeps_unknown: a.extensions.iter().any(|x| x.type_name == "unknown")
                || a.entries.iter().any(|e| e.extra_data_size > 0),
            // Without a header, every header fact is 0.
            ..ImageFacts::default()
        };
        if let Some(h) = a.header.as_ref() {
            facts.version = h.version;
            facts.incompatible = h.incompatible_features;
            facts.header_length = h.header_length;
            facts.autoclear = h.autoclear_features;
            facts.crypt_method = h.crypt_method;
            facts.size = h.size;
            facts.bitmap_over_512mib = a.entries.iter().any(|e| {
                let g = e.geometry(h.size, h.cluster_bits);
                g.nbits().div_ceil(8) > QEMU_BITMAP_CAP
            });
            if h.backing_file_offset != 0 {
                facts.backing_end = crate::runner::corpus::image_layers::open(path)
                    .ok()
                    .and_then(|layers| layers.backing_size())
                    .filter(|&b| b < h.size);
            }
        }
        let free_directory = directory_unallocated(&model);
        let bitmaps = report
            .bitmaps
            .iter()
            .map(|b| {
                let usable = b.usable && !free_directory;
                let why = if b.usable && free_directory {
                    Some("refcount.unallocated".to_owned())
                } else {
                    (!b.usable).then(|| why_unusable(report, &facts, b))
                };
                ModelBitmap {
                    name: b.name.clone(),
                    usable,
                    why_unusable: why,
                }
            })
            .collect();
        Some((facts, bitmaps))
    }

    /// The features a cause names, sorted: every incompatible bit set
    /// (`incompatible:NAME`) and `bitmap-over-512MiB`. Not the
    /// `extra_data_compatible` flag (an implementation that refuses extra
    /// data refuses it with or without the flag, in one message: one
    /// check, one bucket), the header length nor the version (an
    /// implementation that refuses either names it in its message, and
    /// elsewhere they split one behaviour into several buckets; a version
    /// 2 image's bitmaps are unusable for their own reason,
    /// `unusable:v2-image`).
    pub fn features(&self) -> Vec<String> {
        let mut f: Vec<String> = (0..64)
            .filter(|b| self.incompatible & (1 << b) != 0)
            .map(|b| format!("incompatible:{}", incompatible_name(b)))
            .collect();
        if self.bitmap_over_512mib {
            f.push("bitmap-over-512MiB".to_owned());
        }
        f.sort();
        f
    }
}

/// Whether a cluster of the bitmap directory has refcount 0 (a
/// `refcount.unallocated` finding starts inside it). The model reports a
/// bitmap table or data cluster with refcount 0 under the bitmaps rules
/// (`bitmaps.table.bounds`, `bitmaps.data.bounds`), which make the bitmap
/// unusable, and a directory cluster under the refcount rule: the judge
/// treats the three alike (Host cluster management: a refcount of 0 means
/// the cluster is free, so whatever it holds may be overwritten).
fn directory_unallocated<R: std::io::Read + std::io::Seek>(model: &spec_model::Model<R>) -> bool {
    let a = model.analysis();
    let (Some(h), Some(ext)) = (a.header.as_ref(), a.bitmaps_ext.as_ref()) else {
        return false;
    };
    let cs = h.cluster_size().max(1);
    let start = ext.bitmap_directory_offset & !(cs - 1);
    let end = ext
        .bitmap_directory_offset
        .saturating_add(ext.bitmap_directory_size);
    a.report.findings.iter().any(|f| {
        f.rule == spec_model::Rule::RefcountUnallocated && f.offset >= start && f.offset < end
    })
}

/// The model's reason for not using bitmap `b` of `report`: the first that
/// applies of an inconsistent extension, an invalid one (its error rules),
/// `in_use`, incompatible extra data.
fn why_unusable(
    report: &spec_model::Report,
    facts: &ImageFacts,
    b: &spec_model::BitmapReport,
) -> String {
    use spec_model::{ExtensionState, Severity};
    if report.bitmaps_extension == ExtensionState::Inconsistent {
        return if facts.version == 2 {
            "v2-image".to_owned()
        } else {
            "autoclear-clear".to_owned()
        };
    }
    // The first broken rule of the extension in catalogue order (which
    // follows the spec's sections: extension, directory, table, data), so a
    // second broken structure does not make a bucket of its own.
    let first = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && f.rule.id().starts_with("bitmaps."))
        .map(|f| f.rule)
        .min();
    if let Some(rule) = first {
        return rule.id().to_owned();
    }
    if b.flags.in_use {
        return "in_use".to_owned();
    }
    let overlap = report
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error && f.rule == spec_model::Rule::RefcountOverlap);
    if overlap {
        "refcount.overlap".to_owned()
    } else {
        "extra-data".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use crate::runner::judge::cause::*;

    #[test]
    fn messages_lose_their_variable_parts() {
        assert_eq!(
            normalise("Could not open '/tmp/x/case.qcow2': Unrecognized incompatible feature(s) 4"),
            "Could not open '_': Unrecognized incompatible feature(s) <n>"
        );
        assert_eq!(
            normalise("unsupported incompatible features flags: 0x00000010"),
            "unsupported incompatible features flags: <hex>"
        );
        assert_eq!(normalise("at /a/b/c, 12 bytes"), "at <path>, <n> bytes");
        // Range lists of any length and shortened names are one message.
        assert_eq!(
            normalise(
                r#"bitmap "b64k": dirty ranges [3..4] after the write, expected [3..4, 22..23]"#
            ),
            normalise(
                r#"bitmap "abcdef"... (1023 chars): dirty ranges [] after the write, expected [1..2]"#
            ),
        );
        assert_eq!(normalise("a [1, [2]] b [] c"), "a [_] b [_] c");
        assert_eq!(
            describe_incompatible(0x11),
            "dirty (bit 0), extended_l2 (bit 4)"
        );
    }
}
