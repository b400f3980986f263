//! Mutations that break the snapshot table (spec "Snapshots"; rules
//! `snapshot.*`).

use super::prep::p_snapshot;
use super::{mutation, Mutation};
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
        |t| t.put_past_eof(0, hf::SNAPSHOTS_OFFSET),
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
            t.put_random(at, sf::EXTRA_DATA_SIZE, 0..16)
        },
    ),
];
