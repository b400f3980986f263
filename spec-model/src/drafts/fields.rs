//! Field tables of the drafts' on-disk structures. Offsets and widths come
//! from the seed documents; where a seed leaves a field out, the choice made
//! here is stated on the constant and in `docs/revisions.md`.
//!
//! A field a draft lays out exactly as the final format (or, for
//! `qdb-2014`, as `header-fields-2014`) is that field's constant, not a
//! copy. The tables that remain look like the final ones but describe
//! other structures: the 2014 entries (granularity in bytes, size in
//! sectors, an "L1" table), the QDB header, and the RFC's 16-byte
//! extension data and 22-byte entry.

/// `header-fields-2014` (seed 004): two fields appended to the qcow2 main
/// header, a directory ("bitmap table" in the draft) and per-bitmap "L1"
/// tables of standard cluster descriptors.
pub mod header_fields_2014 {
    use crate::fields::{field_table, Field};

    field_table! {
        HEADER_FIELDS = [
            /// Number of bitmaps in the directory.
            NB_DIRTY_BITMAPS = Field::new("nb_dirty_bitmaps", 104, 4),
            /// Cluster-aligned file offset of the directory.
            DIRTY_BITMAPS_OFFSET = Field::new("dirty_bitmaps_offset", 108, 8),
        ]
    }
    /// One past the last draft header byte: a header_length below this has
    /// no draft fields (choice: the image then has no bitmaps).
    pub const HEADER_END: u64 = 116;
    /// Choice: writers store header_length 120 (116 rounded up to 8, so the
    /// header extensions that follow stay 8-aligned); bytes 116-119 are 0.
    pub const WRITTEN_HEADER_LENGTH: u32 = 120;

    field_table! {
        /// Directory entry ("Bitmap table entry" in the draft).
        ENTRY_FIELDS = [
            L1_TABLE_OFFSET = Field::new("l1_table_offset", 0, 8),
            L1_SIZE = Field::new("l1_size", 8, 4),
            /// Granularity in bytes (not a power-of-two exponent).
            GRANULARITY = Field::new("granularity", 12, 4),
            /// Size of the covered disk in 512-byte sectors.
            SIZE = Field::new("size", 16, 8),
            NAME_SIZE = Field::new("name_size", 24, 2),
        ]
    }
    /// The fixed part; the name follows directly, then zero padding to 8.
    pub const ENTRY_FIXED: usize = 26;
}

/// `qdb-2014` (seed 003): a file of its own. The seed quotes only part of
/// the directory entry (bytes 26-27 and 36-39); the rest is chosen.
pub mod qdb_2014 {
    use crate::fields::{field_table, Field};

    /// `"QDB\0"`.
    pub const MAGIC_VALUE: u64 = 0x5144_4200;
    pub const VERSION_VALUE: u64 = 1;

    field_table! {
        HEADER_FIELDS = [
            MAGIC = Field::new("magic", 0, 4),
            VERSION = Field::new("version", 4, 4),
            CLUSTER_BITS = Field::new("cluster_bits", 8, 4),
            NB_BITMAPS = Field::new("nb_bitmaps", 12, 4),
            BITMAPS_OFFSET = Field::new("bitmaps_offset", 16, 8),
            HEADER_LENGTH = Field::new("header_length", 24, 4),
        ]
    }
    /// The fields above end here; a smaller header_length is an error.
    pub const MIN_HEADER_LENGTH: u64 = 28;
    /// Choice: writers store 32 (28 rounded up to 8; bytes 28-31 zero), so
    /// the header extensions start 8-aligned.
    pub const WRITTEN_HEADER_LENGTH: u32 = 32;

    field_table! {
        ENTRY_FIELDS = [
            /// Choice (bytes 0-23 as in `header-fields-2014`, same author and
            /// month): the entry's L1 table offset.
            L1_TABLE_OFFSET = super::header_fields_2014::L1_TABLE_OFFSET,
            /// Choice: number of L1 entries.
            L1_SIZE = super::header_fields_2014::L1_SIZE,
            /// Choice: granularity in bytes.
            GRANULARITY = super::header_fields_2014::GRANULARITY,
            /// Choice: size of the covered disk in 512-byte sectors (a QDB file has
            /// no disk of its own, so each bitmap carries its size).
            SIZE = super::header_fields_2014::SIZE,
            /// Choice: flags; bit 0 = "enabled" (the seed lists `enabled` among the
            /// entry's fields), bits 1-15 reserved and zero.
            FLAGS = Field::new("flags", 24, 2),
            /// From the seed.
            NAME_SIZE = Field::new("name_size", 26, 2),
            /// Choice: bytes 28-35 reserved, zero.
            RESERVED = Field::new("reserved", 28, 8),
            /// From the seed.
            EXTRA_DATA_SIZE = Field::new("extra_data_size", 36, 4),
        ]
    }
    /// Fixed part; extra data follows, then the name (the seed's order),
    /// then padding to 8.
    pub const ENTRY_FIXED: usize = 40;
    pub const FLAG_ENABLED: u64 = 1;
    pub const FLAGS_KNOWN: u64 = 1;
}

/// `rfc-v5-2015` (seed 001): the bitmaps header extension and directory as
/// posted in "[PATCH v5 RFC]". Bytes 0-19 of an entry, `nb_bitmaps` and
/// the `in_use` and `auto` flags are as in the final format.
pub mod rfc_v5_2015 {
    use crate::fields::{bitmap_entry as entry, bitmaps_ext as bext, field_table, Field};

    field_table! {
        EXT_FIELDS = [
            NB_BITMAPS = bext::NB_BITMAPS,
            BITMAP_DIRECTORY_SIZE = Field::new("bitmap_directory_size", 4, 4),
            BITMAP_DIRECTORY_OFFSET = Field::new("bitmap_directory_offset", 8, 8),
        ]
    }
    pub const EXT_LENGTH: usize = 16;

    pub use entry::{FLAG_AUTO, FLAG_IN_USE};
    field_table! {
        ENTRY_FIELDS = [
            BITMAP_TABLE_OFFSET = entry::BITMAP_TABLE_OFFSET,
            BITMAP_TABLE_SIZE = entry::BITMAP_TABLE_SIZE,
            FLAGS = entry::FLAGS,
            TYPE = entry::TYPE,
            GRANULARITY_BITS = entry::GRANULARITY_BITS,
            NAME_SIZE = entry::NAME_SIZE,
            /// Two bytes as posted (the "2 bytes or 4 bytes?" question was
            /// answered only in a later revision).
            EXTRA_DATA_SIZE = Field::new("extra_data_size", 20, 2),
        ]
    }
    /// Fixed part; the name follows at byte 22, then extra data (the
    /// posted order), then padding to 8.
    pub const ENTRY_FIXED: usize = 22;
    pub const FLAGS_KNOWN: u64 = 3;
    /// Type 0 is dirty tracking in this draft (1 in the final format).
    pub const TYPE_DIRTY_TRACKING: u64 = 0;
    /// Valid name sizes are 1-1023 (an error beyond, not a QEMU limit).
    pub const MAX_NAME_SIZE: u64 = 1023;
}
