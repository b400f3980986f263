//! The corpus cases made once by QEMU's own tools (`scripts/qemu-cases.sh`)
//! rather than by the generator: bitmaps in overlays of backing chains
//! (after `qemu-img commit`, a safe and an unsafe rebase), in images with
//! an external data file (`data_file_raw` on and off) and in a LUKS image;
//! and the data paths a reader must follow: compressed clusters (deflate
//! and zstd), zero clusters with and without a host cluster, extended L2
//! subclusters past guest cluster 0, a backing file shorter than its
//! overlay, a version 2 image with a backing format extension, and a
//! backing file in a subdirectory.
//! QEMU's LUKS output is random, so these files are checked in under
//! `corpus-src/qemu/<dir>/` and `corpus build` copies them; this table
//! says what each case is and what the spec expects of it: every image is
//! valid, and each bitmap holds exactly the clusters the script wrote
//! while it was enabled (64 KiB granularity; 1 MiB disks, 256 KiB with a data file).

use crate::contents::expected_digest;
use crate::expected::{Expected, ExpectedBitmap, ExpectedFlags};
use spec_model::{ExtensionState, Verdict};

/// The passphrase of the LUKS case (`scripts/qemu-cases.sh`).
pub const LUKS_SECRET: &str = "conform-secret";

/// Every bitmap's granularity (bits).
const GRANULARITY_BITS: u8 = 16;

/// One bitmap as the script left it: name, enabled (`auto`), and the set
/// bits as half-open bit ranges.
pub struct MadeBitmap {
    pub name: &'static str,
    pub auto: bool,
    pub bits: &'static [(u64, u64)],
}

/// One QEMU-made case.
pub struct MadeCase {
    /// The case ID's part after `qemu/`.
    pub name: &'static str,
    /// The directory under `corpus-src/qemu/` (and `images/qemu/`).
    pub dir: &'static str,
    /// The image's file name in that directory.
    pub image: &'static str,
    /// The files the image refers to, in that directory.
    pub companions: &'static [&'static str],
    pub secret: Option<&'static str>,
    pub bitmaps: &'static [MadeBitmap],
    pub description: &'static str,
    /// The virtual disk size in bytes.
    pub disk: u64,
}

/// The QEMU-made cases.
pub const CASES: &[MadeCase] = &[
    MadeCase {
        name: "backing-commit-top",
        dir: "backing-commit",
        image: "top.qcow2",
        companions: &["mid.qcow2", "base.qcow2"],
        secret: None,
        bitmaps: &[MadeBitmap { name: "top-enabled", auto: true, bits: &[(8, 9), (12, 13)] }],
        disk: 1 << 20,
        description: "QEMU-made overlay top.qcow2 <- mid.qcow2 <- base.qcow2 after `qemu-img commit` of top (emptied); its enabled bitmap keeps the writes made to it",
    },
    MadeCase {
        name: "backing-commit-mid",
        dir: "backing-commit",
        image: "mid.qcow2",
        companions: &["base.qcow2"],
        secret: None,
        bitmaps: &[
            MadeBitmap { name: "mid-enabled", auto: true, bits: &[(4, 6), (8, 9), (12, 13)] },
            MadeBitmap { name: "mid-disabled", auto: false, bits: &[] },
        ],
        disk: 1 << 20,
        description: "QEMU-made middle image mid.qcow2 <- base.qcow2 after `qemu-img commit` of its overlay: the enabled bitmap records its own write and the committed clusters, the disabled one nothing",
    },
    MadeCase {
        name: "rebase-safe",
        dir: "rebase-safe",
        image: "top.qcow2",
        companions: &["new.qcow2"],
        secret: None,
        bitmaps: &[MadeBitmap { name: "since-create", auto: true, bits: &[(0, 1), (2, 3), (5, 6), (10, 11)] }],
        disk: 1 << 20,
        description: "QEMU-made overlay after a safe `qemu-img rebase` onto new.qcow2: the clusters where the old and new backing differ were copied into it and its bitmap records them",
    },
    MadeCase {
        name: "rebase-unsafe",
        dir: "rebase-unsafe",
        image: "top.qcow2",
        companions: &["other.qcow2"],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(8, 9)] }],
        disk: 1 << 20,
        description: "QEMU-made overlay after an unsafe `qemu-img rebase -u` onto other.qcow2 (only the backing name changed)",
    },
    MadeCase {
        name: "data-file-raw-on",
        dir: "data-file-raw-on",
        image: "image.qcow2",
        companions: &["disk.data"],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (2, 4)] }],
        disk: 256 << 10,
        description: "QEMU-made image with an external data file disk.data and data_file_raw on",
    },
    MadeCase {
        name: "data-file-raw-off",
        dir: "data-file-raw-off",
        image: "image.qcow2",
        companions: &["disk.data"],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (2, 4)] }],
        disk: 256 << 10,
        description: "QEMU-made image with an external data file disk.data and data_file_raw off",
    },
    MadeCase {
        name: "luks",
        dir: "luks",
        image: "image.qcow2",
        companions: &[],
        secret: Some(LUKS_SECRET),
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (8, 9)] }],
        disk: 1 << 20,
        description: "QEMU-made LUKS-encrypted image (encrypt.format=luks, passphrase in the manifest's secret)",
    },
    MadeCase {
        name: "compressed-deflate",
        dir: "compressed-zlib",
        image: "image.qcow2",
        companions: &[],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (3, 4), (7, 8), (15, 16)] }],
        disk: 1 << 20,
        description: "QEMU-made image with three deflate-compressed guest clusters (compression_type 0; `qemu-io write -c`) and one plain cluster",
    },
    MadeCase {
        name: "compressed-zstd",
        dir: "compressed-zstd",
        image: "image.qcow2",
        companions: &[],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (3, 4), (7, 8), (15, 16)] }],
        disk: 1 << 20,
        description: "QEMU-made image with three zstd-compressed guest clusters (compression_type 1, incompatible bit 3) and one plain cluster",
    },
    MadeCase {
        name: "zero-clusters",
        dir: "zero-clusters",
        image: "image.qcow2",
        companions: &[],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (5, 6), (10, 11)] }],
        disk: 1 << 20,
        description: "QEMU-made image with zero clusters (L2 bit 0): one keeping its host cluster (zeroed over data), others with no host offset (zeroed where nothing was allocated, or with unmap)",
    },
    MadeCase {
        name: "extended-l2",
        dir: "extended-l2",
        image: "image.qcow2",
        companions: &[],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (2, 3)] }],
        disk: 1 << 20,
        description: "QEMU-made image with extended L2 entries (16 KiB clusters): data in guest clusters 1 and 3 only, partly allocated clusters, subclusters read as zero with and without a host cluster",
    },
    MadeCase {
        name: "backing-short",
        dir: "backing-short",
        image: "top.qcow2",
        companions: &["base.qcow2"],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(0, 1), (12, 13)] }],
        disk: 1 << 20,
        description: "QEMU-made 1 MiB overlay of a 512 KiB backing file base.qcow2 (data up to its last cluster): the guest reads zeros past the backing file's end",
    },
    MadeCase {
        name: "version-2-backing",
        dir: "version-2-backing",
        image: "top.qcow2",
        companions: &["base.qcow2"],
        secret: None,
        bitmaps: &[],
        disk: 1 << 20,
        description: "QEMU-made version 2 image (compat=0.10) with a backing file and a backing format header extension after its 72-byte header; no bitmaps (version 2 has no place for them)",
    },
    MadeCase {
        name: "backing-subdir",
        dir: "backing-subdir",
        image: "top.qcow2",
        companions: &["sub/base.qcow2"],
        secret: None,
        bitmaps: &[MadeBitmap { name: "b0", auto: true, bits: &[(4, 5)] }],
        disk: 1 << 20,
        description: "QEMU-made overlay whose backing file name is `sub/base.qcow2`: a backing file in a subdirectory of the image's directory",
    },
];

impl MadeCase {
    /// The case ID.
    pub fn id(&self) -> String {
        format!("qemu/{}", self.name)
    }

    /// What the spec expects: a valid image, a consistent extension (none
    /// without bitmaps), and each bitmap with the bits the script set
    /// while it was enabled.
    pub fn expected(&self) -> Expected {
        let nbits = self.disk.div_ceil(1 << GRANULARITY_BITS);
        let bitmaps = self
            .bitmaps
            .iter()
            .map(|b| {
                let (sha, set) = expected_digest(b.bits, nbits);
                ExpectedBitmap {
                    name: b.name.to_string(),
                    granularity_bits: GRANULARITY_BITS,
                    usable: true,
                    flags: ExpectedFlags {
                        in_use: false,
                        auto: b.auto,
                    },
                    content_sha256: Some(sha),
                    set_bits: Some(set),
                }
            })
            .collect();
        Expected {
            verdict: Verdict::Valid,
            rules: Vec::new(),
            bitmaps_extension: if self.bitmaps.is_empty() {
                ExtensionState::Absent
            } else {
                ExtensionState::Consistent
            },
            bitmaps: Some(bitmaps),
        }
    }
}
