//! Bitmap contents as sorted, disjoint bit ranges, and what they become on
//! disk: data clusters, and the expected digest computed straight from the
//! ranges (independently of the model, which reads the file).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spec_model::semantics::granules;

/// What a bitmap holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Contents {
    /// No bit set.
    Empty,
    /// Every bit up to `nbits` set.
    Full,
    /// The bits of these half-open ranges `[first, last)` set.
    Ranges(Vec<(u64, u64)>),
}

impl Contents {
    /// Sorted, merged, non-empty ranges clipped to `nbits`.
    pub fn ranges(&self, nbits: u64) -> Vec<(u64, u64)> {
        match self {
            Contents::Empty => Vec::new(),
            Contents::Full if nbits > 0 => vec![(0, nbits)],
            Contents::Full => Vec::new(),
            Contents::Ranges(r) => normalise(r, nbits),
        }
    }
}

/// Sorts, clips to `nbits`, drops empty ranges and merges touching ones
/// (the model's own [`granules::clip`]).
pub fn normalise(ranges: &[(u64, u64)], nbits: u64) -> Vec<(u64, u64)> {
    granules::clip(ranges, nbits)
}

/// Fills `buf` with the data bytes starting at data byte `first_byte`
/// (bits LSB first), for sorted disjoint `ranges`.
pub fn fill_bytes(ranges: &[(u64, u64)], first_byte: u64, buf: &mut [u8]) {
    buf.fill(0);
    let lo = first_byte * 8;
    let hi = lo + buf.len() as u64 * 8;
    let start = ranges.partition_point(|&(_, b)| b <= lo);
    for &(a, b) in &ranges[start..] {
        if a >= hi {
            break;
        }
        let (a, b) = (a.max(lo) - lo, b.min(hi) - lo);
        set_bits(buf, a, b);
    }
}

fn set_bits(buf: &mut [u8], mut a: u64, b: u64) {
    while a < b && !a.is_multiple_of(8) {
        buf[(a / 8) as usize] |= 1 << (a % 8);
        a += 1;
    }
    while a + 8 <= b {
        buf[(a / 8) as usize] = 0xff;
        a += 8;
    }
    while a < b {
        buf[(a / 8) as usize] |= 1 << (a % 8);
        a += 1;
    }
}

/// How one bitmap cluster's bytes look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    Zeros,
    /// Every bit of the cluster that belongs to the bitmap is set.
    Ones,
    Mixed,
}

/// Classifies data cluster `j` of a bitmap with `nbits` bits.
pub fn classify(ranges: &[(u64, u64)], nbits: u64, cluster_size: u64, j: u64) -> ClusterKind {
    let lo = j * cluster_size * 8;
    let hi = ((j + 1) * cluster_size * 8).min(nbits);
    let start = ranges.partition_point(|&(_, b)| b <= lo);
    let mut covered = 0u64;
    for &(a, b) in &ranges[start..] {
        if a >= hi {
            break;
        }
        covered += b.min(hi) - a.max(lo);
    }
    if covered == 0 {
        ClusterKind::Zeros
    } else if covered == hi - lo {
        ClusterKind::Ones
    } else {
        ClusterKind::Mixed
    }
}

/// SHA-256 (hex) of the `ceil(nbits / 8)` data bytes and the number of set
/// bits, computed from the ranges alone.
pub fn expected_digest(ranges: &[(u64, u64)], nbits: u64) -> (String, u64) {
    let nbytes = nbits.div_ceil(8);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = 0u64;
    while pos < nbytes {
        let n = (nbytes - pos).min(buf.len() as u64) as usize;
        fill_bytes(ranges, pos, &mut buf[..n]);
        hash.update(&buf[..n]);
        pos += n as u64;
    }
    let set = ranges.iter().map(|(a, b)| b - a).sum();
    (hex::encode(hash.finalize()), set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_classify() {
        let r = normalise(&[(3, 12), (10, 14), (40, 41), (100, 200)], 64);
        assert_eq!(r, vec![(3, 14), (40, 41)]);
        let mut b = [0u8; 8];
        fill_bytes(&r, 0, &mut b);
        assert_eq!(b, [0b1111_1000, 0b0011_1111, 0, 0, 0, 1, 0, 0]);
        let mut b = [0u8; 2];
        fill_bytes(&r, 1, &mut b);
        assert_eq!(b, [0b0011_1111, 0]);
        assert_eq!(classify(&[], 100, 1, 0), ClusterKind::Zeros);
        assert_eq!(classify(&[(0, 8)], 100, 1, 0), ClusterKind::Ones);
        assert_eq!(classify(&[(96, 100)], 100, 1, 12), ClusterKind::Ones);
        assert_eq!(classify(&[(1, 8)], 100, 1, 0), ClusterKind::Mixed);
        let (h, n) = expected_digest(&[(0, 9)], 12);
        assert_eq!(n, 9);
        assert_eq!(h, hex::encode(Sha256::digest([0xff, 0x01])));
    }
}
