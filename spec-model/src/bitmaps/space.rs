//! The space a set of bitmaps takes when it is written into an image
//! (spec "Bitmap directory", "Bitmap table", "Bitmap data"): what a
//! program copying an image's bitmaps into a new one must set aside at
//! most, every bitmap's data taken as fully allocated. `qemu-img measure`
//! reports this as `bitmaps` ("the additional size required if all the
//! top-level bitmap metadata in the source image were to be copied to the
//! destination", QEMU's `BlockMeasureInfo`); the runner's bitmap-operations
//! check compares the two.

use super::content::Geometry;

/// One bitmap to be written: its name's length in bytes and its
/// granularity (`2^granularity_bits` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub name_len: usize,
    pub granularity_bits: u8,
}

/// The bytes a directory entry takes with a name of `name_len` bytes and
/// no extra data: 24 fixed bytes and the name, padded to a multiple of 8.
pub fn entry_bytes(name_len: usize) -> u64 {
    (24 + name_len as u64).div_ceil(8) * 8
}

/// The bytes `bitmaps` take in an image of `size` virtual bytes and
/// clusters of `2^cluster_bits` bytes, at most: for each bitmap, every data
/// cluster its table can name (all allocated) and its table rounded up to
/// whole clusters; then the directory rounded up to whole clusters. The
/// header extension itself lives in the header cluster and takes nothing.
/// Saturates rather than overflows.
pub fn copy_size(bitmaps: &[Planned], size: u64, cluster_bits: u32) -> u64 {
    let cluster = 1u64 << cluster_bits.min(63);
    let whole = |bytes: u64| bytes.div_ceil(cluster).saturating_mul(cluster);
    let mut total = 0u64;
    let mut directory = 0u64;
    for b in bitmaps {
        let geo = Geometry {
            size,
            granularity_bits: u32::from(b.granularity_bits),
            cluster_bits: cluster_bits.min(63),
        };
        let clusters = geo.clusters_needed();
        total = total
            .saturating_add(clusters.saturating_mul(cluster))
            .saturating_add(whole(clusters.saturating_mul(8)));
        directory = directory.saturating_add(entry_bytes(b.name_len));
    }
    total.saturating_add(whole(directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bitmap_on_a_small_disk() {
        // 1 MiB at 64 KiB granularity: 16 bits, 2 bytes, one data cluster,
        // one table cluster, one directory cluster.
        let b = Planned {
            name_len: 1,
            granularity_bits: 16,
        };
        assert_eq!(copy_size(&[b], 1 << 20, 16), 3 * 65536);
        assert_eq!(copy_size(&[], 1 << 20, 16), 0);
        // Two bitmaps share the directory cluster.
        assert_eq!(copy_size(&[b, b], 1 << 20, 16), 5 * 65536);
    }

    #[test]
    fn large_disks_fine_granularity_and_long_names() {
        // 8 GiB at 512 bytes: 2^24 bits = 2 MiB of data = 32 clusters of
        // 64 KiB; a table of 32 entries fits one cluster.
        let b = Planned {
            name_len: 1023,
            granularity_bits: 9,
        };
        assert_eq!(copy_size(&[b], 8 << 30, 16), (32 + 1 + 1) * 65536);
        assert_eq!(entry_bytes(1023), 1048);
        assert_eq!(entry_bytes(0), 24);
        // Never overflows.
        let huge = Planned {
            name_len: usize::MAX / 2,
            granularity_bits: 0,
        };
        let _ = copy_size(&[huge; 4], u64::MAX, 9);
    }
}
