//! Granule arithmetic: a bitmap's set bits as merged half-open ranges of
//! granule indexes, and the byte ranges of the virtual disk they cover.
//! Every operation of the semantic model is written in these terms.

use sha2::{Digest, Sha256};

/// Half-open ranges of granule indexes (or bytes), sorted and merged.
pub type Ranges = Vec<(u64, u64)>;

/// Merges touching or overlapping half-open ranges (empty ones dropped).
pub fn merge(mut ranges: Ranges) -> Ranges {
    ranges.retain(|&(a, b)| a < b);
    ranges.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Number of bits of a bitmap of granularity `2^gbits` over `size` bytes:
/// `ceil(size / granularity)`.
pub fn nbits(size: u64, gbits: u8) -> u64 {
    (u128::from(size).div_ceil(1u128 << gbits.min(63))) as u64
}

/// `ranges` cut at `n` (granules at or past `n` dropped), merged.
pub fn clip(ranges: &[(u64, u64)], n: u64) -> Ranges {
    merge(ranges.iter().map(|&(a, b)| (a.min(n), b.min(n))).collect())
}

/// The granules of granularity `2^gbits` that bytes `[offset, offset+len)`
/// touch, cut at `n` granules.
pub fn touched(offset: u64, len: u64, gbits: u8, n: u64) -> (u64, u64) {
    if len == 0 {
        return (0, 0);
    }
    let g = 1u128 << gbits.min(63);
    let a = (u128::from(offset) / g) as u64;
    let b = (u128::from(offset) + u128::from(len)).div_ceil(g) as u64;
    (a.min(n), b.min(n))
}

/// The granules (of `2^gbits`, cut at `n`) that byte ranges touch.
pub fn from_bytes(bytes: &[(u64, u64)], gbits: u8, n: u64) -> Ranges {
    merge(
        bytes
            .iter()
            .filter(|(a, b)| a < b)
            .map(|&(a, b)| touched(a, b - a, gbits, n))
            .collect(),
    )
}

/// The virtual byte ranges granules of `2^gbits` cover on a disk of
/// `size` bytes (the last granule ends at the disk's end).
pub fn to_bytes(granules: &[(u64, u64)], gbits: u8, size: u64) -> Ranges {
    let g = gbits.min(63);
    merge(
        granules
            .iter()
            .map(|&(a, b)| {
                let s = (u128::from(a) << g).min(u128::from(size)) as u64;
                let e = (u128::from(b) << g).min(u128::from(size)) as u64;
                (s, e)
            })
            .collect(),
    )
}

/// Granules of `from_gbits` re-expressed at `to_gbits` on a disk of `size`
/// bytes: every target granule that any covered byte falls in (the union
/// a merge across granularities makes).
pub fn regranulate(granules: &[(u64, u64)], from_gbits: u8, to_gbits: u8, size: u64) -> Ranges {
    let bytes = to_bytes(granules, from_gbits, size);
    from_bytes(&bytes, to_gbits, nbits(size, to_gbits))
}

/// `a` without the granules of `b`.
pub fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let mut out = Vec::new();
    for &(mut s, e) in a {
        for &(bs, be) in b {
            if be <= s || bs >= e {
                continue;
            }
            if bs > s {
                out.push((s, bs));
            }
            s = s.max(be);
            if s >= e {
                break;
            }
        }
        if s < e {
            out.push((s, e));
        }
    }
    merge(out)
}

/// Number of granules in `ranges`.
pub fn count(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(a, b)| b - a).sum()
}

/// SHA-256 (hex) of the bitmap's data bytes as the spec lays them out
/// (bit `k` is bit `k % 8` of byte `k / 8`), `ceil(nbits / 8)` bytes,
/// followed by `pad` zero bytes.
fn sha256_padded(ranges: &[(u64, u64)], nbits: u64, pad: u64) -> String {
    let nbytes = nbits.div_ceil(8);
    let ranges = clip(ranges, nbits);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = 0u64;
    let mut next = 0usize;
    let total = nbytes + pad;
    while pos < total {
        let n = (total - pos).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        let (lo, hi) = (pos * 8, (pos + n as u64) * 8);
        while next < ranges.len() && ranges[next].1 <= lo {
            next += 1;
        }
        for &(a, b) in &ranges[next..] {
            if a >= hi {
                break;
            }
            for bit in a.max(lo)..b.min(hi) {
                let i = bit - lo;
                buf[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        hash.update(&buf[..n]);
        pos += n as u64;
    }
    hex::encode(hash.finalize())
}

/// The contents digest of the verdict contract (`content_sha256`): the
/// `ceil(nbits / 8)` data bytes.
pub fn content_sha256(ranges: &[(u64, u64)], nbits: u64) -> String {
    sha256_padded(ranges, nbits, 0)
}

/// What QEMU's `x-debug-block-dirty-bitmap-sha256` returns for the same
/// bits on a little-endian 64-bit host: QEMU hashes its in-memory bitmap,
/// an array of 64-bit words, so the data bytes are followed by zero bytes
/// up to a multiple of 8. It therefore equals [`content_sha256`] exactly
/// when `ceil(nbits / 8)` is a multiple of 8 (see [`qemu_hash_is_content`]).
pub fn qemu_debug_sha256(ranges: &[(u64, u64)], nbits: u64) -> String {
    let nbytes = nbits.div_ceil(8);
    sha256_padded(ranges, nbits, nbytes.next_multiple_of(8) - nbytes)
}

/// Whether QEMU's debug hash of a bitmap of `nbits` bits is the contract's
/// `content_sha256` (no word padding needed).
pub fn qemu_hash_is_content(nbits: u64) -> bool {
    nbits.div_ceil(8).is_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_granules_round_out() {
        assert_eq!(touched(1000, 70_000, 16, 16), (0, 2));
        assert_eq!(touched(65_536, 1, 16, 16), (1, 2));
        assert_eq!(touched(0, 0, 16, 16), (0, 0));
        assert_eq!(touched(0, u64::MAX, 9, 10), (0, 10));
    }

    #[test]
    fn bytes_and_granules_round_trip() {
        let g = vec![(0, 2), (5, 6)];
        let b = to_bytes(&g, 16, 5 * 65_536 + 100);
        assert_eq!(b, vec![(0, 131_072), (327_680, 327_780)]);
        assert_eq!(from_bytes(&b, 16, 6), g);
        assert_eq!(regranulate(&[(1, 2)], 16, 17, 1 << 20), vec![(0, 1)]);
        assert_eq!(regranulate(&[(1, 2)], 17, 16, 1 << 20), vec![(2, 4)]);
    }

    #[test]
    fn subtraction() {
        assert_eq!(
            subtract(&[(0, 10)], &[(2, 3), (5, 7)]),
            vec![(0, 2), (3, 5), (7, 10)]
        );
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), vec![]);
        assert_eq!(subtract(&[(0, 4), (6, 9)], &[(3, 7)]), vec![(0, 3), (7, 9)]);
    }

    #[test]
    fn digests() {
        // 16 bits, bits 0..3 set: bytes 07 00.
        let want = hex::encode(Sha256::digest([7u8, 0]));
        assert_eq!(content_sha256(&[(0, 3)], 16), want);
        let padded = hex::encode(Sha256::digest([7u8, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(qemu_debug_sha256(&[(0, 3)], 16), padded);
        assert!(!qemu_hash_is_content(16));
        assert!(qemu_hash_is_content(64));
        assert!(qemu_hash_is_content(60));
        assert_eq!(
            content_sha256(&[(0, 64)], 64),
            qemu_debug_sha256(&[(0, 64)], 64)
        );
    }
}
