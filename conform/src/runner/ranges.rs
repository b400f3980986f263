//! Arithmetic on half-open virtual byte ranges, as bitmaps mark them
//! dirty: merging, rounding out to a granularity, laying bits over a new
//! disk size, and the digest of the bitmap such ranges describe.

use spec_model::semantics::granules;

/// Merges touching or overlapping half-open ranges (sorted first): the
/// model's own [`granules::merge`].
pub fn merge_ranges(ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    granules::merge(ranges)
}

/// `ranges` with every range rounded out to `2^gbits` and clipped to
/// `size`, merged.
pub fn round_out(ranges: &[(u64, u64)], gbits: u8, size: u64) -> Vec<(u64, u64)> {
    let g = 1u128 << gbits.min(63);
    merge_ranges(
        ranges
            .iter()
            .map(|&(a, b)| {
                let a2 = (a as u128 / g) * g;
                let b2 = (b as u128).div_ceil(g) * g;
                (a2 as u64, b2.min(size as u128) as u64)
            })
            .collect(),
    )
}

/// The bits of `ranges` (at granularity `2^gbits`) laid over a disk of
/// `new_size` bytes: bits past its end dropped, the last kept bit covering
/// up to the new end.
pub fn rebase(ranges: &[(u64, u64)], gbits: u8, new_size: u64) -> Vec<(u64, u64)> {
    let g = 1u128 << gbits.min(63);
    let nbits = (new_size as u128).div_ceil(g);
    merge_ranges(
        ranges
            .iter()
            .filter_map(|&(a, b)| {
                let first = a as u128 / g;
                let end = ((b as u128).div_ceil(g)).min(nbits);
                (first < end).then(|| ((first * g) as u64, (end * g).min(new_size as u128) as u64))
            })
            .collect(),
    )
}

/// `ranges` plus `[offset, offset+len)` rounded out to `2^gbits`, clipped
/// to `size`, merged: what a bitmap marks after a write.
pub fn expected_after(
    ranges: &[(u64, u64)],
    offset: u64,
    len: u64,
    gbits: u8,
    size: u64,
) -> Vec<(u64, u64)> {
    let g = 1u128 << gbits.min(63);
    let a = ((offset as u128 / g) * g) as u64;
    let b = ((offset as u128 + len as u128).div_ceil(g) * g).min(size as u128) as u64;
    let mut v = ranges.to_vec();
    v.push((a, b));
    merge_ranges(v)
}

/// SHA-256 and set-bit count of the bitmap that marks `ranges` (virtual
/// byte ranges) dirty, for a disk of `size` bytes and granularity
/// `2^granularity_bits` (the contents definition of `spec/DIGEST.md`).
pub fn digest_of_ranges(ranges: &[(u64, u64)], size: u64, granularity_bits: u8) -> (String, u64) {
    let g = granularity_bits.min(63) as u32;
    let gran = 1u128 << g;
    let nbits = ((size as u128).div_ceil(gran)) as u64;
    let bits: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|(a, b)| a < b)
        .map(|&(a, b)| {
            let first = ((a as u128) >> g) as u64;
            let end = ((b as u128).div_ceil(gran)) as u64;
            (first.min(nbits), end.min(nbits))
        })
        .collect();
    let bits = generator::contents::normalise(&bits, nbits);
    generator::contents::expected_digest(&bits, nbits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge_ranges(vec![(10, 20), (0, 5), (5, 8), (20, 20), (19, 30)]),
            vec![(0, 8), (10, 30)]
        );
    }

    #[test]
    fn rounding_and_rebasing() {
        assert_eq!(
            round_out(&[(0, 512), (70_000, 70_001)], 16, 1 << 20),
            vec![(0, 131_072)]
        );
        assert_eq!(round_out(&[(1000, 1001)], 16, 5000), vec![(0, 5000)]);
        // Growing: the last bit covers up to the new end of its granule.
        assert_eq!(rebase(&[(0, 5000)], 16, 1 << 20), vec![(0, 65_536)]);
        // Shrinking: bits past the new end are dropped.
        assert_eq!(
            rebase(&[(0, 512), (200_000, 300_000)], 16, 131_072),
            vec![(0, 65_536)]
        );
        assert_eq!(rebase(&[(0, 512)], 9, 100), vec![(0, 100)]);
    }

    #[test]
    fn written_ranges() {
        assert_eq!(
            expected_after(&[(0, 512)], 1000, 70_000, 16, 1 << 20),
            vec![(0, 131072)]
        );
        assert_eq!(expected_after(&[], 1000, 100, 9, 1100), vec![(512, 1100)]);
    }

    #[test]
    fn digests_of_ranges_match_bit_ranges() {
        // 1 MiB disk, 64 KiB granularity: 16 bits; bytes 0..1 and
        // 70000..140000 set bits 0, 1 and 2.
        let (a, n) = digest_of_ranges(&[(0, 1), (70000, 140000)], 1 << 20, 16);
        let (b, m) = generator::contents::expected_digest(&[(0, 3)], 16);
        assert_eq!((a, n), (b, m));
        assert_eq!(n, 3);
    }
}
