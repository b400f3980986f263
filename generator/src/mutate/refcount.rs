//! Mutations that break refcounting (spec "Host cluster management";
//! rules `refcount.*`): the refcount table, unallocated and doubly used
//! clusters, leaks.

use super::prep::{bitmaps, coarsen, guest_write, keep, refcounts_up_to_2};
use super::target::U64;
use super::{mutation, Mutation};
use rand::Rng;
use spec_model::fields::bitmap_entry as be;
use spec_model::fields::mapping as mp;
use spec_model::Rule;
use spec_model::Severity::{Error, Leak};

/// This section of the catalogue, in the catalogue's order.
pub(super) static MUTATIONS: &[Mutation] = &[
    mutation(
        "refcount.block-alignment/unused-entry",
        Rule::RefcountBlockAlignment,
        Error,
        "an unused refcount table entry given a value with reserved bits 0-8 set",
        keep,
        |t| {
            let at = t.unused_refcount_entry()?;
            let v = t.file_len() | t.rng.gen_range(1..512);
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "refcount.bounds/unused-entry",
        Rule::RefcountBounds,
        Error,
        "an unused refcount table entry pointed at a cluster at or past the end of \
         the file",
        keep,
        |t| {
            let at = t.unused_refcount_entry()?;
            t.put_past_eof(at, U64)
        },
    ),
    mutation(
        "refcount.unallocated/metadata",
        Rule::RefcountUnallocated,
        Error,
        "the refcount of one cluster of the header, the refcount table or blocks, \
         the L1 or an L2 table, guest data, the snapshot table or the bitmap \
         directory set to 0",
        keep,
        |t| {
            let l = &t.layout;
            let mut used = vec![0, l.refcount_table_offset];
            used.extend(&l.refcount_blocks);
            if l.l1_size > 0 {
                used.push(l.l1_offset);
            }
            used.extend(l.l2_tables.iter().map(|(_, o)| *o));
            used.extend(l.data_clusters.iter().map(|(_, o)| *o));
            if !t.spec.snapshots.is_empty() {
                used.push(l.snapshot_table_offset);
            }
            if !t.spec.bitmaps.is_empty() {
                used.push(l.directory_offset);
            }
            let off = used[t.rng.gen_range(0..used.len())];
            t.unallocate(off)
        },
    ),
    mutation(
        "refcount.overlap/bitmap-table-on-refcount-table",
        Rule::RefcountOverlap,
        Error,
        "a one-entry bitmap table pointed at the refcount table",
        |s, u| {
            bitmaps(s, u, 1)?;
            coarsen(s, 0, 1);
            Ok(())
        },
        |t| {
            let at = t.bitmap(0)?.entry_offset;
            let rt = t.layout.refcount_table_offset;
            t.put(at, be::BITMAP_TABLE_OFFSET, rt);
            Ok(())
        },
    ),
    mutation(
        "refcount.overlap/guest-cluster-twice",
        Rule::RefcountOverlap,
        Error,
        "an L2 entry pointed at another guest cluster's data, whose refcount does \
         not count the second reference",
        |s, u| guest_write(s, u, 2),
        |t| {
            let n = t.layout.data_clusters.len();
            if n < 2 {
                return Err("fewer than two guest clusters");
            }
            let i = t.rng.gen_range(0..n);
            let j = (i + t.rng.gen_range(1..n)) % n;
            let (_, d0) = t.layout.data_clusters[i];
            let (g1, _) = t.layout.data_clusters[j];
            let at = t.l2_entry(g1)?;
            t.repoint(at, !mp::L2_OFFSET_MASK, d0)
        },
    ),
    mutation(
        "refcount.leak/header-refcount-2",
        Rule::RefcountLeak,
        Leak,
        "the header cluster's refcount raised to 2",
        |s, _| {
            refcounts_up_to_2(s);
            Ok(())
        },
        |t| {
            t.set_refcount(0, 2);
            Ok(())
        },
    ),
];
