//! Mutations that break the snapshot table (spec "Snapshots"; rules
//! `snapshot.*`).

use super::prep::p_snapshot;
use super::{mutation, Mutation};
use rand::Rng;
use spec_model::fields::{header as hf, snapshot as sf};
use spec_model::Rule;
use spec_model::Severity::Error;

/// This section of the catalogue, in the catalogue's order.
pub(super) static MUTATIONS: &[Mutation] = &[
    mutation(
        "snapshot.bounds/table-past-eof",
        Rule::SnapshotBounds,
        Error,
        "snapshots_offset set to a cluster at or past the end of the file",
        p_snapshot,
        |t| {
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            t.put(0, hf::SNAPSHOTS_OFFSET, off);
            Ok(())
        },
    ),
    mutation(
        "snapshot.extra-data/short",
        Rule::SnapshotExtraData,
        Error,
        "the only snapshot of a v3 image claims less than 16 bytes of extra data \
         (its id and name are then read from the extra data's bytes)",
        p_snapshot,
        |t| {
            if t.spec.snapshots.is_empty() {
                return Err("no snapshot");
            }
            let at = t.layout.snapshot_table_offset;
            let v = t.rng.gen_range(0..16);
            t.put(at, sf::EXTRA_DATA_SIZE, v);
            Ok(())
        },
    ),
];
