//! Revisions of the bitmaps format: the shipped one and the historical
//! drafts of `shared/seeds/`. Images laid out per a draft are read by
//! [`crate::drafts::dump_draft`]; see `docs/revisions.md` for the layout
//! differences and for what a final-spec reader must make of each.

use serde::{Deserialize, Serialize};

/// A revision of the format that images may be read under.
///
/// The serde names are the same strings as [`Revision::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Revision {
    /// The format QEMU ships (`docs/interop/qcow2.rst`).
    #[serde(rename = "final")]
    Final,
    /// The first qcow2 draft (seed 004, 2014): two new main-header fields
    /// (`nb_dirty_bitmaps` at 104, `dirty_bitmaps_offset` at 108), a
    /// directory of entries with granularity in bytes and size in sectors,
    /// and a one-level "L1" table of standard cluster descriptors.
    #[serde(rename = "header-fields-2014")]
    HeaderFields2014,
    /// The separate "QDB" bitmap file (seed 003, 2014-11): magic `QDB\0`,
    /// its own header, header extensions and directory.
    #[serde(rename = "qdb-2014")]
    Qdb2014,
    /// "[PATCH v5 RFC]" (seed 001, 2015-12): the bitmaps header extension
    /// (type 0x23852875) with 16 bytes of data, autoclear bit 0, a
    /// directory whose entries have a 22-byte fixed part, type 0 = dirty
    /// tracking, and the final bitmap table.
    #[serde(rename = "rfc-v5-2015")]
    RfcV5_2015,
    /// The refused 2016 proposal (seed 002): the final format, except that
    /// a bitmap with no set bit may have `bitmap_table_offset = 0` and
    /// `bitmap_table_size = 0`.
    #[serde(rename = "empty-table-2016")]
    EmptyTable2016,
}

impl Revision {
    pub const ALL: &'static [Revision] = &[
        Revision::Final,
        Revision::HeaderFields2014,
        Revision::Qdb2014,
        Revision::RfcV5_2015,
        Revision::EmptyTable2016,
    ];

    /// The drafts (every revision but [`Revision::Final`]).
    pub const DRAFTS: &'static [Revision] = &[
        Revision::HeaderFields2014,
        Revision::Qdb2014,
        Revision::RfcV5_2015,
        Revision::EmptyTable2016,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::Final => "final",
            Revision::HeaderFields2014 => "header-fields-2014",
            Revision::Qdb2014 => "qdb-2014",
            Revision::RfcV5_2015 => "rfc-v5-2015",
            Revision::EmptyTable2016 => "empty-table-2016",
        }
    }

    /// True for the drafts that store bitmaps inside a qcow2 image (all
    /// but `qdb-2014`, which is a file of its own).
    pub fn is_qcow2(self) -> bool {
        self != Revision::Qdb2014
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A revision name that is none of [`Revision::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown revision {name:?}; known: {}", known_names())]
pub struct UnknownRevision {
    pub name: String,
}

fn known_names() -> String {
    let known: Vec<_> = Revision::ALL.iter().map(|r| r.as_str()).collect();
    known.join(", ")
}

impl std::str::FromStr for Revision {
    type Err = UnknownRevision;
    fn from_str(s: &str) -> Result<Self, UnknownRevision> {
        Revision::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRevision {
                name: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Revision;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for &r in Revision::ALL {
            assert_eq!(r.as_str().parse::<Revision>(), Ok(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            let back: Revision = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
        assert!("draft".parse::<Revision>().is_err());
        // The message is the one the CLI has always printed.
        assert_eq!(
            "draft".parse::<Revision>().unwrap_err().to_string(),
            "unknown revision \"draft\"; known: final, header-fields-2014, qdb-2014, rfc-v5-2015, empty-table-2016"
        );
    }
}
