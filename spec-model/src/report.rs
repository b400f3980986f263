//! The verdict contract of `spec/DIGEST.md` section 3.

use crate::bitmaps::ExtensionState;
use crate::finding::Finding;
use crate::rules::Severity;
use serde::Serialize;

/// The image-level verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    Unspecified,
}

impl Verdict {
    /// `invalid` if any finding is an error; else `unspecified` if any is
    /// unspecified; else `valid`.
    pub fn of<K>(findings: &[Finding<K>]) -> Verdict {
        if findings.iter().any(|f| f.severity == Severity::Error) {
            Verdict::Invalid
        } else if findings.iter().any(|f| f.severity == Severity::Unspecified) {
            Verdict::Unspecified
        } else {
            Verdict::Valid
        }
    }

    /// The exit status of `qcow2-conform check`.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 2,
            Verdict::Unspecified => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unspecified => "unspecified",
        }
    }
}

/// A bitmap's flags, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flags {
    pub in_use: bool,
    pub auto: bool,
    pub extra_data_compatible: bool,
}

/// One directory entry as the verdict reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BitmapReport {
    /// The name, with invalid UTF-8 replaced (see `name_hex` then).
    pub name: String,
    /// The raw name bytes in hex, present only when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
    #[serde(rename = "type")]
    pub bitmap_type: u8,
    pub granularity_bits: u8,
    pub flags: Flags,
    pub usable: bool,
    pub table_offset: u64,
    pub table_size: u32,
    #[serde(flatten)]
    pub contents: Contents,
}

/// A bitmap's contents in brief: how many bits are set and the SHA-256
/// of its `ceil(nbits / 8)` data bytes (bits least significant first,
/// bits past `nbits` cleared); both `None` when they were not read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Contents {
    pub set_bits: Option<u64>,
    pub content_sha256: Option<String>,
}

/// The result of checking one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub bitmaps_extension: ExtensionState,
    pub findings: Vec<Finding>,
    pub bitmaps: Vec<BitmapReport>,
}

impl Report {
    /// The verdict, the extension's state and one line per finding (rule,
    /// severity, offset, message): what a failed test prints of a report.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "verdict {:?}, extension {:?}\n",
            self.verdict, self.bitmaps_extension
        );
        for f in &self.findings {
            s += &format!(
                "  {} {:?} @{:#x}: {}\n",
                f.rule.id(),
                f.severity,
                f.offset,
                f.message
            );
        }
        s
    }

    /// The findings of one rule ID.
    pub fn findings_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.rule.id() == id)
    }

    /// The distinct rule IDs of the findings with `severity`.
    pub fn rules_with(&self, severity: Severity) -> Vec<&'static str> {
        let mut ids: Vec<_> = self
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| f.rule.id())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
