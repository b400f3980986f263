//! What the probe process answers ([`ProbeReport`], one JSON object on
//! stdout): whether the implementation opened the image, the guest data it
//! read compared with the model ([`GuestCheck`], defined with the
//! observation it ends up in), and what a write did
//! ([`WriteOutcome`]). The child side fills it in; the parent side parses
//! it into an observation.

use crate::runner::observation::GuestCheck;
use serde::{Deserialize, Serialize};

/// What a write through the implementation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Opened writable, wrote and closed without an error.
    pub ok: bool,
    pub error: Option<String>,
    /// Data the model reads wrongly afterwards.
    pub problems: Vec<String>,
}

/// The probe process's answer (one JSON object on stdout).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeReport {
    pub implementation: String,
    pub opened: bool,
    pub error: Option<String>,
    /// A panic in the implementation's code, with its location.
    pub panic: Option<String>,
    /// The implementation's helper process died of this signal.
    pub signal: Option<i32>,
    pub guest: Option<GuestCheck>,
    pub write: Option<WriteOutcome>,
    pub notes: Vec<String>,
}
