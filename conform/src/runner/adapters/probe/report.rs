//! What the probe process answers ([`ProbeReport`], one JSON object on
//! stdout): whether the implementation opened the image, the guest data it
//! read compared with the model ([`GuestCheck`]), and what a write did
//! ([`WriteOutcome`]). The child side fills it in; the parent side parses
//! it into an observation.

use serde::{Deserialize, Serialize};

/// Guest data an implementation read, compared with the model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCheck {
    /// The virtual size in the header and the one the implementation reports.
    pub size_header: Option<u64>,
    pub size_reported: Option<u64>,
    /// Sample ranges, and how many of them were compared.
    pub ranges: usize,
    pub ranges_compared: usize,
    pub bytes_compared: u64,
    /// Ranges where the implementation read other bytes than the model.
    pub mismatch_count: usize,
    /// The first few of them, described with their offsets.
    pub mismatches: Vec<String>,
    /// Ranges the model reads but the implementation failed to read.
    pub read_error_count: usize,
    pub read_errors: Vec<String>,
    /// Why some ranges were not compared (the model cannot read them).
    pub not_compared: Vec<String>,
}

impl GuestCheck {
    /// The implementation read something else than the model somewhere.
    pub fn differs(&self) -> bool {
        self.mismatch_count > 0 || self.size_reported != self.size_header
    }

    /// One line per difference (size first), for the judge.
    pub fn differences(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.size_header.is_some() && self.size_reported != self.size_header {
            d.push(format!(
                "reports a virtual size of {} bytes; the header says {}",
                self.size_reported
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "?".into()),
                self.size_header.unwrap_or_default()
            ));
        }
        d.extend(self.mismatches.iter().cloned());
        if self.mismatch_count > self.mismatches.len() {
            d.push(format!(
                "(and {} more differing range(s))",
                self.mismatch_count - self.mismatches.len()
            ));
        }
        d
    }
}

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
