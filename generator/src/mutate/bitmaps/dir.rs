//! Mutations that break the bitmap directory (spec "Bitmap directory";
//! rules `bitmaps.dir.*`): entry bounds, table offset and size, flags,
//! type, granularity, names, padding, extra data and the in-use flag.

use super::{pick_entry, put_in_entry};
use crate::build::entry_bytes;
use crate::mutate::prep::PResult;
use crate::mutate::prep::{
    bitmaps, coarsen_while, cs, new_bitmap, p_bitmap, p_stored, tilde_name, v3,
};
use crate::mutate::{mutation, Mutation, Skip, Target};
use crate::spec::ImageSpec;
use arbitrary::Unstructured;
use rand::Rng;
use spec_model::fields::{bitmap_entry as be, bitmaps_ext as bx};
use spec_model::Rule;
use spec_model::Severity::{Error, Limit, Note, Unspecified};

/// This section of the catalogue, in the catalogue's order.
pub(in crate::mutate) static MUTATIONS: &[Mutation] = &[
    mutation(
        "bitmaps.dir.entry-bounds/directory-8-short",
        Rule::BitmapsDirEntryBounds,
        Error,
        "bitmap_directory_size 8 bytes short: the last entry runs past the directory",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            t.lower(
                at,
                bx::BITMAP_DIRECTORY_SIZE,
                8,
                "directory shorter than 8 bytes",
            )
        },
    ),
    mutation(
        "bitmaps.dir.table-offset-zero/zero",
        Rule::BitmapsDirTableOffsetZero,
        Error,
        "a bitmap's bitmap_table_offset set to 0",
        p_bitmap,
        |t| put_in_entry(t, be::BITMAP_TABLE_OFFSET, 0),
    ),
    mutation(
        "bitmaps.dir.table-alignment/misaligned",
        Rule::BitmapsDirTableAlignment,
        Error,
        "a bitmap's bitmap_table_offset moved off its cluster boundary",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            let d = t.rng.gen_range(1..t.cluster_size());
            t.update(at, be::BITMAP_TABLE_OFFSET, |v| v + d)
        },
    ),
    mutation(
        "bitmaps.dir.table-size/one-short",
        Rule::BitmapsDirTableSize,
        Error,
        "bitmap_table_size of a bitmap that is not in use one below what the \
         virtual size needs",
        p_stored,
        |t| {
            let at = t.bitmap(0)?.entry_offset;
            t.lower(at, be::BITMAP_TABLE_SIZE, 1, "empty bitmap table")
        },
    ),
    mutation(
        "bitmaps.dir.table-size/empty-disk",
        Rule::BitmapsDirTableSize,
        Unspecified,
        "bitmaps on a zero-size virtual disk: empty tables (at a non-zero aligned \
         offset); no byte changed",
        |s, u| {
            v3(s);
            s.size = 0;
            s.writes.clear();
            if s.bitmaps.is_empty() {
                s.bitmaps.push(new_bitmap(s, u, 0)?);
            }
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.table-size/one-long",
        Rule::BitmapsDirTableSize,
        Unspecified,
        "bitmap_table_size of a bitmap that is not in use one above what the \
         virtual size needs; the extra entry is a zero entry inside the table's \
         last cluster",
        |s, u| {
            bitmaps(s, u, 1)?;
            // An in_use bitmap may keep a table sized for another disk.
            s.bitmaps[0].in_use = false;
            let per_cluster = cs(s) / 8;
            coarsen_while(s, 0, |g| g.clusters_needed().is_multiple_of(per_cluster));
            Ok(())
        },
        |t| {
            let bl = t.bitmap(0)?;
            let (at, n) = (bl.entry_offset, u64::from(bl.table_size));
            if (n * 8).is_multiple_of(t.cluster_size()) {
                return Err("the table fills its clusters");
            }
            t.put(at, be::BITMAP_TABLE_SIZE, n + 1);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.flags-reserved/reserved-bit",
        Rule::BitmapsDirFlagsReserved,
        Error,
        "one reserved flag bit (3-31) of a bitmap set",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            t.set_random_bit(at, be::FLAGS, 3..32)
        },
    ),
    mutation(
        "bitmaps.dir.type/zero",
        Rule::BitmapsDirType,
        Error,
        "a bitmap's type set to 0 (reserved)",
        p_bitmap,
        |t| put_in_entry(t, be::TYPE, 0),
    ),
    mutation(
        "bitmaps.dir.type/reserved",
        Rule::BitmapsDirType,
        Error,
        "a bitmap's type set to a reserved value 2-255",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            t.put_random(at, be::TYPE, 2..=255)
        },
    ),
    mutation(
        "bitmaps.dir.granularity/64",
        Rule::BitmapsDirGranularity,
        Error,
        "a bitmap's granularity_bits set to 64-255",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            let v = if t.rng.gen_bool(0.5) {
                64
            } else {
                t.rng.gen_range(64..=255)
            };
            t.put(at, be::GRANULARITY_BITS, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.granularity/8",
        Rule::BitmapsDirGranularity,
        Limit,
        "a valid bitmap with granularity_bits 8, below QEMU's 9; no byte changed",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.bitmaps[0].granularity_bits = 8;
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.granularity/32-63",
        Rule::BitmapsDirGranularity,
        Limit,
        "a valid bitmap with granularity_bits 32-63, above QEMU's 31; no byte changed",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.bitmaps[0].granularity_bits = u.int_in_range(32..=63)?;
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.name-empty/removed",
        Rule::BitmapsDirNameEmpty,
        Error,
        "the directory re-encoded with one bitmap's name removed (name_size 0) \
         and bitmap_directory_size fixed",
        p_bitmap,
        |t| {
            if t.spec.bitmaps.is_empty() {
                return Err("no bitmap");
            }
            let i = t.rng.gen_range(0..t.spec.bitmaps.len());
            t.spec.bitmaps[i].name.clear();
            rewrite_directory(t)
        },
    ),
    mutation(
        "bitmaps.dir.name-limit/1024",
        Rule::BitmapsDirNameLimit,
        Limit,
        "a valid bitmap with a 1024-byte name, beyond QEMU's 1023; no byte changed",
        |s, u| {
            bitmaps(s, u, 1)?;
            tilde_name(s, 0, 1024);
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.name-unique/equal-names",
        Rule::BitmapsDirNameUnique,
        Error,
        "two bitmaps whose names differ only in their last byte; that byte \
         overwritten so that the names are equal",
        |s, u| {
            bitmaps(s, u, 2)?;
            let mut other = s.bitmaps[0].name.clone();
            *other.last_mut().expect("names are not empty") = b'~';
            s.bitmaps[1].name = other;
            Ok(())
        },
        |t| {
            let bl = t.bitmap(1)?;
            let (Some(b0), Some(b1)) = (t.spec.bitmaps.first(), t.spec.bitmaps.get(1)) else {
                return Err("fewer than two bitmaps");
            };
            if b0.name.is_empty() || b0.name.len() != b1.name.len() {
                return Err("the names differ in length");
            }
            let n = b0.name.clone();
            let extra = b1.extra_data.len() as u64;
            let at = bl.entry_offset + be::FIXED_LENGTH as u64 + extra + n.len() as u64 - 1;
            t.bytes[at as usize] = *n.last().expect("names are not empty");
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.name-bytes/nul",
        Rule::BitmapsDirNameBytes,
        Unspecified,
        "one byte of a bitmap's name set to NUL",
        p_bitmap,
        |t| set_name_byte(t, 0),
    ),
    mutation(
        "bitmaps.dir.name-bytes/not-utf8",
        Rule::BitmapsDirNameBytes,
        Unspecified,
        "one byte of a bitmap's name set to 0xff (never valid UTF-8)",
        p_bitmap,
        |t| set_name_byte(t, 0xff),
    ),
    mutation(
        "bitmaps.dir.padding/non-zero",
        Rule::BitmapsDirPadding,
        Error,
        "one padding byte after a bitmap's name non-zero",
        |s, u| {
            bitmaps(s, u, 1)?;
            let b = &s.bitmaps[0];
            if (b.extra_data.len() + b.name.len()) % 8 == 0 {
                let n = b.name.len();
                tilde_name(s, 0, if n > 1 { n - 1 } else { n + 1 });
            }
            Ok(())
        },
        |t| {
            let bl = t.bitmap(0)?;
            let b = t.spec.bitmaps.first().ok_or("no bitmap")?;
            let used = (be::FIXED_LENGTH + b.extra_data.len() + b.name.len()) as u64;
            let (at, len) = (bl.entry_offset, bl.entry_length);
            if used >= len {
                return Err("the entry has no padding");
            }
            let k = at + t.rng.gen_range(used..len);
            t.bytes[k as usize] = t.rng.gen_range(1..=255);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.extra-data/incompatible",
        Rule::BitmapsDirExtraData,
        Note,
        "a bitmap with extra data and extra_data_compatible clear: listed, not \
         usable; no byte changed",
        |s, u| extra_data(s, u, false),
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.extra-data/compatible",
        Rule::BitmapsDirExtraData,
        Note,
        "a bitmap with extra data and extra_data_compatible set: usable; no byte \
         changed",
        |s, u| extra_data(s, u, true),
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.in-use/set",
        Rule::BitmapsDirInUse,
        Note,
        "the in_use flag of a bitmap set: listed, not usable",
        p_bitmap,
        |t| {
            let free: Vec<usize> = (0..t.spec.bitmaps.len())
                .filter(|&i| !t.spec.bitmaps[i].in_use)
                .collect();
            if free.is_empty() {
                return Err("every bitmap is in use");
            }
            let i = free[t.rng.gen_range(0..free.len())];
            let at = t.bitmap(i)?.entry_offset;
            t.set_bits(at, be::FLAGS, be::FLAG_IN_USE)?;
            t.spec.bitmaps[i].in_use = true;
            Ok(())
        },
    ),
];

/// Sets one byte of a random bitmap's name to `byte`.
fn set_name_byte(t: &mut Target, byte: u8) -> Result<(), Skip> {
    if t.spec.bitmaps.is_empty() {
        return Err("no bitmap");
    }
    let i = t.rng.gen_range(0..t.spec.bitmaps.len());
    let b = &t.spec.bitmaps[i];
    if b.name.is_empty() {
        return Err("empty name");
    }
    let k = t.rng.gen_range(0..b.name.len());
    let at = t.bitmap(i)?.entry_offset + (be::FIXED_LENGTH + b.extra_data.len() + k) as u64;
    t.bytes[at as usize] = byte;
    t.spec.bitmaps[i].name[k] = byte;
    Ok(())
}

/// Bitmap 0 gets extra data and the given extra_data_compatible flag.
fn extra_data(s: &mut ImageSpec, u: &mut Unstructured, compatible: bool) -> PResult {
    bitmaps(s, u, 1)?;
    let n = u.int_in_range(1usize..=40)?;
    let b = &mut s.bitmaps[0];
    b.in_use = false;
    b.extra_data_compatible = compatible;
    b.extra_data = (0..n).map(|i| (i as u8).wrapping_mul(37) ^ 0x96).collect();
    Ok(())
}

/// Writes the directory again from `t.spec` (same tables), in place, and
/// fixes bitmap_directory_size; bytes the directory no longer uses are
/// zeroed.
fn rewrite_directory(t: &mut Target) -> Result<(), Skip> {
    let mut dir = Vec::new();
    for (b, bl) in t.spec.bitmaps.iter().zip(&t.layout.bitmaps) {
        let mut bl = bl.clone();
        bl.entry_length = be::entry_length(b.extra_data.len() as u64, b.name.len() as u64);
        dir.extend(entry_bytes(b, &bl));
    }
    let (off, old) = (
        t.layout.directory_offset as usize,
        t.layout.directory_size as usize,
    );
    if dir.len() > old {
        return Err("the directory would grow");
    }
    t.bytes[off..off + old].fill(0);
    t.bytes[off..off + dir.len()].copy_from_slice(&dir);
    let at = t.ext_data()?;
    t.put(at, bx::BITMAP_DIRECTORY_SIZE, dir.len() as u64);
    Ok(())
}
