//! Shrinking an [`ImageSpec`]: the smaller specs a minimiser tries in
//! turn (the campaign shrinks the base spec of a disagreeing case with
//! them).

use crate::contents::{normalise, Contents};
use crate::spec::ImageSpec;

/// Smaller variants of a spec: quickcheck's shrinks (fewer bitmaps,
/// writes, snapshots, extensions; plain layout; empty contents), then a
/// disk of one cluster and half the disk, then 512-byte clusters and
/// clusters half as large. A smaller disk keeps what fits of the writes
/// and bitmap contents.
pub fn smaller_specs(spec: &ImageSpec) -> Vec<ImageSpec> {
    let mut out: Vec<ImageSpec> = quickcheck::Arbitrary::shrink(spec).collect();
    let cs = 1u64 << spec.cluster_bits;
    let half = if spec.size.is_multiple_of(512) {
        (spec.size / 2).div_ceil(512) * 512
    } else {
        spec.size / 2
    };
    for size in [cs, half] {
        if size == 0 || size >= spec.size || out.iter().any(|s| s.size == size) {
            continue;
        }
        let mut s = spec.clone();
        s.size = size;
        s.writes.retain(|w| w.offset < size);
        for w in &mut s.writes {
            w.len = w.len.min(size - w.offset);
        }
        for b in 0..s.bitmaps.len() {
            let nbits = s.geometry(&s.bitmaps[b]).nbits();
            if let Contents::Ranges(r) = &s.bitmaps[b].contents {
                s.bitmaps[b].contents = Contents::Ranges(normalise(r, nbits));
            }
        }
        out.push(s);
    }
    let min_bits = if spec.extended_l2 { 14 } else { 9 };
    for bits in [min_bits, spec.cluster_bits.saturating_sub(1)] {
        if bits < min_bits
            || bits >= spec.cluster_bits
            || out.iter().any(|s| s.cluster_bits == bits)
        {
            continue;
        }
        let mut s = spec.clone();
        s.cluster_bits = bits;
        if s.header_area_len() <= 1 << bits {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GuestWrite;

    #[test]
    fn smaller_disks_and_clusters_keep_what_fits() {
        let mut spec = ImageSpec::empty(1 << 20);
        spec.cluster_bits = 16;
        spec.writes.push(GuestWrite::new(400 << 10, 300 << 10, 1));
        let smaller = smaller_specs(&spec);
        let half = smaller.iter().find(|s| s.size == 512 << 10).expect("half");
        assert_eq!(half.writes[0].len, 112 << 10);
        let one = smaller
            .iter()
            .find(|s| s.size == 64 << 10)
            .expect("one cluster");
        assert!(one.writes.is_empty());
        assert!(smaller.iter().any(|s| s.cluster_bits == 9));
        assert!(smaller.iter().any(|s| s.cluster_bits == 15));
        assert!(smaller.iter().all(|s| s.size <= spec.size));
    }
}
