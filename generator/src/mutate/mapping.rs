//! Mutations that break guest cluster mapping (spec "Cluster mapping",
//! "Extended L2 Entries"; rules `l1.*`, `l2.*`).

use super::prep::{guest_write, min_cluster_bits, p_sized, p_write, p_write_1k, v3};
use super::target::U64;
use super::{mutation, Mutation, Skip, Target};
use rand::Rng;
use spec_model::fields::{header as hf, mapping as mp};
use spec_model::Rule;
use spec_model::Severity::Error;
use std::ops::RangeInclusive;

/// This section of the catalogue, in the catalogue's order.
pub(super) static MUTATIONS: &[Mutation] = &[
    mutation(
        "l1.bounds/past-eof",
        Rule::L1Bounds,
        Error,
        "l1_table_offset set to a cluster at or past the end of the file",
        p_sized,
        |t| t.put_past_eof(0, hf::L1_TABLE_OFFSET),
    ),
    mutation(
        "l1.reserved-bits/set",
        Rule::L1ReservedBits,
        Error,
        "one reserved bit (1-8 or 56-62) of an L1 entry set",
        p_sized,
        |t| {
            if t.layout.l1_size == 0 {
                return Err("empty L1 table");
            }
            let at = t.layout.l1_offset + 8 * t.rng.gen_range(0..u64::from(t.layout.l1_size));
            set_reserved_bit(t, at, 56..=62)
        },
    ),
    mutation(
        "l1.alignment/misaligned",
        Rule::L1Alignment,
        Error,
        "an L2 table offset in the L1 table moved by a multiple of 512 off its \
         cluster boundary",
        p_write_1k,
        |t| {
            let at = t.used_l1_entry()?;
            t.misalign_entry(at)
        },
    ),
    mutation(
        "l2.bounds/past-eof",
        Rule::L2Bounds,
        Error,
        "an L1 entry pointed at a cluster at or past the end of the file",
        p_write,
        |t| {
            let at = t.used_l1_entry()?;
            let off = t.past_eof();
            t.repoint(at, mp::COPIED, off)
        },
    ),
    mutation(
        "l2.reserved-bits/set",
        Rule::L2ReservedBits,
        Error,
        "one reserved bit (1-8 or 56-61) of a standard L2 entry set",
        p_write,
        |t| {
            let at = t.mapped_l2_entry()?;
            set_reserved_bit(t, at, 56..=61)
        },
    ),
    mutation(
        "l2.alignment/misaligned",
        Rule::L2Alignment,
        Error,
        "a guest data cluster offset in an L2 entry moved by a multiple of 512 off \
         its cluster boundary",
        p_write_1k,
        |t| {
            let at = t.mapped_l2_entry()?;
            t.misalign_entry(at)
        },
    ),
    mutation(
        "l2.data-bounds/past-eof",
        Rule::L2DataBounds,
        Error,
        "an L2 entry pointed at a cluster at or past the end of the file",
        p_write,
        |t| {
            let at = t.mapped_l2_entry()?;
            let off = t.past_eof();
            t.repoint(at, !mp::L2_OFFSET_MASK, off)
        },
    ),
    mutation(
        "l2.subclusters/allocated-and-zero",
        Rule::L2Subclusters,
        Error,
        "in an extended L2 entry, one allocated subcluster also marked as reading zeros",
        |s, u| {
            v3(s);
            min_cluster_bits(s, 14);
            s.extended_l2 = true;
            guest_write(s, u, 1)
        },
        |t| {
            if t.l2_entry_size() != 16 {
                return Err("no extended L2 entries");
            }
            let at = t.mapped_l2_entry()? + 8;
            let v = t.get_u64(at);
            let alloc = v & 0xffff_ffff;
            if alloc == 0 {
                return Err("no allocated subcluster");
            }
            let k = t.rng.gen_range(0..32);
            if alloc & 1 << k == 0 {
                return Err("subcluster not allocated");
            }
            t.put_u64(at, v | 1 << (32 + k));
            Ok(())
        },
    ),
];

/// Sets one reserved bit of the table entry at `at`: one of bits 1-8 or,
/// as likely, one of the high bits `high`.
fn set_reserved_bit(t: &mut Target, at: u64, high: RangeInclusive<u32>) -> Result<(), Skip> {
    let bit = if t.rng.gen_bool(0.5) {
        t.rng.gen_range(1..=8)
    } else {
        t.rng.gen_range(high)
    };
    t.set_bits(at, U64, 1 << bit)
}
