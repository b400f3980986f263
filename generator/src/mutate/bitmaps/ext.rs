//! Mutations that break the bitmaps extension itself (spec "Bitmaps
//! extension"; rules `bitmaps.ext.*`, the autoclear bit and the version).
//! `refcount.overlap/directory-offset-zero` lives here too: it breaks an
//! overlap rule by editing this extension's directory offset.

use crate::build::entry_bytes;
use crate::contents::Contents;
use crate::mutate::prep::{bitmaps, p_bitmap, p_directory_with_room, tilde_name, v3};
use crate::mutate::{mutation, ExtState, Mutation, Skip, Target};
use crate::spec::BitmapSpec;
use rand::Rng;
use spec_model::fields::{bitmap_entry as be, bitmaps_ext as bx, extension as ext, header as hf};
use spec_model::Rule;
use spec_model::Severity::{Error, Inconsistent, Limit, Unspecified};

/// This section of the catalogue, in the catalogue's order.
pub(in crate::mutate) static MUTATIONS: &[Mutation] = &[
    mutation(
        "bitmaps.autoclear-missing/bit-0-clear",
        Rule::BitmapsAutoclearMissing,
        Inconsistent,
        "autoclear bit 0 cleared in a v3 image with bitmaps: the extension must \
         be ignored (its clusters show as leaked)",
        p_bitmap,
        |t| t.update(0, hf::AUTOCLEAR_FEATURES, |v| v & !hf::AUTOCLEAR_BITMAPS),
    )
    .ext(ExtState::Inconsistent),
    mutation(
        "bitmaps.v2-image/downgraded",
        Rule::BitmapsV2Image,
        Inconsistent,
        "a v3 image with bitmaps (refcount_order 4, no extended L2) rewritten as \
         version 2: the extension area moves to byte 72",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.refcount_order = 4;
            s.extended_l2 = false;
            Ok(())
        },
        |t| {
            let hl = t.get(0, hf::HEADER_LENGTH) as usize;
            let cs = t.cluster_size() as usize;
            if !(hf::V2_LENGTH..=cs).contains(&hl) {
                return Err("header_length outside the first cluster");
            }
            let area = t.bytes[hl..cs].to_vec();
            let start = hf::V2_LENGTH;
            t.bytes[start..start + area.len()].copy_from_slice(&area);
            t.bytes[start + area.len()..cs].fill(0);
            t.put(0, hf::VERSION, 2);
            t.spec.version = 2;
            Ok(())
        },
    )
    .ext(ExtState::Inconsistent),
    mutation(
        "bitmaps.autoclear-without-extension/bit-0-set",
        Rule::BitmapsAutoclearWithoutExtension,
        Error,
        "autoclear bit 0 set in a v3 image without bitmaps",
        |s, _| {
            v3(s);
            s.bitmaps.clear();
            Ok(())
        },
        |t| t.set_bits(0, hf::AUTOCLEAR_FEATURES, hf::AUTOCLEAR_BITMAPS),
    ),
    mutation(
        "bitmaps.ext.length/short",
        Rule::BitmapsExtLength,
        Error,
        "the bitmaps extension's length field set below 24",
        p_bitmap,
        |t| {
            let at = t.ext_data()? - ext::PREFIX_LENGTH as u64;
            t.put_random(at, ext::LENGTH, 0..24)
        },
    ),
    mutation(
        "bitmaps.ext.length/long",
        Rule::BitmapsExtLength,
        Unspecified,
        "the bitmaps extension, last in the list, claims 25-32 bytes: the \
         end-of-extensions marker's zero bytes become its extra data",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.unknown_extensions.clear();
            Ok(())
        },
        |t| {
            let at = t.ext_data()? - ext::PREFIX_LENGTH as u64;
            t.put_random(at, ext::LENGTH, 25..=32)
        },
    ),
    mutation(
        "bitmaps.ext.nb-bitmaps-zero/empty-directory",
        Rule::BitmapsExtNbBitmapsZero,
        Error,
        "nb_bitmaps and bitmap_directory_size both set to 0",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            t.put(at, bx::NB_BITMAPS, 0);
            t.put(at, bx::BITMAP_DIRECTORY_SIZE, 0);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.reserved/non-zero",
        Rule::BitmapsExtReserved,
        Error,
        "extension bytes 4-7 (reserved) non-zero",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            t.put_random(at, bx::RESERVED, 1..=u64::from(u32::MAX))
        },
    ),
    mutation(
        "bitmaps.ext.directory-alignment/plus-8",
        Rule::BitmapsExtDirectoryAlignment,
        Error,
        "the directory moved 8 bytes further inside its own clusters and \
         bitmap_directory_offset pointed there",
        p_directory_with_room,
        |t| {
            let (off, size) = (t.layout.directory_offset, t.layout.directory_size);
            if size.is_multiple_of(t.cluster_size()) {
                return Err("the directory fills its clusters");
            }
            let (a, n) = (off as usize, size as usize);
            t.bytes.copy_within(a..a + n, a + 8);
            t.bytes[a..a + 8].fill(0);
            let at = t.ext_data()?;
            t.put(at, bx::BITMAP_DIRECTORY_OFFSET, off + 8);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.directory-size/one-bitmap-more",
        Rule::BitmapsExtDirectorySize,
        Error,
        "nb_bitmaps one higher than the directory holds: the extra entry would \
         start at the directory's end",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            t.update(at, bx::NB_BITMAPS, |n| n + 1)
        },
    ),
    mutation(
        "bitmaps.ext.directory-size/trailing-bytes",
        Rule::BitmapsExtDirectorySize,
        Error,
        "bitmap_directory_size 8-56 bytes larger than the entries fill (the extra \
         zero bytes lie inside the directory's last cluster)",
        p_directory_with_room,
        |t| {
            let (size, cs) = (t.layout.directory_size, t.cluster_size());
            let room = size.div_ceil(cs) * cs - size;
            if room < 8 {
                return Err("the directory fills its clusters");
            }
            let extra = 8 * t.rng.gen_range(1..=(room / 8).min(7));
            let at = t.ext_data()?;
            t.put(at, bx::BITMAP_DIRECTORY_SIZE, size + extra);
            Ok(())
        },
    ),
    mutation(
        "refcount.overlap/directory-offset-zero",
        Rule::RefcountOverlap,
        Error,
        "bitmap_directory_offset set to 0 (one bitmap, a 32-byte directory): the \
         directory overlays the header. Also bitmaps.dir.entry-bounds, necessarily: \
         the header's bytes read as an entry give extra_data_size = cluster_bits, \
         so the entry is 40 or 48 bytes long and runs past the 32-byte directory",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.bitmaps.truncate(1);
            s.bitmaps[0].extra_data.clear();
            if s.bitmaps[0].name.len() > 8 {
                tilde_name(s, 0, 8);
            }
            Ok(())
        },
        |t| {
            let at = t.ext_data()?;
            t.put(at, bx::BITMAP_DIRECTORY_OFFSET, 0);
            Ok(())
        },
    )
    .also(&[Rule::BitmapsDirEntryBounds]),
    mutation(
        "bitmaps.ext.directory-bounds/past-eof",
        Rule::BitmapsExtDirectoryBounds,
        Error,
        "bitmap_directory_offset set to a cluster at or past the end of the file",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            t.put_past_eof(at, bx::BITMAP_DIRECTORY_OFFSET)
        },
    ),
    mutation(
        "bitmaps.ext.directory-bounds/size-past-eof",
        Rule::BitmapsExtDirectoryBounds,
        Error,
        "bitmap_directory_size grown so that the directory runs past the end of \
         the file",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            let size = t.file_len() - t.layout.directory_offset + 8 * t.rng.gen_range(1..=64);
            t.put(at, bx::BITMAP_DIRECTORY_SIZE, size);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.limits/65536-bitmaps",
        Rule::BitmapsExtLimits,
        Limit,
        "65536 bitmaps: the last real bitmap is built with extra data exactly as \
         long as the filler entries, then its entry is rewritten without extra data \
         and followed by in_use bitmaps with empty tables (a 2 MiB directory)",
        |s, u| {
            bitmaps(s, u, 1)?;
            let fillers = 65536 - s.bitmaps.len();
            let last = s.bitmaps.last_mut().expect("one bitmap");
            last.extra_data = vec![0x5a; fillers * 32];
            Ok(())
        },
        a_many_bitmaps,
    )
    .heavy(),
];

/// See `bitmaps.ext.limits/65536-bitmaps`.
fn a_many_bitmaps(t: &mut Target) -> Result<(), Skip> {
    const TOTAL: usize = 65536;
    let last = t.spec.bitmaps.len().checked_sub(1).ok_or("no bitmap")?;
    let fillers = TOTAL - t.spec.bitmaps.len();
    let bl = t.bitmap(last)?.clone();
    t.spec.bitmaps[last].extra_data.clear();
    let mut plain = bl.clone();
    plain.entry_length = be::entry_length(0, t.spec.bitmaps[last].name.len() as u64);
    let mut dir = entry_bytes(&t.spec.bitmaps[last], &plain);
    let cs = t.cluster_size();
    for k in 0..fillers {
        let name = format!("~{k:07x}").into_bytes();
        let mut e = vec![0u8; be::entry_length(0, name.len() as u64) as usize];
        // An empty table at any aligned offset inside the file claims nothing.
        be::BITMAP_TABLE_OFFSET.put(&mut e, cs);
        be::FLAGS.put(&mut e, be::FLAG_IN_USE);
        be::TYPE.put(&mut e, be::TYPE_DIRTY_TRACKING);
        be::GRANULARITY_BITS.put(&mut e, 16);
        be::NAME_SIZE.put(&mut e, name.len() as u64);
        e[be::FIXED_LENGTH..be::FIXED_LENGTH + name.len()].copy_from_slice(&name);
        dir.extend(e);
        t.spec.bitmaps.push(BitmapSpec {
            name,
            granularity_bits: 16,
            bitmap_type: 1,
            in_use: true,
            auto: false,
            extra_data_compatible: false,
            extra_data: Vec::new(),
            contents: Contents::Empty,
            zero_entries: true,
            ones_entries: false,
        });
    }
    if dir.len() as u64 != bl.entry_length {
        return Err("the filler entries do not replace the extra data exactly");
    }
    let at = bl.entry_offset as usize;
    t.bytes[at..at + dir.len()].copy_from_slice(&dir);
    let ext_at = t.ext_data()?;
    t.put(ext_at, bx::NB_BITMAPS, TOTAL as u64);
    Ok(())
}
