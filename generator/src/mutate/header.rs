//! Mutations that break the image header (spec "Header"; rules `header.*`):
//! magic, version, cluster size, feature bits, reserved fields, and the
//! valid images at the edges of what implementations support.

use super::prep::{keep, p_sized, p_v3, p_v3_long_header, v3};
use super::{mutation, ExtState, Mutation};
use rand::Rng;
use spec_model::fields::header as hf;
use spec_model::Rule;
use spec_model::Severity::{Error, Limit, Note, Unspecified};

/// This section of the catalogue, in the catalogue's order.
pub(super) static MUTATIONS: &[Mutation] = &[
    mutation(
        "header.magic/wrong-byte",
        Rule::HeaderMagic,
        Error,
        "one byte of the magic changed: not a qcow2 image at all",
        keep,
        |t| {
            let k = t.rng.gen_range(0..4);
            t.bytes[k] ^= t.rng.gen_range(1..=255u8);
            Ok(())
        },
    )
    .ext(ExtState::Absent),
    mutation(
        "header.truncated/inside-header",
        Rule::HeaderTruncated,
        Error,
        "the file ends after the version field but inside the fixed header",
        keep,
        |t| {
            let fixed = if t.spec.version == 2 {
                hf::V2_LENGTH
            } else {
                hf::V3_MIN_LENGTH
            };
            let n = t.rng.gen_range(hf::VERSION.end()..fixed);
            t.bytes.truncate(n);
            Ok(())
        },
    )
    .ext(ExtState::Absent),
    mutation(
        "header.version/unknown",
        Rule::HeaderVersion,
        Error,
        "version set to a value other than 2 or 3",
        keep,
        |t| {
            let v = match t.rng.gen_range(0..3) {
                0 => t.rng.gen_range(0..2),
                1 => 4,
                _ => t.rng.gen_range(4..=u64::from(u32::MAX)),
            };
            t.put(0, hf::VERSION, v);
            Ok(())
        },
    )
    .ext(ExtState::Absent),
    mutation(
        "header.cluster-bits/below-9",
        Rule::HeaderClusterBits,
        Error,
        "cluster_bits set below 9: the header cannot be interpreted further",
        keep,
        |t| t.put_random(0, hf::CLUSTER_BITS, 0..9),
    )
    .ext(ExtState::Absent),
    mutation(
        "header.cluster-bits/22",
        Rule::HeaderClusterBits,
        Limit,
        "a valid image with 4 MiB clusters (cluster_bits 22), beyond QEMU's 2 MiB; \
         no byte changed; the smallest such image (empty disk, no bitmaps) is 12 MiB",
        |s, _| {
            s.cluster_bits = 22;
            s.size = 0;
            s.writes.clear();
            s.bitmaps.clear();
            s.snapshots.clear();
            Ok(())
        },
        |_| Ok(()),
    )
    .heavy(),
    mutation(
        "header.length/100",
        Rule::HeaderLength,
        Error,
        "a 104-byte v3 header claims header_length 100 (extensions still start at 104)",
        |s, _| {
            v3(s);
            s.header_length = 104;
            Ok(())
        },
        |t| {
            t.put(0, hf::HEADER_LENGTH, 100);
            Ok(())
        },
    ),
    mutation(
        "header.incompatible-bits/reserved-bit",
        Rule::HeaderIncompatibleBits,
        Error,
        "one reserved incompatible feature bit (5-63) set",
        p_v3,
        |t| t.set_random_bit(0, hf::INCOMPATIBLE_FEATURES, 5..64),
    ),
    mutation(
        "header.refcount-order/above-6",
        Rule::HeaderRefcountOrder,
        Error,
        "refcount_order set above 6",
        p_v3,
        |t| t.put_random(0, hf::REFCOUNT_ORDER, 7..=255),
    ),
    mutation(
        "header.alignment/l1-offset",
        Rule::HeaderAlignment,
        Error,
        "l1_table_offset moved 8 bytes off its cluster boundary (the active L1 \
         table cannot be located; what it mapped shows as leaked)",
        keep,
        |t| t.update(0, hf::L1_TABLE_OFFSET, |v| v + 8),
    ),
    mutation(
        "header.compression-type/without-bit",
        Rule::HeaderCompressionType,
        Error,
        "compression_type set to a non-zero value without incompatible bit 3",
        p_v3_long_header,
        |t| t.put_random(0, hf::COMPRESSION_TYPE, 1..=255),
    ),
    mutation(
        "header.autoclear-unknown/reserved-bit",
        Rule::HeaderAutoclearUnknown,
        Unspecified,
        "one undefined autoclear bit (2-63) set",
        p_v3,
        |t| t.set_random_bit(0, hf::AUTOCLEAR_FEATURES, 2..64),
    ),
    mutation(
        "header.padding/non-zero",
        Rule::HeaderPadding,
        Error,
        "one byte of the header padding (bytes 105-111) non-zero",
        p_v3_long_header,
        |t| {
            let k = t.rng.gen_range(hf::COMPRESSION_TYPE.end()..112);
            t.bytes[k] = t.rng.gen_range(1..=255);
            Ok(())
        },
    ),
    mutation(
        "header.raw-external/without-data-file",
        Rule::HeaderRawExternal,
        Error,
        "autoclear bit 1 (raw external data) set without an external data file",
        p_v3,
        |t| t.set_bits(0, hf::AUTOCLEAR_FEATURES, hf::AUTOCLEAR_RAW_EXTERNAL),
    ),
    mutation(
        "header.encryption-extension/luks-without-extension",
        Rule::HeaderEncryptionExtension,
        Error,
        "crypt_method 2 (LUKS) without a full disk encryption header extension",
        keep,
        |t| {
            t.put(0, hf::CRYPT_METHOD, 2);
            Ok(())
        },
    ),
    mutation(
        "header.crypt-method/unknown",
        Rule::HeaderCryptMethod,
        Error,
        "crypt_method set to a value other than 0, 1 or 2",
        keep,
        |t| t.put_random(0, hf::CRYPT_METHOD, 3..=u64::from(u32::MAX)),
    ),
    mutation(
        "header.backing-file/name-1024",
        Rule::HeaderBackingFile,
        Error,
        "a backing file name of 1024 bytes (at most 1023 allowed) in the first cluster",
        keep,
        |t| {
            let at = t.spec.header_area_len();
            t.put(0, hf::BACKING_FILE_OFFSET, at);
            t.put(0, hf::BACKING_FILE_SIZE, 1024);
            Ok(())
        },
    ),
    mutation(
        "header.l1-size/one-short",
        Rule::HeaderL1Size,
        Error,
        "l1_size one entry smaller than the virtual size needs",
        p_sized,
        |t| t.lower(0, hf::L1_SIZE, 1, "empty L1 table"),
    ),
    mutation(
        "header.extended-l2/small-clusters",
        Rule::HeaderExtendedL2,
        Error,
        "a v3 image with extended L2 entries and cluster_bits 9-13, consistently \
         built; no byte changed",
        |s, u| {
            v3(s);
            s.extended_l2 = true;
            s.cluster_bits = u.int_in_range(9..=13)?;
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "header.dirty/set",
        Rule::HeaderDirty,
        Note,
        "incompatible bit 0 (dirty) set: refcounts are not compared",
        p_v3,
        |t| t.set_bits(0, hf::INCOMPATIBLE_FEATURES, hf::INCOMPAT_DIRTY),
    ),
    mutation(
        "header.corrupt/set",
        Rule::HeaderCorrupt,
        Note,
        "incompatible bit 1 (corrupt) set",
        p_v3,
        |t| t.set_bits(0, hf::INCOMPATIBLE_FEATURES, hf::INCOMPAT_CORRUPT),
    ),
];
