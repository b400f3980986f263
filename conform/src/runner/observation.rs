//! What the runner saw an implementation do with one image: the
//! [`Observation`] an adapter returns and the judge reads, with its parts
//! (the bitmaps it listed, its integrity checker's words, the guest data it
//! read, the write and bitmap-operations checks).

use super::checks::{OpsCheck, WriteCheck};
use super::process;
use serde::{Deserialize, Serialize};

/// A bitmap's flags as an implementation reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedFlags {
    #[serde(default)]
    pub in_use: bool,
    #[serde(default)]
    pub auto: bool,
}

/// One bitmap as an implementation saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObservedBitmap {
    pub name: String,
    /// `None` when the implementation reports a granularity that is not a
    /// power of two (or none at all).
    pub granularity_bits: Option<u8>,
    pub flags: ObservedFlags,
    /// The implementation would use the bitmap (QEMU: it exported it).
    pub usable: bool,
    /// SHA-256 of the bitmap's data bytes as `spec/DIGEST.md` defines it,
    /// when the implementation's view of the contents was read.
    pub content_sha256: Option<String>,
    /// Number of set bits, when known.
    pub set_bits: Option<u64>,
    /// Dirty virtual byte ranges (half-open, merged), when the
    /// implementation reports contents that way. A report keeps the first
    /// [`MAX_REPORTED_RANGES`] of them ([`Observation::compact`]), and
    /// `dirty_ranges_digest` stands for the whole list.
    #[serde(serialize_with = "first_ranges")]
    pub dirty_ranges: Option<Vec<(u64, u64)>>,
    /// The count and digest of every range the implementation reported,
    /// set when the list is compacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirty_ranges_digest: Option<RangesDigest>,
    /// Why the implementation refused to use it, if it did.
    pub error: Option<String>,
}

/// Dirty ranges a report lists per bitmap at most.
pub const MAX_REPORTED_RANGES: usize = 64;

/// Dirty ranges a report lists per observation at most (over all its
/// bitmaps), so that a report grows with the corpus, not with what a
/// program prints.
pub const MAX_REPORTED_RANGES_TOTAL: usize = 1024;

/// Bitmaps a report lists per result at most.
pub const MAX_REPORTED_BITMAPS: usize = 1024;

/// Bytes of a program's own words (an error, a bitmap name) a report keeps.
pub const MAX_REPORTED_TEXT: usize = 4096;

/// `s` cut to [`MAX_REPORTED_TEXT`] bytes (at a character boundary), with
/// its full length said.
fn cut_text(s: &mut String) {
    if s.len() <= MAX_REPORTED_TEXT {
        return;
    }
    let mut end = MAX_REPORTED_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let total = s.len();
    s.truncate(end);
    s.push_str(&format!("... ({total} bytes in all)"));
}

/// A whole list of ranges in a few bytes: how many there were, and the
/// SHA-256 of their bounds (each range's start and end as 8-byte
/// big-endian integers, in the order reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangesDigest {
    pub count: u64,
    pub sha256: String,
}

impl RangesDigest {
    pub fn of(ranges: &[(u64, u64)]) -> RangesDigest {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (a, b) in ranges {
            h.update(a.to_be_bytes());
            h.update(b.to_be_bytes());
        }
        RangesDigest {
            count: ranges.len() as u64,
            sha256: hex::encode(h.finalize()),
        }
    }
}

/// Serialises at most [`MAX_REPORTED_RANGES`] ranges (the first).
fn first_ranges<S: serde::Serializer>(
    ranges: &Option<Vec<(u64, u64)>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ranges {
        None => s.serialize_none(),
        Some(r) => s.collect_seq(r.iter().take(MAX_REPORTED_RANGES)),
    }
}

impl ObservedBitmap {
    /// Keeps the first `most` dirty ranges (at most
    /// [`MAX_REPORTED_RANGES`]) and the digest of them all; returns how
    /// many it kept.
    pub fn compact_ranges(&mut self, most: usize) -> usize {
        let Some(r) = &mut self.dirty_ranges else {
            return 0;
        };
        if self.dirty_ranges_digest.is_none() {
            self.dirty_ranges_digest = Some(RangesDigest::of(r));
        }
        r.truncate(most.min(MAX_REPORTED_RANGES));
        r.shrink_to_fit();
        r.len()
    }

    /// The implementation used the bitmap: it claimed it usable or handed
    /// out its contents.
    pub fn used(&self) -> bool {
        self.usable || self.content_sha256.is_some() || self.dirty_ranges.is_some()
    }
}

/// What an integrity checker of the implementation (QEMU: `qemu-img check`)
/// said, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IntegrityCheck {
    /// It could run on the image at all.
    pub ran: bool,
    pub corruptions: u64,
    pub leaks: u64,
    pub check_errors: u64,
    /// The checker's own words (first error line), if it failed.
    pub error: Option<String>,
}

impl IntegrityCheck {
    /// It ran and found corruptions or check errors.
    pub fn flags_corrupt(&self) -> bool {
        self.ran && (self.corruptions > 0 || self.check_errors > 0)
    }
}

/// Everything the runner saw an implementation do with one image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observation {
    /// The implementation opened the image.
    pub opened: bool,
    /// Its error message when it did not (or any other error it printed).
    pub error: Option<String>,
    pub bitmaps: Vec<ObservedBitmap>,
    /// Exit status of the program that failed or last ran.
    pub exit_status: Option<i32>,
    /// A signal that ended one of its programs (not the runner's own kill).
    pub signal: Option<i32>,
    /// One of its programs ran out of time.
    pub timed_out: bool,
    /// With `timed_out`: that program was ended as a stall, having spun
    /// this many milliseconds of processor time without a read, a write
    /// or a wait ([`crate::runner::process::stall`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_ms: Option<u64>,
    /// A sanitizer report line from its standard error.
    pub sanitizer: Option<String>,
    /// The program broke the adapter's protocol (no or bad output).
    pub protocol_error: Option<String>,
    /// The adapter would not start the implementation on this image (QEMU:
    /// the image names a file its pinned graph may not follow): judged
    /// `error`, never charged to the implementation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_started: Option<String>,
    /// Wall-clock time of the whole observation.
    pub duration_ms: u64,
    /// The tail of the standard error of the program that failed (or of
    /// the last one).
    pub stderr_excerpt: String,
    /// Exact commands that reproduce the observation, in order (`$WORK` is
    /// a scratch directory holding the copy as `image.qcow2`).
    pub commands: Vec<String>,
    /// What the implementation's own checker said, when it has one.
    pub integrity: Option<IntegrityCheck>,
    /// The result of the write check, when it ran.
    pub write: Option<WriteCheck>,
    /// Facts worth reporting that the judge does not use.
    pub notes: Vec<String>,
    /// The program refused an image saying it cannot decrypt it (exec
    /// protocol `"cannot_decrypt": true`): judged as an implementation
    /// without the key, whose clean refusal meets
    /// `crypt.refuse-without-key`, never as a refusal of a conforming image.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cannot_decrypt: bool,
    /// The implementation does not know the bitmaps extension: the judge
    /// leaves bitmap expectations aside and judges the guest data it read
    /// ([`Observation::guest`]), refusals, crashes and writes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bitmaps_unaware: bool,
    /// The virtual disk size the implementation presents (QEMU: `qemu-img
    /// info`'s `virtual-size`), when it reports one outside
    /// [`Observation::guest`]; judged by `guest.virtual-size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    /// Guest data the implementation read, compared with the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestCheck>,
    /// The result of the bitmap-operations check, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpsCheck>,
    #[serde(skip)]
    pub(super) bad_recorded: bool,
}

impl Observation {
    /// Why the implementation did not open the image (its error message,
    /// `no message` when it printed none); `None` when it opened it.
    pub fn refusal(&self) -> Option<&str> {
        (!self.opened).then(|| self.error.as_deref().unwrap_or("no message"))
    }

    /// Folds one program run into the observation: crash, timeout,
    /// sanitizer output, exit status, command line.
    pub fn record(&mut self, p: &process::Proc) {
        self.commands.push(p.command.clone());
        self.absorb(p);
    }

    /// The one program an adapter runs to observe an image, folded in:
    /// a program that could not be run is a protocol error; one that ran
    /// is recorded with the time since `start`. Returns the process only
    /// when its answer is worth reading (it neither timed out, died by a
    /// signal, printed past the output cap nor was interrupted).
    pub fn record_run<E: std::fmt::Display>(
        &mut self,
        run: Result<process::Proc, E>,
        start: std::time::Instant,
    ) -> Option<process::Proc> {
        let p = match run {
            Ok(p) => p,
            Err(e) => {
                self.protocol_error = Some(e.to_string());
                return None;
            }
        };
        self.record(&p);
        self.duration_ms = start.elapsed().as_millis() as u64;
        (!p.ended_badly()).then_some(p)
    }

    /// Keeps what a report needs of what the implementation answered, so
    /// that a run holds and writes an amount that follows the corpus, not
    /// the programs' answers (called once a result is judged): dirty
    /// ranges, at most [`MAX_REPORTED_RANGES`] per bitmap and
    /// [`MAX_REPORTED_RANGES_TOTAL`] in all, each bitmap's whole list
    /// standing as its [`RangesDigest`]; at most [`MAX_REPORTED_BITMAPS`]
    /// bitmaps (a note counts the others); and the program's own words
    /// (errors, names) cut to [`MAX_REPORTED_TEXT`] bytes.
    pub fn compact(&mut self) {
        if self.bitmaps.len() > MAX_REPORTED_BITMAPS {
            let more = self.bitmaps.len() - MAX_REPORTED_BITMAPS;
            self.bitmaps.truncate(MAX_REPORTED_BITMAPS);
            self.notes
                .push(format!("{more} more bitmap(s) not listed in the report"));
        }
        let mut budget = MAX_REPORTED_RANGES_TOTAL;
        for b in &mut self.bitmaps {
            budget -= b.compact_ranges(budget);
            cut_text(&mut b.name);
            if let Some(e) = &mut b.error {
                cut_text(e);
            }
        }
        for t in [
            &mut self.error,
            &mut self.protocol_error,
            &mut self.sanitizer,
        ]
        .into_iter()
        .flatten()
        {
            cut_text(t);
        }
    }

    /// As [`Observation::record`] without adding the command line.
    pub fn absorb(&mut self, p: &process::Proc) {
        let sanitizer = p.sanitizer();
        let bad = p.ended_badly() || sanitizer.is_some();
        if let (Some(o), None) = (&p.overflow, &self.protocol_error) {
            self.protocol_error = Some(o.clone());
        }
        if p.timed_out && !self.timed_out {
            self.timed_out = true;
            self.stalled_ms = p.stalled_ms;
        }
        if self.signal.is_none() {
            self.signal = p.signal;
        }
        if self.sanitizer.is_none() {
            self.sanitizer = sanitizer;
        }
        // Keep the first bad program's status and stderr; otherwise the
        // latest program's.
        if !self.bad_recorded {
            self.exit_status = p.status;
            if bad || !p.stderr.trim().is_empty() {
                self.stderr_excerpt = excerpt(&p.stderr);
            }
            self.bad_recorded = bad;
        }
    }
}

/// The last [`process::STDERR_EXCERPT`] bytes of `s` (at a char boundary).
pub fn excerpt(s: &str) -> String {
    let s = s.trim_end();
    if s.len() <= process::STDERR_EXCERPT {
        return s.to_owned();
    }
    let mut start = s.len() - process::STDERR_EXCERPT;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

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
    /// Where a backing file shorter than the disk ends, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_end: Option<u64>,
    /// Compared ranges wholly past [`GuestCheck::backing_end`] that the
    /// image itself does not allocate: zeros (`guest.short-backing-zeros`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub past_backing_compared: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Descriptions of differences and read errors kept per guest check.
const MAX_DESCRIBED: usize = 8;

/// How a difference or read error of a range past the end of a short
/// backing file starts ([`GuestCheck::past_backing`]), so that the judge
/// can name `guest.short-backing-zeros` for it.
pub const PAST_BACKING: &str =
    "past the end of the shorter backing file, where the image allocates nothing (zeros): ";

impl GuestCheck {
    /// Whether a difference or read error text is about a range past the
    /// end of a short backing file.
    pub fn past_backing(text: &str) -> bool {
        text.starts_with(PAST_BACKING)
    }

    fn keep(list: &mut Vec<String>, past: bool, text: String) {
        if list.len() < MAX_DESCRIBED {
            list.push(if past {
                format!("{PAST_BACKING}{text}")
            } else {
                text
            });
        }
    }

    /// A range the implementation could not read (`past`: it lies past the
    /// end of a short backing file).
    pub fn read_failed(&mut self, past: bool, text: String) {
        self.read_error_count += 1;
        Self::keep(&mut self.read_errors, past, text);
    }

    /// A range read and compared: `difference` says how it differs from
    /// the model's bytes, if it does.
    pub fn read_compared(&mut self, past: bool, len: u64, difference: Option<String>) {
        self.ranges_compared += 1;
        self.bytes_compared += len;
        if past {
            self.past_backing_compared += 1;
        }
        if let Some(d) = difference {
            self.mismatch_count += 1;
            Self::keep(&mut self.mismatches, past, d);
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_bounds_what_a_report_keeps() {
        let ranges: Vec<(u64, u64)> = (0..5000).map(|i| (2 * i, 2 * i + 1)).collect();
        let mut obs = Observation {
            error: Some("e".repeat(100_000)),
            bitmaps: (0..2000)
                .map(|i| ObservedBitmap {
                    name: format!("{i}{}", "é".repeat(3000)),
                    dirty_ranges: Some(ranges.clone()),
                    ..ObservedBitmap::default()
                })
                .collect(),
            ..Observation::default()
        };
        obs.compact();
        assert_eq!(obs.bitmaps.len(), MAX_REPORTED_BITMAPS);
        assert_eq!(obs.notes, ["976 more bitmap(s) not listed in the report"]);
        let listed: usize = obs
            .bitmaps
            .iter()
            .map(|b| b.dirty_ranges.as_ref().unwrap().len())
            .sum();
        assert_eq!(listed, MAX_REPORTED_RANGES_TOTAL);
        assert_eq!(obs.bitmaps[0].dirty_ranges.as_ref().unwrap().len(), 64);
        let d = obs.bitmaps[1023].dirty_ranges_digest.clone().unwrap();
        assert_eq!(d, RangesDigest::of(&ranges));
        assert_eq!(d.count, 5000);
        assert!(obs
            .error
            .as_ref()
            .unwrap()
            .ends_with("... (100000 bytes in all)"));
        assert!(obs.bitmaps[5].name.len() < MAX_REPORTED_TEXT + 40);
        assert!(obs.bitmaps[5].name.ends_with("... (6001 bytes in all)"));
    }
}
