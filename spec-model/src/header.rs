//! The image header (spec "Header") and its rules.

use crate::fields::header as hdr;
use crate::finding::Findings;
use crate::io::{CheckError, Image};
use crate::rules::{Rule, Severity};
use serde::Serialize;
use std::io::{Read, Seek};

/// QEMU opens clusters of at most 2 MiB.
pub const QEMU_MAX_CLUSTER_BITS: u32 = 21;
/// The smallest cluster the spec allows.
pub const MIN_CLUSTER_BITS: u32 = 9;

/// The parsed header, with every field of the field table.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    /// The raw header bytes (header_length of them), for dumps.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// True when `offset` is a multiple of the cluster size.
    pub fn aligned(&self, offset: u64) -> bool {
        offset & (self.cluster_size() - 1) == 0
    }

    /// True for incompatible feature bit 4 (extended L2 entries).
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & hdr::INCOMPAT_EXTENDED_L2 != 0
    }

    /// Bytes per L2 entry.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Where the header extensions start.
    pub fn extensions_start(&self) -> u64 {
        if self.version == 2 {
            hdr::V2_LENGTH as u64
        } else {
            u64::from(self.header_length)
        }
    }

    /// L1 entries needed to map `size` virtual bytes.
    pub fn l1_entries_needed(&self, size: u64) -> u128 {
        let per_l1 = u128::from(self.cluster_size()) * u128::from(self.l2_entries());
        u128::from(size).div_ceil(per_l1)
    }
}

/// The most of the header (as `header_length` gives it) that is kept.
const MAX_HEADER_KEPT: u64 = 2 << 20;

/// Breaks `rule` at feature bit field `field` when its `value` sets a bit
/// outside `known` (bits the spec calls `word`).
fn unknown_bits(
    findings: &mut Findings,
    rule: Rule,
    field: crate::fields::Field,
    (value, known): (u64, u64),
    word: &str,
) {
    let unknown = value & !known;
    if unknown != 0 {
        findings.add_with(
            rule,
            field.offset as u64,
            msg!("{} is {value:#x}: {word} bits {unknown:#x} set", field.name),
        );
    }
}

/// Reads and validates the header. Returns `None` when the file cannot be
/// interpreted as qcow2 at all (the findings say why).
pub fn parse<R: Read + Seek>(
    img: &mut Image<R>,
    findings: &mut Findings,
) -> Result<Option<Header>, CheckError> {
    let head = img.read_clipped(0, hdr::V3_MIN_LENGTH as u64)?;
    if head.len() < hdr::MAGIC.end() || hdr::MAGIC.get(&head) != 0x5146_49fb {
        let got = if head.len() < 4 {
            format!("file is only {} bytes long", img.len())
        } else {
            format!("magic is {:#010x}", hdr::MAGIC.get(&head))
        };
        findings.add_with(
            Rule::HeaderMagic,
            0,
            msg!("not a qcow2 image: {got}, expected 0x514649fb (\"QFI\\xfb\")"),
        );
        return Ok(None);
    }
    let version = hdr::VERSION.get(&head) as u32;
    if version != 2 && version != 3 {
        findings.add_with(
            Rule::HeaderVersion,
            hdr::VERSION.offset as u64,
            msg!("version is {version}, expected 2 or 3"),
        );
        return Ok(None);
    }
    let fixed = if version == 2 {
        hdr::V2_LENGTH
    } else {
        hdr::V3_MIN_LENGTH
    };
    if head.len() < fixed {
        findings.add_with(
            Rule::HeaderTruncated,
            0,
            msg!(
                "version {version} header needs {fixed} bytes, the file has {}",
                img.len()
            ),
        );
        return Ok(None);
    }
    let get = |fl: crate::fields::Field| fl.get(&head);
    let mut h = Header {
        version,
        backing_file_offset: get(hdr::BACKING_FILE_OFFSET),
        backing_file_size: get(hdr::BACKING_FILE_SIZE) as u32,
        cluster_bits: get(hdr::CLUSTER_BITS) as u32,
        size: get(hdr::SIZE),
        crypt_method: get(hdr::CRYPT_METHOD) as u32,
        l1_size: get(hdr::L1_SIZE) as u32,
        l1_table_offset: get(hdr::L1_TABLE_OFFSET),
        refcount_table_offset: get(hdr::REFCOUNT_TABLE_OFFSET),
        refcount_table_clusters: get(hdr::REFCOUNT_TABLE_CLUSTERS) as u32,
        nb_snapshots: get(hdr::NB_SNAPSHOTS) as u32,
        snapshots_offset: get(hdr::SNAPSHOTS_OFFSET),
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: hdr::V2_LENGTH as u32,
        compression_type: 0,
        raw: Vec::new(),
    };
    if version == 3 {
        h.incompatible_features = get(hdr::INCOMPATIBLE_FEATURES);
        h.compatible_features = get(hdr::COMPATIBLE_FEATURES);
        h.autoclear_features = get(hdr::AUTOCLEAR_FEATURES);
        h.refcount_order = get(hdr::REFCOUNT_ORDER) as u32;
        h.header_length = get(hdr::HEADER_LENGTH) as u32;
    }

    let at = |fl: crate::fields::Field| fl.offset as u64;
    if h.cluster_bits < MIN_CLUSTER_BITS || h.cluster_bits > 63 {
        findings.add_as_with(
            Rule::HeaderClusterBits,
            Severity::Error,
            at(hdr::CLUSTER_BITS),
            msg!(
                "cluster_bits is {}, expected at least 9 (and below 64, so that a cluster is addressable)",
                h.cluster_bits
            ),
        );
        return Ok(None);
    }
    if h.cluster_bits > QEMU_MAX_CLUSTER_BITS {
        findings.add_as_with(
            Rule::HeaderClusterBits,
            Severity::Limit,
            at(hdr::CLUSTER_BITS),
            msg!(
                "cluster_bits is {}, QEMU opens at most {QEMU_MAX_CLUSTER_BITS}",
                h.cluster_bits
            ),
        );
    }
    if version == 3 {
        let hl = u64::from(h.header_length);
        if hl < hdr::V3_MIN_LENGTH as u64 || hl % 8 != 0 {
            findings.add_with(
                Rule::HeaderLength,
                at(hdr::HEADER_LENGTH),
                msg!("header_length is {hl}, expected a multiple of 8 that is at least 104"),
            );
            // Extensions are still searched after the 104 fixed bytes.
            if hl < hdr::V3_MIN_LENGTH as u64 {
                h.header_length = hdr::V3_MIN_LENGTH as u32;
            }
        }
        unknown_bits(
            findings,
            Rule::HeaderIncompatibleBits,
            hdr::INCOMPATIBLE_FEATURES,
            (h.incompatible_features, hdr::INCOMPAT_KNOWN),
            "reserved",
        );
        if h.refcount_order > 6 {
            findings.add_with(
                Rule::HeaderRefcountOrder,
                at(hdr::REFCOUNT_ORDER),
                msg!("refcount_order is {}, at most 6 allowed", h.refcount_order),
            );
        }
        unknown_bits(
            findings,
            Rule::HeaderAutoclearUnknown,
            hdr::AUTOCLEAR_FEATURES,
            (h.autoclear_features, hdr::AUTOCLEAR_KNOWN),
            "undefined",
        );
        if h.header_length as usize > hdr::COMPRESSION_TYPE.offset {
            // Kept up to the largest cluster (2 MiB): header_length can
            // claim 4 GiB, and no field lies that far.
            let raw = img.read_clipped(0, u64::from(h.header_length).min(MAX_HEADER_KEPT))?;
            h.compression_type = hdr::COMPRESSION_TYPE.get(&raw) as u8;
            if img.len() < u64::from(h.header_length) {
                findings.add_with(
                    Rule::HeaderTruncated,
                    at(hdr::HEADER_LENGTH),
                    msg!(
                        "header_length is {}, the file has only {} bytes",
                        h.header_length,
                        img.len()
                    ),
                );
            }
            h.raw = raw;
        }
        let pad_end = (h.header_length as usize).min(112).min(h.raw.len());
        let pad_start = hdr::COMPRESSION_TYPE.end();
        if pad_end > pad_start && h.raw[pad_start..pad_end].iter().any(|&b| b != 0) {
            findings.add_with(
                Rule::HeaderPadding,
                pad_start as u64,
                msg!(
                    "header padding bytes {pad_start}-{} are {:02x?}, must be zero",
                    pad_end - 1,
                    &h.raw[pad_start..pad_end]
                ),
            );
        }
        if h.autoclear_features & hdr::AUTOCLEAR_RAW_EXTERNAL != 0
            && h.incompatible_features & hdr::INCOMPAT_EXTERNAL_DATA == 0
        {
            findings.add_with(
                Rule::HeaderRawExternal,
                at(hdr::AUTOCLEAR_FEATURES),
                msg!(
                    "autoclear_features is {:#x}: raw external data (bit 1) without an external data file (incompatible bit 2)",
                    h.autoclear_features
                ),
            );
        }
        let bit = h.incompatible_features & hdr::INCOMPAT_COMPRESSION != 0;
        if bit != (h.compression_type != 0) {
            findings.add_with(
                Rule::HeaderCompressionType,
                at(hdr::COMPRESSION_TYPE),
                msg!(
                    "compression_type is {} while incompatible bit 3 is {}",
                    h.compression_type,
                    if bit { "set" } else { "clear" }
                ),
            );
        }
        if h.extended_l2() && h.cluster_bits < 14 {
            findings.add_with(
                Rule::HeaderExtendedL2,
                at(hdr::CLUSTER_BITS),
                msg!(
                    "extended L2 entries need cluster_bits >= 14, it is {}",
                    h.cluster_bits
                ),
            );
        }
        if h.incompatible_features & hdr::INCOMPAT_DIRTY != 0 {
            findings.add(
                Rule::HeaderDirty,
                at(hdr::INCOMPATIBLE_FEATURES),
                "dirty bit set: refcounts may be stale, so they are not compared",
            );
        }
        if h.incompatible_features & hdr::INCOMPAT_CORRUPT != 0 {
            findings.add(
                Rule::HeaderCorrupt,
                at(hdr::INCOMPATIBLE_FEATURES),
                "corrupt bit set: the image may only be opened read-only",
            );
        }
    }
    if h.raw.is_empty() {
        h.raw = head[..fixed.min(head.len())].to_vec();
    }
    if h.crypt_method > 2 {
        findings.add_with(
            Rule::HeaderCryptMethod,
            at(hdr::CRYPT_METHOD),
            msg!("crypt_method is {}, expected 0, 1 or 2", h.crypt_method),
        );
    }
    for (field, value) in [
        (hdr::L1_TABLE_OFFSET, h.l1_table_offset),
        (hdr::REFCOUNT_TABLE_OFFSET, h.refcount_table_offset),
        (hdr::SNAPSHOTS_OFFSET, h.snapshots_offset),
    ] {
        if !h.aligned(value) {
            findings.add_with(
                Rule::HeaderAlignment,
                at(field),
                msg!(
                    "{} is {value:#x}, not a multiple of the cluster size {:#x}",
                    field.name,
                    h.cluster_size()
                ),
            );
        }
    }
    if h.backing_file_offset != 0 {
        let end = h
            .backing_file_offset
            .checked_add(u64::from(h.backing_file_size));
        if h.backing_file_size > 1023 || end.is_none_or(|e| e > h.cluster_size()) {
            findings.add_with(
                Rule::HeaderBackingFile,
                at(hdr::BACKING_FILE_OFFSET),
                msg!(
                    "backing file name at {:#x}, {} bytes: must be at most 1023 bytes inside the first cluster",
                    h.backing_file_offset, h.backing_file_size
                ),
            );
        }
    }
    let needed = h.l1_entries_needed(h.size);
    if u128::from(h.l1_size) < needed {
        findings.add_with(
            Rule::HeaderL1Size,
            at(hdr::L1_SIZE),
            msg!(
                "l1_size is {}, the virtual size {} needs {needed} entries",
                h.l1_size,
                h.size
            ),
        );
    }
    Ok(Some(h))
}
