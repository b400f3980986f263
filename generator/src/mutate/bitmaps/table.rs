//! Mutations that break bitmap tables and the data clusters they point at
//! (spec "Bitmap table", "Bitmap data"; rules `bitmaps.table.*`,
//! `bitmaps.data.*`).

use super::pick_entry;
use crate::mutate::prep::{coarsen_while, cs, p_bitmap, p_stored, p_stored_1k, stored_bitmap};
use crate::mutate::target::U64;
use crate::mutate::{mutation, Mutation, Skip, Target};
use rand::Rng;
use spec_model::fields::{bitmap_entry as be, bitmap_table_entry as bt};
use spec_model::Rule;
use spec_model::Severity::Error;

/// This section of the catalogue, in the catalogue's order.
pub(in crate::mutate) static MUTATIONS: &[Mutation] = &[
    mutation(
        "bitmaps.table.bounds/past-eof",
        Rule::BitmapsTableBounds,
        Error,
        "a bitmap's table offset set to a cluster at or past the end of the file",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            t.put_past_eof(at, be::BITMAP_TABLE_OFFSET)
        },
    ),
    mutation(
        "bitmaps.table.bounds/unallocated",
        Rule::BitmapsTableBounds,
        Error,
        "the refcount of a bitmap table's first cluster set to 0",
        p_bitmap,
        |t| {
            let off = t.bitmap(0)?.table_offset;
            t.unallocate(off)
        },
    ),
    mutation(
        "bitmaps.table.reserved-bits/bits-1-8",
        Rule::BitmapsTableReservedBits,
        Error,
        "one of bits 1-8 of a bitmap table entry set",
        p_bitmap,
        |t| table_entry_bit(t, 1..=8),
    ),
    mutation(
        "bitmaps.table.reserved-bits/bits-56-63",
        Rule::BitmapsTableReservedBits,
        Error,
        "one of bits 56-63 of a bitmap table entry set",
        p_bitmap,
        |t| table_entry_bit(t, 56..=63),
    ),
    mutation(
        "bitmaps.table.all-ones-with-offset/bit-0",
        Rule::BitmapsTableAllOnesWithOffset,
        Error,
        "bit 0 set in a bitmap table entry that holds a data cluster offset",
        p_stored,
        |t| {
            let at = t.stored_table_entry()?;
            t.set_bits(at, U64, bt::ALL_ONES)
        },
    ),
    mutation(
        "bitmaps.table.entry-alignment/misaligned",
        Rule::BitmapsTableEntryAlignment,
        Error,
        "a data cluster offset in a bitmap table moved by a multiple of 512 off \
         its cluster boundary (clusters of at least 1 KiB)",
        p_stored_1k,
        |t| {
            let at = t.stored_table_entry()?;
            t.misalign_entry(at)
        },
    ),
    mutation(
        "bitmaps.data.bounds/past-eof",
        Rule::BitmapsDataBounds,
        Error,
        "a bitmap table entry pointed at a cluster at or past the end of the file",
        p_stored,
        |t| {
            let at = t.stored_table_entry()?;
            t.put_past_eof(at, U64)
        },
    ),
    mutation(
        "bitmaps.data.bounds/unallocated",
        Rule::BitmapsDataBounds,
        Error,
        "the refcount of a bitmap data cluster set to 0",
        p_stored,
        |t| {
            let (_, off) = t.stored_data(0)?;
            t.unallocate(off)
        },
    ),
    mutation(
        "bitmaps.data.tail-bits/set",
        Rule::BitmapsDataTailBits,
        Error,
        "one bit past the bitmap's last bit set in its last data cluster",
        |s, u| {
            stored_bitmap(s, u)?;
            let bits_per_cluster = cs(s) * 8;
            coarsen_while(s, 0, |g| g.nbits().is_multiple_of(bits_per_cluster));
            Ok(())
        },
        |t| {
            t.bitmap(0)?;
            let geo = t.spec.geometry(t.spec.bitmaps.first().ok_or("no bitmap")?);
            let per = t.cluster_size() * 8;
            let last = geo
                .clusters_needed()
                .checked_sub(1)
                .ok_or("no data cluster")?;
            let &(_, off) = t
                .bitmap(0)?
                .data
                .iter()
                .find(|(j, _)| *j == last)
                .ok_or("last data cluster not stored")?;
            let first = geo.nbits() - last * per;
            if first == per {
                return Err("no tail bits");
            }
            let k = t.rng.gen_range(first..per);
            t.bytes[(off + k / 8) as usize] |= 1 << (k % 8);
            Ok(())
        },
    ),
];

/// Sets a bit from `bits` in a random entry of bitmap 0's table.
fn table_entry_bit(t: &mut Target, bits: std::ops::RangeInclusive<u32>) -> Result<(), Skip> {
    let n = u64::from(t.bitmap(0)?.table_size);
    if n == 0 {
        return Err("empty bitmap table");
    }
    let j = t.rng.gen_range(0..n);
    let at = t.table_entry(0, j)?;
    t.set_random_bit(at, U64, bits)
}
