//! Where the probe looks and what it writes: the sample ranges of a
//! virtual disk ([`sample_ranges`]: both ends, the start of allocated
//! clusters, pseudo-random ranges from a fixed seed) and the pattern a
//! write puts there ([`pattern_byte`]).

/// At most this many allocated clusters are sampled (evenly spread).
pub const MAX_CLUSTER_SAMPLES: usize = 512;
/// Bytes read at the start of each sampled allocated cluster.
pub const CLUSTER_SAMPLE_BYTES: u64 = 4096;
/// Bytes read at each end of the disk.
pub const EDGE_SAMPLE_BYTES: u64 = 64 * 1024;
/// Ranges at pseudo-random offsets and lengths (fixed seed).
pub const RANDOM_SAMPLES: usize = 16;

/// A deterministic pseudo-random sequence (splitmix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The sample ranges (offset, length) for a disk: first and last
/// [`EDGE_SAMPLE_BYTES`], the start of every allocated cluster (at most
/// [`MAX_CLUSTER_SAMPLES`], evenly spread), [`RANDOM_SAMPLES`] ranges at
/// pseudo-random unaligned offsets of 1 to 8192 bytes (seeded by the size),
/// all clipped to the disk, sorted, duplicates removed.
pub fn sample_ranges(size: u64, cluster_size: u64, allocated: &[u64]) -> Vec<(u64, u64)> {
    let mut r = Vec::new();
    if size == 0 {
        return r;
    }
    let clip = |o: u64, l: u64| (o, l.min(size - o));
    r.push(clip(0, EDGE_SAMPLE_BYTES));
    let tail = size.saturating_sub(EDGE_SAMPLE_BYTES);
    r.push(clip(tail, EDGE_SAMPLE_BYTES));
    let n = allocated.len();
    let step = n.div_ceil(MAX_CLUSTER_SAMPLES).max(1);
    for &c in allocated.iter().step_by(step) {
        if c < size {
            r.push(clip(c, CLUSTER_SAMPLE_BYTES.min(cluster_size)));
        }
    }
    let mut rng = SplitMix(0x5143_4f57_3262_6d70 ^ size);
    for _ in 0..RANDOM_SAMPLES {
        let o = rng.next() % size;
        let l = 1 + rng.next() % 8192;
        r.push(clip(o, l));
    }
    r.retain(|(_, l)| *l > 0);
    r.sort_unstable();
    r.dedup();
    r
}

/// The byte the probe writes at virtual offset `o` (varies with the
/// offset, so that misplaced data shows).
pub fn pattern_byte(o: u64) -> u8 {
    (o as u8) ^ ((o >> 9) as u8).wrapping_mul(29) ^ 0xa5
}

/// The pattern for `len` bytes at virtual offset `offset`.
pub(super) fn pattern(offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len).map(pattern_byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        assert!(sample_ranges(0, 65536, &[]).is_empty());
        let r = sample_ranges(1000, 65536, &[0]);
        assert!(r.iter().all(|(o, l)| o + l <= 1000 && *l > 0));
        assert!(r.contains(&(0, 1000)));
        let alloc: Vec<u64> = (0..5000).map(|i| i * 65536).collect();
        let r = sample_ranges(5000 * 65536, 65536, &alloc);
        assert!(r.len() <= 2 + MAX_CLUSTER_SAMPLES + RANDOM_SAMPLES);
        assert_eq!(r, sample_ranges(5000 * 65536, 65536, &alloc));
    }
}
