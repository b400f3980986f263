//! The exec protocol's `read` verb, for programs that do not know the
//! bitmaps extension (`"read"` in their capabilities, `"observe"` not):
//! `PROGRAM read IMAGE OFFSET:LEN...` opens the image read-only and prints
//!
//! ```json
//! {"protocol": 1, "opened": true, "error": null, "size": 67108864,
//!  "ranges": [{"offset": 0, "length": 65536, "sha256": "<hex>"},
//!             {"offset": 131072, "length": 4096, "error": "..."}]}
//! ```
//!
//! one entry per range asked, in order, each with the SHA-256 of the guest
//! bytes it read or why it could not read them. The ranges are the probe
//! adapters' sample ranges ([`super::probe::sample_ranges`]); the model
//! reads the same ranges ([`expectation`]) and the answers become the
//! [`GuestCheck`] the judge reads for bitmaps-unaware implementations.

pub(crate) use super::probe::expectation::{expectation, Expectation};
use crate::runner::observation::GuestCheck;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::ffi::OsString;

/// Mismatch and error descriptions kept per observation.
const MAX_DESCRIBED: usize = 8;

/// The answer to `read`.
#[derive(Debug, Deserialize)]
pub struct ReadReply {
    pub protocol: u32,
    pub opened: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// The virtual size the program reports.
    #[serde(default)]
    pub size: Option<u64>,
    /// With `opened: false`: the image is encrypted and the program cannot
    /// decrypt it.
    #[serde(default)]
    pub cannot_decrypt: bool,
    #[serde(default)]
    pub ranges: Vec<RangeReply>,
}

/// One range of a `read` answer.
#[derive(Debug, Deserialize)]
pub struct RangeReply {
    pub offset: u64,
    pub length: u64,
    /// SHA-256 (hex) of the bytes read.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Why the range could not be read.
    #[serde(default)]
    pub error: Option<String>,
}

/// The `OFFSET:LEN` arguments for `ranges`.
pub fn range_args(ranges: &[(u64, u64)]) -> Vec<OsString> {
    ranges
        .iter()
        .map(|(o, l)| OsString::from(format!("{o}:{l}")))
        .collect()
}

fn keep(list: &mut Vec<String>, s: String) {
    if list.len() < MAX_DESCRIBED {
        list.push(s);
    }
}

/// The program's answers compared with what the model reads at the same
/// ranges.
pub(crate) fn guest_check(expect: &Expectation, reply: &ReadReply) -> GuestCheck {
    let mut g = GuestCheck {
        size_header: expect.size,
        size_reported: reply.size,
        ranges: expect.ranges.len(),
        backing_end: expect.backing_end,
        ..GuestCheck::default()
    };
    for (i, (&(o, l), want)) in expect.ranges.iter().zip(&expect.data).enumerate() {
        let want = match want {
            Ok(w) => w,
            Err(e) => {
                keep(&mut g.not_compared, format!("{o:#x}+{l:#x}: {e}"));
                continue;
            }
        };
        let past = expect.past_backing.get(i).copied().unwrap_or(false);
        let got = reply
            .ranges
            .get(i)
            .filter(|r| r.offset == o && r.length == l);
        let read_error = |why: &str| {
            format!(
                "cannot read {l} bytes at virtual offset {o} ({o:#x}), which the model reads: {why}"
            )
        };
        match got.map(|r| (r.sha256.as_deref(), r.error.as_deref())) {
            None => g.read_failed(
                past,
                read_error(&format!("answer {i} is missing or names another range")),
            ),
            Some((None, e)) => g.read_failed(past, read_error(e.unwrap_or("no sha256"))),
            Some((Some(h), _)) => {
                let model = hex::encode(Sha256::digest(want));
                let differs = !h.eq_ignore_ascii_case(&model);
                g.read_compared(
                    past,
                    l,
                    differs.then(|| {
                        format!(
                            "guest data of range {o:#x}+{l:#x} differs: the program's bytes hash to {}, the model's to {}",
                            crate::runner::text::short(h),
                            &model[..16]
                        )
                    }),
                );
            }
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_hashes_range_by_range() {
        let expect = Expectation {
            size: Some(1024),
            ranges: vec![(0, 4), (512, 4), (1000, 4)],
            data: vec![Ok(vec![1, 2, 3, 4]), Ok(vec![0; 4]), Ok(vec![9; 4])],
            notes: Vec::new(),
            backing_end: None,
            past_backing: Vec::new(),
        };
        let h = |b: &[u8]| Some(hex::encode(Sha256::digest(b)));
        let reply = ReadReply {
            protocol: 1,
            opened: true,
            error: None,
            size: Some(1024),
            cannot_decrypt: false,
            ranges: vec![
                RangeReply {
                    offset: 0,
                    length: 4,
                    sha256: h(&[1, 2, 3, 4]),
                    error: None,
                },
                RangeReply {
                    offset: 512,
                    length: 4,
                    sha256: h(&[0, 0, 0, 1]),
                    error: None,
                },
                RangeReply {
                    offset: 1000,
                    length: 4,
                    sha256: None,
                    error: Some("EIO".into()),
                },
            ],
        };
        let g = guest_check(&expect, &reply);
        assert_eq!(
            (g.ranges_compared, g.mismatch_count, g.read_error_count),
            (2, 1, 1)
        );
        assert!(g.mismatches[0].contains("0x200+0x4"), "{:?}", g.mismatches);
        assert!(g.read_errors[0].contains("EIO"), "{:?}", g.read_errors);
        assert!(g.differs());
        assert_eq!(range_args(&[(5, 6)]), vec![OsString::from("5:6")]);
    }
}
