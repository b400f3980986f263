//! `qemu-img measure` judged against the format model: the `bitmaps`
//! size it reports for converting an image with its bitmaps must be what
//! the model computes for that image's bitmaps
//! ([`spec_model::bitmaps::space::copy_size`]: every bitmap's data as fully
//! allocated, its table and the directory, each in whole clusters of the
//! destination).
//!
//! QEMU documents the field as "the additional size required if all the
//! top-level bitmap metadata in the source image were to be copied to the
//! destination", present when source and destination can both hold
//! persistent bitmaps (`BlockMeasureInfo` in its QAPI schema). No sentence
//! of the qcow2 spec binds an estimate, so a difference is reported as a
//! note of the bitmap-operations check, never as a problem. The check is
//! one step of the bitmap-operations sequence ([`super::ops`]); this file
//! holds the arguments and the judgement, not the running.

use super::tools::os;
use serde::Deserialize;
use spec_model::bitmaps::space::{copy_size, Planned};
use std::ffi::OsString;
use std::path::Path;

/// The destination cluster sizes the check measures for (log2): QEMU's
/// default and a small one, where tables and directory take more clusters.
pub const CLUSTER_BITS: [u32; 2] = [16, 12];

/// `qemu-img measure` of `image` (qcow2) converted to qcow2 with clusters
/// of `2^cluster_bits` bytes, JSON output.
pub fn arguments(image: &Path, cluster_bits: u32) -> Vec<OsString> {
    vec![
        os("measure"),
        os("--output=json"),
        os("-f"),
        os("qcow2"),
        os("-O"),
        os("qcow2"),
        os("-o"),
        os(format!("cluster_size={}", 1u64 << cluster_bits)),
        os(image),
    ]
}

/// The part of `qemu-img measure --output=json` the check reads.
#[derive(Debug, Deserialize)]
struct Measured {
    bitmaps: Option<u64>,
}

/// Every way QEMU's answer `stdout` differs from the model for bitmaps
/// `planned` on a disk of `size` bytes and a destination of clusters of
/// `2^cluster_bits` bytes (empty: it agrees). An answer without `bitmaps`
/// agrees only when there is nothing to copy.
pub fn judge(stdout: &str, planned: &[Planned], size: u64, cluster_bits: u32) -> Vec<String> {
    let want = copy_size(planned, size, cluster_bits);
    let got: Measured = match serde_json::from_str(stdout) {
        Ok(m) => m,
        Err(e) => return vec![format!("its JSON answer does not parse: {e}")],
    };
    match got.bitmaps {
        Some(g) if g == want => Vec::new(),
        Some(g) => vec![format!(
            "bitmaps size {g} bytes for clusters of {} bytes, the model computes {want} for {} bitmap(s)",
            1u64 << cluster_bits,
            planned.len()
        )],
        None if want == 0 => Vec::new(),
        None => vec![format!(
            "no bitmaps size reported, the model computes {want} bytes for {} bitmap(s)",
            planned.len()
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_by_the_model() {
        let one = [Planned {
            name_len: 1,
            granularity_bits: 16,
        }];
        let json = |b: u64| {
            format!(r#"{{"required": 327680, "fully-allocated": 1114112, "bitmaps": {b}}}"#)
        };
        assert!(judge(&json(3 * 65536), &one, 1 << 20, 16).is_empty());
        let p = judge(&json(2 * 65536), &one, 1 << 20, 16);
        assert!(p[0].contains("the model computes 196608"), "{p:?}");
        assert!(judge(r#"{"required": 1}"#, &[], 1 << 20, 16).is_empty());
        assert_eq!(judge(r#"{"required": 1}"#, &one, 1 << 20, 16).len(), 1);
        assert!(judge("not json", &one, 1 << 20, 16)[0].contains("does not parse"));
    }
}
