//! Results of the checks that change a private copy of an image and let
//! the model read it afterwards: the write check ([`crate::runner::judge::write_check`]) and
//! the bitmap-operations check (QEMU's, in
//! [`super::adapters::qemu::ops`]). Any problem makes the case
//! `corrupting` (see [`super::judge`](mod@super::judge)).

use super::process::Proc;
use serde::Serialize;

/// What any of these checks found, besides its own facts (serialized as
/// fields of the check).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckFindings {
    /// Everything wrong with the result; non-empty means `corrupting`.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// Commands that reproduce the check (the runner rewrites the scratch
    /// directory to `$WORK`).
    #[serde(skip)]
    pub commands: Vec<String>,
    /// The first program that crashed or ran out of time, if one did.
    #[serde(skip)]
    pub process: Option<Proc>,
}

/// What the write check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteCheck {
    /// Virtual offset and length written.
    pub offset: u64,
    pub len: u64,
    /// The implementation reported success.
    pub written: bool,
    pub error: Option<String>,
    #[serde(flatten)]
    pub after: ModelAfter,
    /// Header fields the implementation rewrote (`size 634346 -> 633856`),
    /// each a mismatch (see [`crate::runner::judge::write_check`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<String>,
    /// The encrypted copy a writer holding the key wrote was searched for
    /// the plaintext it wrote (`crypt.no-plaintext`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plaintext_searched: bool,
    #[serde(flatten)]
    pub found: CheckFindings,
}

/// What the model reads in the copy after the write (serialized as
/// fields of the check).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelAfter {
    /// The model's verdict on the image afterwards.
    pub verdict_after: Option<String>,
    pub extension_after: Option<String>,
    /// Rule IDs of error findings afterwards.
    pub error_rules_after: Vec<String>,
}

/// One operation and what the model found afterwards.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpStep {
    /// The operation in words (`add conform-ops -g 65536`, ...).
    pub op: String,
    /// QEMU reported success.
    pub ok: bool,
    pub error: Option<String>,
    /// The model's verdict on the image afterwards.
    pub verdict_after: Option<String>,
    pub problems: Vec<String>,
}

/// What the bitmap-operations check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpsCheck {
    pub steps: Vec<OpStep>,
    /// `problems`: every problem of every step, prefixed with the step.
    #[serde(flatten)]
    pub found: CheckFindings,
}
