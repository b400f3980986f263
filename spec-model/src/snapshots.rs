//! The snapshot table (spec "Snapshots") and each snapshot's L1 table.

use crate::clusters::Owner;
use crate::context::Ctx;
use crate::fields::snapshot as snap;
use crate::io::CheckError;
use crate::mapping::MappingStats;
use crate::rules::Rule;
use serde::Serialize;
use std::io::{Read, Seek};

/// Snapshots read at most (QEMU's own limit is 65536): a sparse file can
/// hold billions of zero entries, each a read.
const MAX_SNAPSHOTS: u32 = 1 << 16;

/// One snapshot table entry.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub offset: u64,
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub extra_data_size: u32,
    /// Virtual disk size of the snapshot, from the extra data when present.
    pub disk_size: Option<u64>,
    /// The 40 fixed bytes, read through the field table by `dump`.
    #[serde(skip)]
    pub raw_fixed: [u8; snap::FIXED_LENGTH],
}

impl<R: Read + Seek> Ctx<R> {
    /// Reads the snapshot table and walks each snapshot's L1 table.
    pub fn parse_snapshots(
        &mut self,
        stats: &mut MappingStats,
    ) -> Result<Vec<Snapshot>, CheckError> {
        let mut out = Vec::new();
        if self.h.nb_snapshots == 0 {
            return Ok(out);
        }
        let start = self.h.snapshots_offset;
        let mut pos = start;
        // The variable part of each entry, read into one reused buffer.
        let mut rest = Vec::new();
        for n in 0..self.h.nb_snapshots {
            if n >= MAX_SNAPSHOTS && self.img.contains(pos, snap::FIXED_LENGTH as u64) {
                return Err(CheckError::TooMany {
                    structure: "snapshot table",
                    offset: start,
                    limit: u64::from(MAX_SNAPSHOTS),
                });
            }
            let mut fixed = [0u8; snap::FIXED_LENGTH];
            if !self.img.contains(pos, snap::FIXED_LENGTH as u64) {
                self.findings.add_with(
                    Rule::SnapshotBounds,
                    pos,
                    msg!(
                        "snapshot {n} of {} at {pos:#x} lies past the end of the file",
                        self.h.nb_snapshots
                    ),
                );
                break;
            }
            self.img.read_into(pos, &mut fixed)?;
            let extra_size = snap::EXTRA_DATA_SIZE.get(&fixed);
            let id_size = snap::ID_STR_SIZE.get(&fixed);
            let name_size = snap::NAME_SIZE.get(&fixed);
            let var = extra_size + id_size + name_size;
            let entry_len = (snap::FIXED_LENGTH as u64 + var).div_ceil(8) * 8;
            if !self.img.contains(pos + snap::FIXED_LENGTH as u64, var) {
                self.findings.add_with(
                    Rule::SnapshotBounds,
                    pos,
                    msg!("snapshot {n} at {pos:#x} ({entry_len} bytes) runs past the end of the file"),
                );
                break;
            }
            // Only the head of the extra data is used (extra_data_size can
            // claim 4 GiB): read it, then the ID and name after it.
            let head = extra_size.min(16);
            let var_at = pos + snap::FIXED_LENGTH as u64;
            rest.resize((head + id_size + name_size) as usize, 0);
            self.img.read_into(var_at, &mut rest[..head as usize])?;
            self.img
                .read_into(var_at + extra_size, &mut rest[head as usize..])?;
            let extra = &rest[..head as usize];
            let id = &rest[head as usize..(head + id_size) as usize];
            let name = &rest[(head + id_size) as usize..];
            if self.h.version == 3 && extra_size < snap::V3_MIN_EXTRA {
                self.findings.add_with(
                    Rule::SnapshotExtraData,
                    pos + snap::EXTRA_DATA_SIZE.offset as u64,
                    msg!("snapshot {n}: extra_data_size is {extra_size}, a v3 image needs at least 16"),
                );
            }
            let snap = Snapshot {
                offset: pos,
                l1_table_offset: snap::L1_TABLE_OFFSET.get(&fixed),
                l1_size: snap::L1_SIZE.get(&fixed) as u32,
                id: String::from_utf8_lossy(id).into_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
                extra_data_size: extra_size as u32,
                disk_size: (extra_size >= 16).then(|| snap::DISK_SIZE.get(extra)),
                raw_fixed: fixed,
            };
            if !self.h.aligned(snap.l1_table_offset) {
                self.findings.add_with(
                    Rule::SnapshotBounds,
                    pos,
                    msg!(
                        "snapshot {n}: l1_table_offset {:#x} is not cluster aligned",
                        snap.l1_table_offset
                    ),
                );
            } else {
                self.walk_l1(
                    snap.l1_table_offset,
                    snap.l1_size,
                    Owner::SnapshotL1Table,
                    Rule::SnapshotBounds,
                    stats,
                )?;
            }
            // Snapshots are kept: a sparse file can hold millions of them.
            let kept = std::mem::size_of::<Snapshot>() as u64 + id_size + name_size;
            self.retain("snapshot table entry", pos, kept)?;
            out.push(snap);
            pos += entry_len;
        }
        self.map.claim(
            &mut self.findings,
            start,
            pos - start,
            Owner::SnapshotTable,
            start,
        );
        Ok(out)
    }
}
