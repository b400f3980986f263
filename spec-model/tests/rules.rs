//! One image that breaks each catalogue rule and one at its boundary that
//! does not, plus a check that the table covers the whole catalogue.
//!
//! Every case is a `#[test]` of its own (named after the case) and a row of
//! `cases()`, which `every_rule_has_a_breaker_and_a_boundary` checks
//! against `Rule::ALL`.

mod support;

use sha2::{Digest, Sha256};
use spec_model::fields::{bitmap_entry, bitmaps_ext, extension, header, mapping, snapshot};
use spec_model::{ExtensionState, Report, Rule, Severity, Verdict};
use support::{base, base_bitmap, nbits, BitmapSpec, Image, Spec, SIZE, UNKNOWN_EXT};

/// What a case expects of its rule.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The rule is reported with this severity, and it is the only error
    /// of the image (for non-error severities: the image has no error).
    Only(Severity),
    /// The rule is reported with this severity; other findings may follow.
    Breaks(Severity),
    /// The rule is not reported at all.
    Holds,
    /// The rule is not reported with this severity.
    HoldsAs(Severity),
}

struct Case {
    name: &'static str,
    rule: &'static str,
    expect: Expect,
    build: fn() -> Image,
}

fn has(r: &Report, rule: &str, severity: Severity) -> bool {
    r.findings
        .iter()
        .any(|f| f.rule.id() == rule && f.severity == severity)
}

/// Checks one case; returns a description of what went wrong, if anything.
fn evaluate(case: &Case) -> Result<(), String> {
    let r = (case.build)().check();
    let fail = |what: String| Err(format!("{}: {what}\n{}", case.name, r.summary()));
    match case.expect {
        Expect::Only(sev) | Expect::Breaks(sev) => {
            if !has(&r, case.rule, sev) {
                return fail(format!("expected {} as {sev:?}", case.rule));
            }
            if sev == Severity::Error && r.verdict != Verdict::Invalid {
                return fail("an error finding must make the verdict invalid".into());
            }
            if let Expect::Only(sev) = case.expect {
                let errors = r.rules_with(Severity::Error);
                let want: Vec<&str> = if sev == Severity::Error {
                    vec![case.rule]
                } else {
                    Vec::new()
                };
                if errors != want {
                    return fail(format!("expected errors {want:?}, got {errors:?}"));
                }
                let verdict = match sev {
                    Severity::Error => Verdict::Invalid,
                    Severity::Unspecified => Verdict::Unspecified,
                    _ => Verdict::Valid,
                };
                if r.verdict != verdict {
                    return fail(format!("expected verdict {verdict:?}"));
                }
            }
        }
        Expect::Holds => {
            if r.findings.iter().any(|f| f.rule.id() == case.rule) {
                return fail(format!("{} must not be reported", case.rule));
            }
        }
        Expect::HoldsAs(sev) => {
            if has(&r, case.rule, sev) {
                return fail(format!("{} must not be reported as {sev:?}", case.rule));
            }
        }
    }
    Ok(())
}

fn run_case(name: &str) {
    let cases = cases();
    let case = cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    if let Err(e) = evaluate(case) {
        panic!("{e}");
    }
}

macro_rules! cases {
    ($( $name:ident: $rule:literal, $expect:expr, $build:expr; )*) => {
        fn cases() -> Vec<Case> {
            #[allow(unused_imports)]
            use Expect::*;
            #[allow(unused_imports)]
            use Severity::*;
            vec![$(Case {
                name: stringify!($name),
                rule: $rule,
                expect: $expect,
                build: $build,
            }),*]
        }
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
    };
}

// ---------------------------------------------------------------------
// Small edits shared by several cases.

fn patched(spec: Spec, f: impl FnOnce(&mut Image)) -> Image {
    spec.build().with(f)
}

/// Edits the base image.
fn base_with(f: impl FnOnce(&mut Image)) -> Image {
    patched(base(), f)
}

fn with_bitmaps(bitmaps: Vec<BitmapSpec>) -> Image {
    Spec {
        bitmaps,
        ..Spec::default()
    }
    .build()
}

fn with_bitmap(b: BitmapSpec) -> Image {
    with_bitmaps(vec![b])
}

fn header_put(img: &mut Image, field: spec_model::fields::Field, value: u64) {
    img.put(0, field, value);
}

fn header_get(img: &Image, field: spec_model::fields::Field) -> u64 {
    img.get(0, field)
}

fn ext_put(img: &mut Image, field: spec_model::fields::Field, value: u64) {
    let at = img.layout.bitmaps_ext_data();
    img.put(at, field, value);
}

fn entry_put(img: &mut Image, i: usize, field: spec_model::fields::Field, value: u64) {
    let at = img.layout.entries[i].offset;
    img.put(at, field, value);
}

fn entry_get(img: &Image, i: usize, field: spec_model::fields::Field) -> u64 {
    img.get(img.layout.entries[i].offset, field)
}

/// Moves `len` bytes at `from` forward by `by` bytes (zeroing the gap).
fn shift_bytes(img: &mut Image, from: u64, len: u64, by: u64) {
    let (from, len, by) = (from as usize, len as usize, by as usize);
    img.bytes.copy_within(from..from + len, from + by);
    img.bytes[from..from + by].fill(0);
}

/// The base image with an unknown extension after the bitmaps extension
/// whose data, unpadded, ends exactly at the end of the first cluster.
fn ext_filling_first_cluster() -> Image {
    let probe = Spec {
        extra_extensions: vec![(UNKNOWN_EXT, Vec::new())],
        ..base()
    }
    .build();
    let at = probe.layout.extension(UNKNOWN_EXT);
    let len = probe.layout.cluster_size - at - extension::PREFIX_LENGTH as u64;
    Spec {
        extra_extensions: vec![(UNKNOWN_EXT, vec![0x11; len as usize])],
        ..base()
    }
    .build()
}

/// The base image plus an unknown 5-byte extension (3 bytes of padding).
fn short_unknown_ext() -> Image {
    Spec {
        extra_extensions: vec![(UNKNOWN_EXT, b"hello".to_vec())],
        ..base()
    }
    .build()
}

/// `n` in_use bitmaps with 8-byte names and empty tables: a directory of
/// 32-byte entries and nothing else.
fn many_in_use(n: u32) -> Image {
    let bitmaps = (0..n)
        .map(|i| {
            BitmapSpec::new(format!("{i:08x}"), 16)
                .flags(bitmap_entry::FLAG_IN_USE)
                .table_size(0)
        })
        .collect();
    with_bitmaps(bitmaps)
}

/// One bitmap whose directory entry fills `dir_size` bytes with extra data.
fn directory_of_size(dir_size: u64) -> Image {
    let extra = dir_size - bitmap_entry::FIXED_LENGTH as u64 - 8;
    with_bitmap(
        BitmapSpec::new("bigextra", 16)
            .bits(&[3])
            .flags(bitmap_entry::FLAG_AUTO | bitmap_entry::FLAG_EXTRA_DATA_COMPATIBLE)
            .extra_data(vec![0; extra as usize]),
    )
}

fn with_name(name: &[u8]) -> Image {
    with_bitmap(BitmapSpec::new(name, 16).bits(&[1]))
}

fn with_granularity(g: u8) -> Image {
    with_bitmap(BitmapSpec::new("g", g).bits(&[0]))
}

fn two_named(a: &[u8], b: &[u8]) -> Image {
    with_bitmaps(vec![
        BitmapSpec::new(a, 16).bits(&[1]),
        BitmapSpec::new(b, 12).bits(&[2]),
    ])
}

fn with_cluster_bits(cluster_bits: u32) -> Image {
    Spec {
        cluster_bits,
        ..base()
    }
    .build()
}

fn extended_l2(cluster_bits: u32) -> Image {
    Spec {
        cluster_bits,
        extended_l2: true,
        ..base()
    }
    .build()
}

fn with_snapshot(extra: u32) -> Image {
    Spec {
        snapshot_extra_data: Some(extra),
        ..base()
    }
    .build()
}

fn v2(bitmaps: bool) -> Spec {
    Spec {
        version: 2,
        bitmaps: if bitmaps {
            vec![base_bitmap()]
        } else {
            Vec::new()
        },
        ..Spec::default()
    }
}

fn compression(header_length: u32, compression_type: u8, bit: bool) -> Image {
    Spec {
        header_length,
        compression_type,
        incompatible_features: if bit { header::INCOMPAT_COMPRESSION } else { 0 },
        ..base()
    }
    .build()
}

fn backing_name(offset_from_end: u64, size: u64) -> Image {
    base_with(|img| {
        let at = img.layout.cluster_size - offset_from_end;
        img.bytes[at as usize..(at + size).min(img.layout.cluster_size) as usize].fill(b'a');
        header_put(img, header::BACKING_FILE_OFFSET, at);
        header_put(img, header::BACKING_FILE_SIZE, size);
    })
}

/// Last data cluster of bitmap 0 of the base image (table entry 1).
fn last_data(img: &Image) -> u64 {
    img.layout.entries[0].data[1]
}

/// Sets bit `k` of bitmap 0's data, in whichever data cluster holds it.
fn set_data_bit(img: &mut Image, k: u64) {
    let cs = img.layout.cluster_size;
    let byte = k / 8;
    let cluster = img.layout.entries[0].data[(byte / cs) as usize];
    img.bytes[(cluster + byte % cs) as usize] |= 1 << (k % 8);
}

/// The base image with its bitmap marked in_use, then edited.
fn in_use_base(f: impl FnOnce(&mut Image)) -> Image {
    with_bitmap(base_bitmap().flags(bitmap_entry::FLAG_IN_USE)).with(f)
}

fn l1_entry(img: &Image, i: u64) -> u64 {
    img.layout.l1_offset + 8 * i
}

/// Makes L2 entry 1 point at guest cluster 0 too, as a shared cluster
/// (COPIED clear), with guest cluster 0's refcount `rc`; guest cluster 1
/// becomes free.
fn shared_guest_cluster(rc: u64) -> Image {
    base_with(|img| {
        let d0 = img.layout.guest_data[0];
        let d1 = img.layout.guest_data[1];
        let (e0, e1) = (img.layout.l2_entry(0), img.layout.l2_entry(1));
        img.put_u64(e0, d0);
        img.put_u64(e1, d0);
        img.set_refcount(d0, rc);
        img.set_refcount(d1, 0);
    })
}

// ---------------------------------------------------------------------
// The cases, by catalogue rule.

cases! {
    // header.magic
    magic_wrong: "header.magic", Only(Error), || base_with(|img| header_put(img, header::MAGIC, 0x5146_49fa));
    magic_right: "header.magic", Holds, || base().build();

    // header.truncated
    truncated_v3_at_103: "header.truncated", Only(Error), || base_with(|img| img.bytes.truncate(103));
    truncated_v3_at_104: "header.truncated", Holds, || base_with(|img| img.bytes.truncate(104));
    truncated_v3_long_header: "header.truncated", Breaks(Error), || patched(
        Spec { header_length: 112, ..base() }, |img| img.bytes.truncate(111));
    truncated_v2_at_71: "header.truncated", Only(Error), || patched(v2(false), |img| img.bytes.truncate(71));
    truncated_v2_at_72: "header.truncated", Holds, || patched(v2(false), |img| img.bytes.truncate(72));

    // header.version
    version_1: "header.version", Only(Error), || base_with(|img| header_put(img, header::VERSION, 1));
    version_4: "header.version", Only(Error), || base_with(|img| header_put(img, header::VERSION, 4));
    version_2: "header.version", Holds, || v2(false).build();
    version_3: "header.version", Holds, || base().build();

    // header.cluster-bits
    cluster_bits_8: "header.cluster-bits", Only(Error), || base_with(|img| header_put(img, header::CLUSTER_BITS, 8));
    cluster_bits_9: "header.cluster-bits", Holds, || with_cluster_bits(9);
    cluster_bits_21: "header.cluster-bits", Holds, || patched(Spec { cluster_bits: 21, guest_clusters: 0, ..base() }, |_| ());
    cluster_bits_22: "header.cluster-bits", Only(Limit), || patched(Spec { cluster_bits: 22, guest_clusters: 0, ..base() }, |_| ());
    cluster_bits_64: "header.cluster-bits", Only(Error), || base_with(|img| header_put(img, header::CLUSTER_BITS, 64));

    // header.length
    header_length_100: "header.length", Only(Error), || base_with(|img| header_put(img, header::HEADER_LENGTH, 100));
    header_length_108: "header.length", Only(Error), || Spec { header_length: 108, ..base() }.build();
    header_length_104: "header.length", Holds, || base().build();
    header_length_112: "header.length", Holds, || Spec { header_length: 112, ..base() }.build();

    // header.incompatible-bits
    incompatible_bit_5: "header.incompatible-bits", Only(Error), || base_with(|img| header_put(img, header::INCOMPATIBLE_FEATURES, 1 << 5));
    incompatible_bit_63: "header.incompatible-bits", Only(Error), || base_with(|img| header_put(img, header::INCOMPATIBLE_FEATURES, 1 << 63));
    incompatible_bit_4: "header.incompatible-bits", Holds, || extended_l2(14);

    // header.refcount-order
    refcount_order_7: "header.refcount-order", Only(Error), || patched(
        Spec { refcount_order: 6, ..base() }, |img| header_put(img, header::REFCOUNT_ORDER, 7));
    refcount_order_6: "header.refcount-order", Holds, || Spec { refcount_order: 6, ..base() }.build();

    // header.alignment
    l1_offset_misaligned: "header.alignment", Only(Error), || base_with(|img| {
        let off = img.layout.l1_offset + 512;
        header_put(img, header::L1_TABLE_OFFSET, off);
    });
    snapshots_offset_misaligned: "header.alignment", Only(Error), || base_with(|img| header_put(img, header::SNAPSHOTS_OFFSET, 8));
    refcount_table_offset_misaligned: "header.alignment", Breaks(Error), || base_with(|img| {
        let off = img.layout.refcount_table_offset + 512;
        header_put(img, header::REFCOUNT_TABLE_OFFSET, off);
    });
    offsets_aligned_to_512: "header.alignment", Holds, || Spec { cluster_bits: 9, snapshot_extra_data: Some(16), ..base() }.build();

    // header.compression-type
    compression_type_without_bit: "header.compression-type", Only(Error), || compression(112, 1, false);
    compression_bit_without_type: "header.compression-type", Only(Error), || compression(104, 0, true);
    compression_type_with_bit: "header.compression-type", Holds, || compression(112, 1, true);
    compression_type_zero_without_bit: "header.compression-type", Holds, || compression(112, 0, false);

    // header.autoclear-unknown
    autoclear_bit_2: "header.autoclear-unknown", Only(Unspecified), || base_with(|img| header_put(img, header::AUTOCLEAR_FEATURES, 0b101));
    autoclear_bit_63: "header.autoclear-unknown", Only(Unspecified), || base_with(|img| header_put(img, header::AUTOCLEAR_FEATURES, 1 | 1 << 63));
    // Bit 1 (raw external data) may only be set together with incompatible
    // bit 2 (external data file), which leaves the guest clusters unclaimed.
    autoclear_bits_0_and_1: "header.autoclear-unknown", Holds, || base_with(|img| {
        header_put(img, header::AUTOCLEAR_FEATURES, 0b11);
        header_put(img, header::INCOMPATIBLE_FEATURES, header::INCOMPAT_EXTERNAL_DATA);
    });

    // header.padding (spec "Header padding": bytes 105-111 "must be zeroed")
    header_padding_nonzero: "header.padding", Only(Error), || patched(
        Spec { header_length: 112, ..base() },
        |img| img.bytes[107] = 1,
    );
    header_padding_zero: "header.padding", Holds, || Spec { header_length: 112, ..base() }.build();
    header_bytes_past_112_are_unknown_fields: "header.padding", Holds, || patched(
        Spec { header_length: 120, ..base() },
        |img| img.bytes[115] = 1,
    );

    // header.raw-external (autoclear bit 1 "may only be set if the External
    // Data File bit ... is also set"; the spec's text says bit 1, its own typo)
    raw_external_without_data_file: "header.raw-external", Only(Error), || base_with(|img| {
        header_put(img, header::AUTOCLEAR_FEATURES, 0b11);
    });
    raw_external_with_data_file: "header.raw-external", Holds, || base_with(|img| {
        header_put(img, header::AUTOCLEAR_FEATURES, 0b11);
        header_put(img, header::INCOMPATIBLE_FEATURES, header::INCOMPAT_EXTERNAL_DATA);
    });

    // header.encryption-extension (present if, and only if, LUKS)
    luks_without_encryption_extension: "header.encryption-extension", Only(Error), || base_with(|img| {
        header_put(img, header::CRYPT_METHOD, 2);
    });
    aes_without_encryption_extension: "header.encryption-extension", Holds, || base_with(|img| {
        header_put(img, header::CRYPT_METHOD, 1);
    });

    // header.crypt-method
    crypt_method_3: "header.crypt-method", Only(Error), || base_with(|img| header_put(img, header::CRYPT_METHOD, 3));
    crypt_method_1: "header.crypt-method", Holds, || base_with(|img| header_put(img, header::CRYPT_METHOD, 1));

    // header.backing-file
    backing_name_1024: "header.backing-file", Only(Error), || backing_name(1024, 1024);
    backing_name_past_first_cluster: "header.backing-file", Only(Error), || backing_name(1022, 1023);
    backing_name_1023_to_cluster_end: "header.backing-file", Holds, || backing_name(1023, 1023);

    // header.l1-size
    l1_size_one_short: "header.l1-size", Only(Error), || base_with(|img| {
        let n = u64::from(img.layout.l1_size) - 1;
        header_put(img, header::L1_SIZE, n);
    });
    l1_size_exact: "header.l1-size", Holds, || base().build();

    // header.extended-l2
    extended_l2_cluster_bits_13: "header.extended-l2", Only(Error), || extended_l2(13);
    extended_l2_cluster_bits_14: "header.extended-l2", Holds, || extended_l2(14);

    // header.dirty
    dirty_bit: "header.dirty", Only(Note), || base_with(|img| header_put(img, header::INCOMPATIBLE_FEATURES, header::INCOMPAT_DIRTY));
    dirty_bit_clear: "header.dirty", Holds, || base_with(|img| header_put(img, header::INCOMPATIBLE_FEATURES, header::INCOMPAT_CORRUPT));

    // header.corrupt
    corrupt_bit: "header.corrupt", Only(Note), || base_with(|img| header_put(img, header::INCOMPATIBLE_FEATURES, header::INCOMPAT_CORRUPT));
    corrupt_bit_clear: "header.corrupt", Holds, || base_with(|img| header_put(img, header::INCOMPATIBLE_FEATURES, header::INCOMPAT_DIRTY));

    // ext.bounds
    ext_past_first_cluster: "ext.bounds", Only(Error), || ext_filling_first_cluster().with(|img| {
        let at = img.layout.extension(UNKNOWN_EXT);
        let len = img.get(at, extension::LENGTH);
        img.put(at, extension::LENGTH, len + 1);
    });
    ext_ends_at_first_cluster: "ext.bounds", Holds, ext_filling_first_cluster;
    ext_past_end_of_file: "ext.bounds", Breaks(Error), || short_unknown_ext().with(|img| {
        let end = img.layout.extension(UNKNOWN_EXT) + 12;
        img.bytes.truncate(end as usize);
    });

    // ext.duplicate
    duplicate_bitmaps_ext: "ext.duplicate", Only(Error), || patched(
        Spec { extra_extensions: vec![(UNKNOWN_EXT, vec![0; bitmaps_ext::LENGTH])], ..base() },
        |img| {
            let first = img.layout.extension(extension::BITMAPS) as usize;
            let second = img.layout.extension(UNKNOWN_EXT) as usize;
            let n = extension::PREFIX_LENGTH + bitmaps_ext::LENGTH;
            img.bytes.copy_within(first..first + n, second);
        });
    duplicate_feature_table: "ext.duplicate", Only(Error), || Spec {
        feature_table: true,
        extra_extensions: vec![(extension::FEATURE_NAME_TABLE, vec![0; 48])],
        ..base()
    }.build();
    duplicate_unknown_type: "ext.duplicate", Holds, || Spec {
        feature_table: true,
        extra_extensions: vec![(UNKNOWN_EXT, vec![1; 3]), (UNKNOWN_EXT, vec![2; 9])],
        ..base()
    }.build();

    // ext.padding
    // The spec pads extensions to 8 bytes but never says with zeros: recorded.
    ext_padding_nonzero: "ext.padding", Only(Unspecified), || short_unknown_ext().with(|img| {
        let at = img.layout.extension(UNKNOWN_EXT) + 8 + 7;
        img.bytes[at as usize] = 1;
    });
    ext_padding_zero: "ext.padding", Holds, short_unknown_ext;
    // Spec "String header extensions": "neither is padding always necessary
    // nor is there a guarantee that zero bytes are used for padding".
    string_ext_padding_nonzero_is_no_finding: "ext.padding", Holds, || patched(
        Spec { extra_extensions: vec![(extension::BACKING_FORMAT, b"raw".to_vec())], ..base() },
        |img| {
            let at = img.layout.extension(extension::BACKING_FORMAT) + 8 + 3;
            img.bytes[at as usize..at as usize + 5].copy_from_slice(b"\0junk");
            let name_at = img.layout.cluster_size - 16;
            img.bytes[name_at as usize..name_at as usize + 9].copy_from_slice(b"base.qcow");
            header_put(img, header::BACKING_FILE_OFFSET, name_at);
            header_put(img, header::BACKING_FILE_SIZE, 9);
        });

    // bitmaps.autoclear-missing
    autoclear_bit0_clear: "bitmaps.autoclear-missing", Only(Inconsistent), || base_with(|img| header_put(img, header::AUTOCLEAR_FEATURES, 0));
    autoclear_bit0_set: "bitmaps.autoclear-missing", Holds, || base().build();

    // bitmaps.v2-image
    v2_with_bitmaps: "bitmaps.v2-image", Only(Inconsistent), || v2(true).build();
    v2_without_bitmaps: "bitmaps.v2-image", Holds, || v2(false).build();
    v3_with_bitmaps: "bitmaps.v2-image", Holds, || base().build();

    // bitmaps.autoclear-without-extension
    autoclear_without_extension: "bitmaps.autoclear-without-extension", Only(Error), || Spec {
        autoclear_features: Some(header::AUTOCLEAR_BITMAPS),
        ..Spec::default()
    }.build();
    no_extension_no_bit: "bitmaps.autoclear-without-extension", Holds, || Spec::default().build();
    no_extension_other_bit: "bitmaps.autoclear-without-extension", Holds, || Spec {
        autoclear_features: Some(1 << 2),
        ..Spec::default()
    }.build();

    // bitmaps.ext.length
    bitmaps_ext_length_23: "bitmaps.ext.length", Only(Error), || base_with(|img| {
        let at = img.layout.extension(extension::BITMAPS);
        img.put(at, extension::LENGTH, 23);
    });
    bitmaps_ext_length_32: "bitmaps.ext.length", Only(Unspecified), || base_with(|img| {
        let at = img.layout.extension(extension::BITMAPS);
        img.put(at, extension::LENGTH, 32);
    });
    bitmaps_ext_length_24: "bitmaps.ext.length", Holds, || base().build();

    // bitmaps.ext.nb-bitmaps-zero
    nb_bitmaps_zero: "bitmaps.ext.nb-bitmaps-zero", Only(Error), || base_with(|img| {
        ext_put(img, bitmaps_ext::NB_BITMAPS, 0);
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_SIZE, 0);
    });
    nb_bitmaps_one: "bitmaps.ext.nb-bitmaps-zero", Holds, || base().build();

    // bitmaps.ext.reserved
    ext_reserved_nonzero: "bitmaps.ext.reserved", Only(Error), || base_with(|img| ext_put(img, bitmaps_ext::RESERVED, 1));
    ext_reserved_zero: "bitmaps.ext.reserved", Holds, || base().build();

    // bitmaps.ext.directory-alignment
    directory_misaligned: "bitmaps.ext.directory-alignment", Only(Error), || base_with(|img| {
        let (off, size) = (img.layout.directory_offset, img.layout.directory_size);
        shift_bytes(img, off, size, 8);
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_OFFSET, off + 8);
    });
    directory_aligned: "bitmaps.ext.directory-alignment", Holds, || base().build();

    // bitmaps.ext.directory-size
    directory_size_8_long: "bitmaps.ext.directory-size", Only(Error), || base_with(|img| {
        let size = img.layout.directory_size + 8;
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_SIZE, size);
    });
    nb_bitmaps_one_too_many: "bitmaps.ext.directory-size", Only(Error), || base_with(|img| ext_put(img, bitmaps_ext::NB_BITMAPS, 2));
    directory_size_exact: "bitmaps.ext.directory-size", Holds, || two_named(b"a", b"b");

    // bitmaps.ext.directory-bounds
    directory_past_eof: "bitmaps.ext.directory-bounds", Only(Error), || base_with(|img| {
        let end = img.len();
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_OFFSET, end);
    });
    directory_size_one_past_eof: "bitmaps.ext.directory-bounds", Only(Error), || base_with(|img| {
        let size = img.len() - img.layout.directory_offset + 1;
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_SIZE, size);
    });
    directory_size_to_eof: "bitmaps.ext.directory-bounds", Holds, || base_with(|img| {
        let size = img.len() - img.layout.directory_offset;
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_SIZE, size);
    });

    // bitmaps.ext.limits
    nb_bitmaps_65536: "bitmaps.ext.limits", Only(Limit), || many_in_use(65536);
    nb_bitmaps_65535: "bitmaps.ext.limits", Holds, || many_in_use(65535);
    directory_size_limit_plus_8: "bitmaps.ext.limits", Only(Limit), || directory_of_size(1024 * 65535 + 8);
    directory_size_at_limit: "bitmaps.ext.limits", Holds, || directory_of_size(1024 * 65535);

    // bitmaps.dir.entry-bounds
    entry_name_past_directory: "bitmaps.dir.entry-bounds", Only(Error), || base_with(|img| {
        let size = img.layout.directory_size - 8;
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_SIZE, size);
    });
    entry_fixed_part_past_directory: "bitmaps.dir.entry-bounds", Only(Error), || base_with(|img| ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_SIZE, 16));
    second_entry_past_directory: "bitmaps.dir.entry-bounds", Only(Error), || two_named(b"a", b"b").with(|img| {
        let size = img.layout.directory_size - 1;
        ext_put(img, bitmaps_ext::BITMAP_DIRECTORY_SIZE, size);
    });
    entry_ends_with_directory: "bitmaps.dir.entry-bounds", Holds, || two_named(b"a", b"b");

    // bitmaps.dir.table-offset-zero
    table_offset_zero: "bitmaps.dir.table-offset-zero", Only(Error), || base_with(|img| entry_put(img, 0, bitmap_entry::BITMAP_TABLE_OFFSET, 0));
    table_offset_nonzero: "bitmaps.dir.table-offset-zero", Holds, || base().build();

    // bitmaps.dir.table-alignment
    table_misaligned: "bitmaps.dir.table-alignment", Only(Error), || base_with(|img| {
        let e = &img.layout.entries[0];
        let (off, len) = (e.table_offset, u64::from(e.table_size) * 8);
        shift_bytes(img, off, len, 8);
        entry_put(img, 0, bitmap_entry::BITMAP_TABLE_OFFSET, off + 8);
    });
    table_aligned: "bitmaps.dir.table-alignment", Holds, || base().build();

    // bitmaps.dir.table-size
    table_one_entry_short: "bitmaps.dir.table-size", Only(Error), || base_with(|img| entry_put(img, 0, bitmap_entry::BITMAP_TABLE_SIZE, 1));
    table_one_entry_long: "bitmaps.dir.table-size", Only(Unspecified), || base_with(|img| entry_put(img, 0, bitmap_entry::BITMAP_TABLE_SIZE, 3));
    table_empty_for_empty_disk: "bitmaps.dir.table-size", Only(Unspecified), || Spec {
        size: 0,
        guest_clusters: 0,
        bitmaps: vec![BitmapSpec::new("empty", 16)],
        ..Spec::default()
    }.build();
    table_size_exact: "bitmaps.dir.table-size", Holds, || base().build();
    table_short_but_in_use: "bitmaps.dir.table-size", Holds, || base_with(|img| {
        entry_put(img, 0, bitmap_entry::BITMAP_TABLE_SIZE, 1);
        entry_put(img, 0, bitmap_entry::FLAGS, bitmap_entry::FLAG_IN_USE);
    });
    table_long_but_in_use: "bitmaps.dir.table-size", Holds, || base_with(|img| {
        entry_put(img, 0, bitmap_entry::BITMAP_TABLE_SIZE, 3);
        entry_put(img, 0, bitmap_entry::FLAGS, bitmap_entry::FLAG_IN_USE);
    });

    // bitmaps.dir.flags-reserved
    flags_bit_3: "bitmaps.dir.flags-reserved", Only(Error), || base_with(|img| entry_put(img, 0, bitmap_entry::FLAGS, 0b1010));
    flags_bit_31: "bitmaps.dir.flags-reserved", Only(Error), || base_with(|img| entry_put(img, 0, bitmap_entry::FLAGS, 1 << 31 | 0b10));
    flags_known_bits: "bitmaps.dir.flags-reserved", Holds, || base_with(|img| entry_put(img, 0, bitmap_entry::FLAGS, 0b111));

    // bitmaps.dir.type
    type_0: "bitmaps.dir.type", Only(Error), || base_with(|img| entry_put(img, 0, bitmap_entry::TYPE, 0));
    type_2: "bitmaps.dir.type", Only(Error), || base_with(|img| entry_put(img, 0, bitmap_entry::TYPE, 2));
    type_1: "bitmaps.dir.type", Holds, || base().build();

    // bitmaps.dir.granularity
    granularity_64: "bitmaps.dir.granularity", Only(Error), || with_granularity(63).with(|img| entry_put(img, 0, bitmap_entry::GRANULARITY_BITS, 64));
    granularity_63_is_no_error: "bitmaps.dir.granularity", HoldsAs(Error), || with_granularity(63);
    granularity_63: "bitmaps.dir.granularity", Only(Limit), || with_granularity(63);
    granularity_8: "bitmaps.dir.granularity", Only(Limit), || with_granularity(8);
    granularity_9: "bitmaps.dir.granularity", Holds, || with_granularity(9);
    granularity_31: "bitmaps.dir.granularity", Holds, || with_granularity(31);
    granularity_32: "bitmaps.dir.granularity", Only(Limit), || with_granularity(32);

    // bitmaps.dir.name-empty
    name_empty: "bitmaps.dir.name-empty", Only(Error), || with_name(b"");
    name_one_byte: "bitmaps.dir.name-empty", Holds, || with_name(b"x");

    // bitmaps.dir.name-limit
    name_1024: "bitmaps.dir.name-limit", Only(Limit), || with_name(&[b'n'; 1024]);
    name_1023: "bitmaps.dir.name-limit", Holds, || with_name(&[b'n'; 1023]);

    // bitmaps.dir.name-unique
    names_equal: "bitmaps.dir.name-unique", Only(Error), || two_named(b"same", b"same");
    names_differ_in_last_byte: "bitmaps.dir.name-unique", Holds, || two_named(b"same", b"samf");
    name_is_prefix_of_other: "bitmaps.dir.name-unique", Holds, || two_named(b"same", b"same2");

    // bitmaps.dir.name-bytes
    name_with_nul: "bitmaps.dir.name-bytes", Only(Unspecified), || with_name(b"a\0b");
    name_not_utf8: "bitmaps.dir.name-bytes", Only(Unspecified), || with_name(b"a\xffb");
    name_utf8_non_ascii: "bitmaps.dir.name-bytes", Holds, || with_name("m\u{e4}rz".as_bytes());

    // bitmaps.dir.padding
    padding_nonzero: "bitmaps.dir.padding", Only(Error), || base_with(|img| {
        let last = img.layout.entries[0].offset + img.layout.directory_size - 1;
        img.bytes[last as usize] = 0x20;
    });
    padding_zero: "bitmaps.dir.padding", Holds, || base().build();

    // bitmaps.dir.extra-data
    extra_data_incompatible: "bitmaps.dir.extra-data", Only(Note), || with_bitmap(base_bitmap().extra_data(vec![7; 8]));
    extra_data_compatible: "bitmaps.dir.extra-data", Only(Note), || with_bitmap(base_bitmap()
        .extra_data(vec![7; 5])
        .flags(bitmap_entry::FLAG_AUTO | bitmap_entry::FLAG_EXTRA_DATA_COMPATIBLE));
    no_extra_data: "bitmaps.dir.extra-data", Holds, || with_bitmap(base_bitmap().flags(bitmap_entry::FLAG_EXTRA_DATA_COMPATIBLE));

    // bitmaps.dir.in-use
    in_use: "bitmaps.dir.in-use", Only(Note), || with_bitmap(base_bitmap().flags(bitmap_entry::FLAG_IN_USE));
    not_in_use: "bitmaps.dir.in-use", Holds, || base().build();

    // bitmaps.table.bounds
    table_past_eof: "bitmaps.table.bounds", Only(Error), || base_with(|img| {
        let end = img.len();
        entry_put(img, 0, bitmap_entry::BITMAP_TABLE_OFFSET, end);
    });
    table_cluster_refcount_zero: "bitmaps.table.bounds", Only(Error), || base_with(|img| {
        let off = img.layout.entries[0].table_offset;
        img.set_refcount(off, 0);
    });
    in_use_table_refcount_zero: "bitmaps.table.bounds", Only(Error), || in_use_base(|img| {
        let off = img.layout.entries[0].table_offset;
        img.set_refcount(off, 0);
    });
    table_in_file_and_allocated: "bitmaps.table.bounds", Holds, || base().build();

    // bitmaps.table.reserved-bits
    table_entry_bit_1: "bitmaps.table.reserved-bits", Only(Error), || base_with(|img| {
        let at = img.layout.table_entry(0, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1 << 1);
    });
    table_entry_bit_8_on_zero_entry: "bitmaps.table.reserved-bits", Only(Error), || with_bitmap(BitmapSpec::new("z", 9).bits(&[0])).with(|img| {
        let at = img.layout.table_entry(0, 1);
        img.put_u64(at, 1 << 8);
    });
    table_entry_bit_56: "bitmaps.table.reserved-bits", Only(Error), || base_with(|img| {
        let at = img.layout.table_entry(0, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1 << 56);
    });
    table_entry_bit_63: "bitmaps.table.reserved-bits", Only(Error), || base_with(|img| {
        let at = img.layout.table_entry(0, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1 << 63);
    });
    table_entry_bit_0_alone: "bitmaps.table.reserved-bits", Holds, || with_bitmap(base_bitmap().all_ones(&[0, 1]));

    // bitmaps.table.all-ones-with-offset
    all_ones_with_offset: "bitmaps.table.all-ones-with-offset", Only(Error), || base_with(|img| {
        let at = img.layout.table_entry(0, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1);
    });
    all_ones_without_offset: "bitmaps.table.all-ones-with-offset", Holds, || with_bitmap(base_bitmap().all_ones(&[0]));

    // bitmaps.table.entry-alignment
    data_offset_misaligned: "bitmaps.table.entry-alignment", Only(Error), || base_with(|img| {
        let at = img.layout.table_entry(0, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v + 512);
    });
    data_offset_aligned: "bitmaps.table.entry-alignment", Holds, || base().build();

    // bitmaps.data.bounds
    data_past_eof: "bitmaps.data.bounds", Only(Error), || base_with(|img| {
        let (at, end) = (img.layout.table_entry(0, 0), img.len());
        img.put_u64(at, end);
    });
    data_cluster_refcount_zero: "bitmaps.data.bounds", Only(Error), || base_with(|img| {
        let d = img.layout.entries[0].data[0];
        img.set_refcount(d, 0);
    });
    in_use_data_past_eof: "bitmaps.data.bounds", Only(Error), || in_use_base(|img| {
        let (at, end) = (img.layout.table_entry(0, 1), img.len());
        img.put_u64(at, end);
    });
    data_in_file_and_allocated: "bitmaps.data.bounds", Holds, || base().build();

    // bitmaps.data.tail-bits
    tail_bit_at_nbits: "bitmaps.data.tail-bits", Only(Error), || base_with(|img| {
        let n = img.layout.entries[0].nbits;
        set_data_bit(img, n);
    });
    tail_last_byte_of_cluster: "bitmaps.data.tail-bits", Only(Error), || base_with(|img| {
        let at = last_data(img) + img.layout.cluster_size - 1;
        img.bytes[at as usize] = 0x80;
    });
    tail_bit_at_nbits_minus_1: "bitmaps.data.tail-bits", Holds, || base_with(|img| {
        let n = img.layout.entries[0].nbits;
        set_data_bit(img, n - 1);
    });
    tail_of_all_ones_entry: "bitmaps.data.tail-bits", Holds, || with_bitmap(base_bitmap().all_ones(&[1]));

    // l1.bounds
    l1_past_eof: "l1.bounds", Only(Error), || base_with(|img| {
        let end = img.len();
        header_put(img, header::L1_TABLE_OFFSET, end);
    });
    l1_in_file: "l1.bounds", Holds, || base().build();

    // l1.reserved-bits
    l1_entry_bit_1: "l1.reserved-bits", Only(Error), || base_with(|img| {
        let at = l1_entry(img, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1 << 1);
    });
    l1_entry_bit_62: "l1.reserved-bits", Only(Error), || base_with(|img| {
        let at = l1_entry(img, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1 << 62);
    });
    l1_entry_copied_clear: "l1.reserved-bits", Holds, || base_with(|img| {
        let at = l1_entry(img, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v & !mapping::COPIED);
    });

    // l1.alignment
    l1_entry_misaligned: "l1.alignment", Only(Error), || base_with(|img| {
        let at = l1_entry(img, 0);
        let v = img.get_u64(at);
        img.put_u64(at, v + 512);
    });
    l1_entry_aligned: "l1.alignment", Holds, || base().build();

    // l2.bounds
    l2_past_eof: "l2.bounds", Only(Error), || base_with(|img| {
        let (at, end) = (l1_entry(img, 0), img.len());
        img.put_u64(at, end | mapping::COPIED);
    });
    l2_in_file: "l2.bounds", Holds, || base().build();

    // l2.reserved-bits
    l2_entry_bit_1: "l2.reserved-bits", Only(Error), || base_with(|img| {
        let at = img.layout.l2_entry(0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1 << 1);
    });
    l2_entry_bit_61: "l2.reserved-bits", Only(Error), || base_with(|img| {
        let at = img.layout.l2_entry(0);
        let v = img.get_u64(at);
        img.put_u64(at, v | 1 << 61);
    });
    v2_l2_zero_bit: "l2.reserved-bits", Only(Error), || patched(v2(false), |img| {
        let at = img.layout.l2_entry(0);
        let v = img.get_u64(at);
        img.put_u64(at, v | mapping::ZERO);
    });
    v3_l2_zero_bit: "l2.reserved-bits", Holds, || base_with(|img| {
        let at = img.layout.l2_entry(0);
        let v = img.get_u64(at);
        img.put_u64(at, v | mapping::ZERO);
    });

    // l2.alignment
    l2_entry_misaligned: "l2.alignment", Only(Error), || base_with(|img| {
        let at = img.layout.l2_entry(0);
        let v = img.get_u64(at);
        img.put_u64(at, v + 512);
    });
    l2_entry_aligned: "l2.alignment", Holds, || base().build();

    // l2.data-bounds
    l2_data_past_eof: "l2.data-bounds", Only(Error), || base_with(|img| {
        let (at, end) = (img.layout.l2_entry(0), img.len());
        img.put_u64(at, end | mapping::COPIED);
    });
    l2_data_in_file: "l2.data-bounds", Holds, || base().build();

    // l2.subclusters
    subcluster_allocated_and_zero: "l2.subclusters", Only(Error), || extended_l2(14).with(|img| {
        let at = img.layout.l2_entry(0) + 8;
        img.put_u64(at, 0xffff_ffff | 1 << 32);
    });
    subcluster_allocated_without_offset: "l2.subclusters", Only(Error), || extended_l2(14).with(|img| {
        let at = img.layout.l2_entry(5) + 8;
        img.put_u64(at, 1);
    });
    subcluster_zero_without_offset: "l2.subclusters", Holds, || extended_l2(14).with(|img| {
        let at = img.layout.l2_entry(5) + 8;
        img.put_u64(at, 0xffff_ffff << 32);
    });

    // refcount.block-alignment
    refcount_block_misaligned: "refcount.block-alignment", Only(Error), || base_with(|img| {
        let at = img.layout.refcount_table_offset + 8;
        let off = img.layout.cluster_size * 3 + 512;
        img.put_u64(at, off);
    });
    refcount_table_entry_reserved_bit: "refcount.block-alignment", Only(Error), || base_with(|img| {
        let at = img.layout.refcount_table_offset + 8;
        let off = img.layout.cluster_size * 3 + 1;
        img.put_u64(at, off);
    });
    refcount_block_aligned: "refcount.block-alignment", Holds, || base().build();

    // refcount.bounds
    refcount_block_past_eof: "refcount.bounds", Only(Error), || base_with(|img| {
        let (at, end) = (img.layout.refcount_table_offset + 8, img.len());
        img.put_u64(at, end);
    });
    refcount_table_past_eof: "refcount.bounds", Breaks(Error), || base_with(|img| {
        let end = img.len();
        header_put(img, header::REFCOUNT_TABLE_OFFSET, end);
    });
    refcount_structures_in_file: "refcount.bounds", Holds, || base().build();

    // refcount.unallocated
    l2_refcount_zero: "refcount.unallocated", Only(Error), || base_with(|img| {
        let l2 = img.layout.l2_offset;
        img.set_refcount(l2, 0);
    });
    directory_refcount_zero: "refcount.unallocated", Only(Error), || base_with(|img| {
        let dir = img.layout.directory_offset;
        img.set_refcount(dir, 0);
    });
    refcount_block_refcount_zero: "refcount.unallocated", Only(Error), || base_with(|img| {
        let block = img.layout.refcount_blocks[0];
        img.set_refcount(block, 0);
    });
    refcounts_one: "refcount.unallocated", Holds, || base().build();

    // refcount.overlap
    shared_guest_cluster_refcount_1: "refcount.overlap", Only(Error), || shared_guest_cluster(1);
    shared_guest_cluster_refcount_2: "refcount.overlap", Holds, || shared_guest_cluster(2);
    bitmap_data_on_l2_table: "refcount.overlap", Only(Error), || base_with(|img| {
        let (at, l2) = (img.layout.table_entry(0, 0), img.layout.l2_offset);
        img.put_u64(at, l2);
    });
    in_use_data_on_l2_table: "refcount.overlap", Only(Error), || in_use_base(|img| {
        let (at, l2) = (img.layout.table_entry(0, 1), img.layout.l2_offset);
        img.put_u64(at, l2);
    });
    two_bitmaps_share_data: "refcount.overlap", Only(Error), || two_named(b"a", b"b").with(|img| {
        let (at, d) = (img.layout.table_entry(1, 0), img.layout.entries[0].data[0]);
        img.put_u64(at, d);
    });
    bitmap_data_on_guest_data_refcount_2: "refcount.overlap", Only(Error), || base_with(|img| {
        // Two references with refcount 2: the refcount is right, yet a
        // guest cluster must not double as bitmap data.
        let (at, guest) = (img.layout.table_entry(0, 0), img.layout.guest_data[0]);
        let data = img.layout.entries[0].data[0];
        img.put_u64(at, guest);
        img.set_refcount(guest, 2);
        img.set_refcount(data, 0);
    });

    // refcount.leak
    l2_refcount_2: "refcount.leak", Only(Leak), || base_with(|img| {
        let l2 = img.layout.l2_offset;
        img.set_refcount(l2, 2);
    });
    unreferenced_cluster: "refcount.leak", Only(Leak), || base_with(|img| {
        let l1 = l1_entry(img, 0);
        img.put_u64(l1, 0);
    });
    no_leak: "refcount.leak", Holds, || base().build();

    // snapshot.bounds
    snapshot_table_past_eof: "snapshot.bounds", Only(Error), || with_snapshot(16).with(|img| {
        let end = img.len();
        header_put(img, header::SNAPSHOTS_OFFSET, end);
    });
    snapshot_l1_misaligned: "snapshot.bounds", Only(Error), || with_snapshot(16).with(|img| {
        let at = img.layout.snapshot_table_offset;
        let off = img.layout.snapshot_l1_offset + 512;
        img.put(at, snapshot::L1_TABLE_OFFSET, off);
    });
    snapshot_l1_past_eof: "snapshot.bounds", Only(Error), || with_snapshot(16).with(|img| {
        let (at, end) = (img.layout.snapshot_table_offset, img.len());
        img.put(at, snapshot::L1_TABLE_OFFSET, end);
    });
    snapshot_in_file: "snapshot.bounds", Holds, || with_snapshot(16);

    // snapshot.extra-data
    snapshot_extra_8: "snapshot.extra-data", Only(Error), || with_snapshot(8);
    snapshot_extra_16: "snapshot.extra-data", Holds, || with_snapshot(16);
    snapshot_extra_0_in_v2: "snapshot.extra-data", Holds, || Spec { snapshot_extra_data: Some(0), ..v2(false) }.build();
}

// ---------------------------------------------------------------------
// Catalogue coverage.

#[test]
fn every_rule_has_a_breaker_and_a_boundary() {
    let cases = cases();
    let mut missing = Vec::new();
    for case in &cases {
        assert!(
            Rule::from_id(case.rule).is_some(),
            "case {} names unknown rule {}",
            case.name,
            case.rule
        );
    }
    for rule in Rule::ALL {
        for &sev in rule.severities() {
            let broken = cases.iter().any(|c| {
                c.rule == rule.id()
                    && matches!(c.expect, Expect::Only(s) | Expect::Breaks(s) if s == sev)
            });
            if !broken {
                missing.push(format!("{} has no breaker as {sev:?}", rule.id()));
            }
        }
        let holds = cases
            .iter()
            .any(|c| c.rule == rule.id() && matches!(c.expect, Expect::Holds));
        if !holds {
            missing.push(format!("{} has no boundary image", rule.id()));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn digest_rule_ids_are_in_the_catalogue() {
    let digest = [
        "header.magic",
        "header.version",
        "header.cluster-bits",
        "header.length",
        "header.incompatible-bits",
        "header.refcount-order",
        "header.alignment",
        "header.compression-type",
        "header.autoclear-unknown",
        "ext.bounds",
        "ext.duplicate",
        "bitmaps.autoclear-missing",
        "bitmaps.v2-image",
        "bitmaps.autoclear-without-extension",
        "bitmaps.ext.length",
        "bitmaps.ext.nb-bitmaps-zero",
        "bitmaps.ext.reserved",
        "bitmaps.ext.directory-alignment",
        "bitmaps.ext.directory-size",
        "bitmaps.ext.limits",
        "bitmaps.dir.entry-bounds",
        "bitmaps.dir.table-offset-zero",
        "bitmaps.dir.table-alignment",
        "bitmaps.dir.table-size",
        "bitmaps.dir.flags-reserved",
        "bitmaps.dir.type",
        "bitmaps.dir.granularity",
        "bitmaps.dir.name-empty",
        "bitmaps.dir.name-limit",
        "bitmaps.dir.name-unique",
        "bitmaps.dir.name-bytes",
        "bitmaps.dir.padding",
        "bitmaps.dir.extra-data",
        "bitmaps.dir.in-use",
        "bitmaps.table.bounds",
        "bitmaps.table.reserved-bits",
        "bitmaps.table.all-ones-with-offset",
        "bitmaps.table.entry-alignment",
        "bitmaps.data.bounds",
        "bitmaps.data.tail-bits",
        "refcount.unallocated",
        "refcount.overlap",
        "refcount.leak",
    ];
    for id in digest {
        assert!(Rule::from_id(id).is_some(), "DIGEST rule {id} missing");
    }
}

// ---------------------------------------------------------------------
// Whole-image expectations.

/// The data bytes a bitmap must have, computed from the spec's layout rules
/// alone: bit k is bit k % 8 of byte k / 8, all-ones clusters expanded,
/// bits past nbits cleared.
fn expected_bytes(spec: &BitmapSpec, size: u64, cluster_size: u64) -> Vec<u8> {
    let n = nbits(size, u32::from(spec.granularity_bits));
    let nbytes = n.div_ceil(8);
    let mut bytes = vec![0u8; nbytes as usize];
    for &j in &spec.table.all_ones {
        let start = (j * cluster_size).min(nbytes);
        let end = ((j + 1) * cluster_size).min(nbytes);
        bytes[start as usize..end as usize].fill(0xff);
    }
    for &k in &spec.table.set_bits {
        bytes[(k / 8) as usize] |= 1 << (k % 8);
    }
    if !n.is_multiple_of(8) {
        let last = bytes.len() - 1;
        bytes[last] &= (1u8 << (n % 8)) - 1;
    }
    bytes
}

#[test]
fn plain_image_with_bitmaps_is_valid_with_exact_contents() {
    let bitmaps = vec![
        base_bitmap(),
        // 5121 bits, one cluster, nothing set: the table entry stays 0.
        BitmapSpec::new("empty", 12),
        // First cluster all ones through the table, a few bits in the second.
        BitmapSpec::new("ones", 9)
            .bits(&[4096 * 8, 40000, 40962])
            .all_ones(&[0])
            .flags(0),
        // Last cluster all ones: its bits past nbits read as cleared.
        BitmapSpec::new("ones-tail", 9).bits(&[7]).all_ones(&[1]),
    ];
    let spec = Spec {
        feature_table: true,
        bitmaps: bitmaps.clone(),
        ..Spec::default()
    };
    let img = spec.build();
    let r = img.check();
    assert!(r.findings.is_empty(), "{}", r.summary());
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(r.bitmaps_extension, ExtensionState::Consistent);
    assert_eq!(r.bitmaps.len(), bitmaps.len());
    for (i, (b, got)) in bitmaps.iter().zip(&r.bitmaps).enumerate() {
        let bytes = expected_bytes(b, SIZE, img.layout.cluster_size);
        let ones: u64 = bytes.iter().map(|x| u64::from(x.count_ones())).sum();
        let sha = hex::encode(Sha256::digest(&bytes));
        assert_eq!(got.name.as_bytes(), &b.name[..]);
        assert_eq!(got.bitmap_type, 1);
        assert_eq!(got.granularity_bits, b.granularity_bits);
        assert!(got.usable, "bitmap {i}");
        assert_eq!(got.flags.auto, b.flags & 2 != 0);
        assert!(!got.flags.in_use && !got.flags.extra_data_compatible);
        assert_eq!(got.table_offset, img.layout.entries[i].table_offset);
        assert_eq!(got.table_size, img.layout.entries[i].table_size);
        assert_eq!(got.contents.set_bits, Some(ones), "bitmap {i}");
        assert_eq!(
            got.contents.content_sha256.as_deref(),
            Some(sha.as_str()),
            "bitmap {i}"
        );
    }
    // The base bitmap's four bits, and the all-ones cluster's 32768 bits.
    assert_eq!(r.bitmaps[0].contents.set_bits, Some(4));
    assert_eq!(r.bitmaps[1].contents.set_bits, Some(0));
    assert_eq!(r.bitmaps[2].contents.set_bits, Some(4096 * 8 + 3));
    assert_eq!(r.bitmaps[3].contents.set_bits, Some(1 + (40963 - 4096 * 8)));
}

#[test]
fn builder_variants_are_valid_without_findings() {
    let mut specs = vec![
        ("base", base()),
        ("no bitmaps", Spec::default()),
        ("v2", v2(false)),
        (
            "snapshot",
            Spec {
                snapshot_extra_data: Some(16),
                ..base()
            },
        ),
        (
            "extended L2",
            Spec {
                cluster_bits: 14,
                extended_l2: true,
                ..base()
            },
        ),
        (
            "header_length 112",
            Spec {
                header_length: 112,
                ..base()
            },
        ),
        (
            "feature table",
            Spec {
                feature_table: true,
                ..base()
            },
        ),
        (
            "no guest data",
            Spec {
                guest_clusters: 0,
                ..base()
            },
        ),
    ];
    for order in 0..=6 {
        specs.push((
            "refcount order",
            Spec {
                refcount_order: order,
                ..base()
            },
        ));
    }
    for cluster_bits in [9, 10, 16] {
        specs.push((
            "cluster bits",
            Spec {
                cluster_bits,
                ..base()
            },
        ));
    }
    for (what, spec) in specs {
        let r = spec.build().check();
        assert!(
            r.findings.is_empty() && r.verdict == Verdict::Valid,
            "{what} ({} / {}): {}",
            spec.cluster_bits,
            spec.refcount_order,
            r.summary()
        );
    }
}

#[test]
fn inconsistent_extension_lists_bitmaps_as_unusable() {
    for img in [
        base_with(|img| header_put(img, header::AUTOCLEAR_FEATURES, 0)),
        v2(true).build(),
    ] {
        let r = img.check();
        assert_eq!(r.bitmaps_extension, ExtensionState::Inconsistent);
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.summary());
        assert_eq!(r.bitmaps.len(), 1);
        assert!(!r.bitmaps[0].usable);
        assert_eq!(r.bitmaps[0].contents.set_bits, None);
        assert_eq!(r.bitmaps[0].contents.content_sha256, None);
    }
}

#[test]
fn unusable_bitmaps_have_no_contents() {
    let in_use = with_bitmap(base_bitmap().flags(bitmap_entry::FLAG_IN_USE)).check();
    let extra = with_bitmap(base_bitmap().extra_data(vec![1; 8])).check();
    for r in [in_use, extra] {
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.summary());
        assert!(!r.bitmaps[0].usable);
        assert_eq!(r.bitmaps[0].contents.set_bits, None);
    }
    let compatible = with_bitmap(
        base_bitmap()
            .extra_data(vec![1; 8])
            .flags(bitmap_entry::FLAG_EXTRA_DATA_COMPATIBLE),
    )
    .check();
    assert!(compatible.bitmaps[0].usable);
    assert_eq!(compatible.bitmaps[0].contents.set_bits, Some(4));
}

#[test]
fn an_invalid_extension_makes_every_bitmap_unusable() {
    let r = two_named(b"same", b"same").check();
    assert_eq!(r.bitmaps_extension, ExtensionState::Consistent);
    assert!(r
        .bitmaps
        .iter()
        .all(|b| !b.usable && b.contents.set_bits.is_none()));
}

#[test]
fn dirty_bit_suppresses_refcount_findings() {
    let r = base_with(|img| {
        header_put(img, header::INCOMPATIBLE_FEATURES, header::INCOMPAT_DIRTY);
        let l2 = img.layout.l2_offset;
        img.set_refcount(l2, 0);
    })
    .check();
    assert_eq!(
        r.rules_with(Severity::Error),
        Vec::<&str>::new(),
        "{}",
        r.summary()
    );
}

#[test]
fn granularity_bits_field_is_used_for_nbits() {
    // The entry's granularity must be what the builder wrote.
    let img = with_granularity(31);
    assert_eq!(entry_get(&img, 0, bitmap_entry::GRANULARITY_BITS), 31);
    assert_eq!(img.layout.entries[0].nbits, 1);
}

#[test]
fn any_cluster_bits_or_granularity_never_panics() {
    let img = base().build();
    for cb in (0..=80).chain([u32::MAX as u64]) {
        let mut b = img.clone();
        header_put(&mut b, header::CLUSTER_BITS, cb);
        let r = b.check();
        if !(9..=63).contains(&cb) {
            assert!(has(&r, "header.cluster-bits", Severity::Error), "cb {cb}");
        }
    }
    for g in 0..=255 {
        let mut b = img.clone();
        entry_put(&mut b, 0, bitmap_entry::GRANULARITY_BITS, g);
        let r = b.check();
        assert_eq!(
            has(&r, "bitmaps.dir.granularity", Severity::Error),
            g > 63,
            "g {g}"
        );
    }
    assert_eq!(header_get(&img, header::CLUSTER_BITS), 12);
}

#[test]
fn hostile_field_values_never_panic() {
    let img = Spec {
        snapshot_extra_data: Some(16),
        ..base()
    }
    .build();
    let extremes = [
        0,
        1,
        7,
        0x1ff,
        1 << 31,
        u64::from(u32::MAX),
        1 << 63,
        u64::MAX,
    ];
    let mut targets: Vec<(u64, spec_model::fields::Field)> = Vec::new();
    targets.extend(header::V2.iter().chain(header::V3).map(|f| (0, *f)));
    let ext = img.layout.bitmaps_ext_data();
    targets.extend(bitmaps_ext::FIELDS.iter().map(|f| (ext, *f)));
    let entry = img.layout.entries[0].offset;
    targets.extend(bitmap_entry::FIELDS.iter().map(|f| (entry, *f)));
    let snap = img.layout.snapshot_table_offset;
    targets.extend(snapshot::FIELDS.iter().map(|f| (snap, *f)));
    for (at, field) in targets {
        for v in extremes {
            let mut b = img.clone();
            b.put(at, field, v);
            let r = b.check();
            // The verdict contract holds whatever the input.
            let errors = r.findings.iter().any(|f| f.severity == Severity::Error);
            assert_eq!(
                errors,
                r.verdict == Verdict::Invalid,
                "{} = {v:#x}",
                field.name
            );
        }
    }
}

// ---------------------------------------------------------------------
// Spec requirements outside the catalogue that the model does not check.
// These assert what `docs/interop/qcow2.rst` says; see the issue report.

// ---------------------------------------------------------------------
// Refcounts past the end of the file: every non-zero one is a leak, runs
// of equal refcounts are one finding, and past the rule's cap the runs are
// only counted.

#[test]
fn leaks_past_the_end_of_the_file_are_listed_up_to_the_cap_and_counted() {
    let mut img = base().build();
    let (cs, order) = (img.layout.cluster_size, img.layout.refcount_order);
    let per_block = (cs * 8) >> order;
    let first = img.len().div_ceil(cs);
    // Runs of one cluster each (refcounts alternate 1, 2), then one run of
    // three clusters with refcount 1.
    let singles = 100.min(per_block - first - 4);
    assert!(
        singles > u64::from(spec_model::finding::MAX_FINDINGS_PER_RULE),
        "the base image's first refcount block must reach far past its end"
    );
    assert!(
        order >= 1,
        "refcounts must hold 2 for the runs to alternate"
    );
    for k in 0..singles {
        img.set_refcount((first + k) * cs, 1 + k % 2);
    }
    let tail = first + singles + 1;
    for k in 0..3 {
        img.set_refcount((tail + k) * cs, 1);
    }
    let leaks: Vec<_> = {
        let r = img.check();
        r.findings
            .into_iter()
            .filter(|f| f.rule == Rule::RefcountLeak)
            .collect()
    };
    let cap = spec_model::finding::MAX_FINDINGS_PER_RULE as usize;
    assert_eq!(leaks.len(), cap + 1, "{leaks:#?}");
    for (k, f) in leaks[..cap].iter().enumerate() {
        assert_eq!(f.offset, (first + k as u64) * cs);
        assert!(
            f.message.contains("referenced 0 times by no structure"),
            "{}",
            f.message
        );
    }
    // Runs: `singles` of one cluster and one of three clusters.
    let runs = singles + 1;
    let summary = &leaks[cap];
    assert_eq!(
        summary.message.to_string(),
        format!(
            "{} more findings of this rule not listed",
            runs - cap as u64
        )
    );
    let model = spec_model::Model::open(std::io::Cursor::new(&img.bytes)).unwrap();
    assert_eq!(
        model.analysis().refcounts.leaked_clusters,
        singles + 3,
        "every non-zero refcount past the end is a leaked cluster"
    );
}
