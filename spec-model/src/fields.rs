//! On-disk field tables. Each structure is described once, as a list of
//! big-endian fields at fixed offsets; the parser, `dump` and the generator
//! all read and write through these tables.

/// One fixed-size, big-endian unsigned field of an on-disk structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The spec's own name for the field.
    pub name: &'static str,
    /// Byte offset from the start of the structure.
    pub offset: usize,
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: usize,
}

impl Field {
    pub const fn new(name: &'static str, offset: usize, size: usize) -> Field {
        Field { name, offset, size }
    }

    /// One past the field's last byte.
    pub const fn end(&self) -> usize {
        self.offset + self.size
    }

    /// Reads the field from `buf`; bytes missing from `buf` read as zero.
    pub fn get(&self, buf: &[u8]) -> u64 {
        let mut v = 0u64;
        for i in 0..self.size {
            v = (v << 8) | u64::from(buf.get(self.offset + i).copied().unwrap_or(0));
        }
        v
    }

    /// Writes `value` (truncated to the field's width) into `buf`, which
    /// must be long enough.
    pub fn put(&self, buf: &mut [u8], value: u64) {
        for i in 0..self.size {
            let shift = 8 * (self.size - 1 - i);
            buf[self.offset + i] = (value >> shift) as u8;
        }
    }
}

/// Declares the fields of one on-disk structure, each once: a constant per
/// field (with its documentation) and `$table`, every field in order, the
/// list that parse, dump and the generator walk. A field another table
/// defines joins this one as `NAME = path::NAME`.
macro_rules! field_table {
    (
        $(#[doc = $table_doc:expr])*
        $table:ident = [
            $( $(#[doc = $doc:expr])* $name:ident = $value:expr ),+ $(,)?
        ]
    ) => {
        $( $(#[doc = $doc])* pub const $name: $crate::fields::Field = $value; )+
        $(#[doc = $table_doc])*
        pub const $table: &[$crate::fields::Field] = &[$($name),+];
    };
}
pub(crate) use field_table;

/// The image header (spec "Header").
pub mod header {
    use super::Field;
    field_table! {
        /// Fields every version has.
        V2 = [
            MAGIC = Field::new("magic", 0, 4),
            VERSION = Field::new("version", 4, 4),
            BACKING_FILE_OFFSET = Field::new("backing_file_offset", 8, 8),
            BACKING_FILE_SIZE = Field::new("backing_file_size", 16, 4),
            CLUSTER_BITS = Field::new("cluster_bits", 20, 4),
            SIZE = Field::new("size", 24, 8),
            CRYPT_METHOD = Field::new("crypt_method", 32, 4),
            L1_SIZE = Field::new("l1_size", 36, 4),
            L1_TABLE_OFFSET = Field::new("l1_table_offset", 40, 8),
            REFCOUNT_TABLE_OFFSET = Field::new("refcount_table_offset", 48, 8),
            REFCOUNT_TABLE_CLUSTERS = Field::new("refcount_table_clusters", 56, 4),
            NB_SNAPSHOTS = Field::new("nb_snapshots", 60, 4),
            SNAPSHOTS_OFFSET = Field::new("snapshots_offset", 64, 8),
        ]
    }
    field_table! {
        /// Fields added by version 3 (bytes 72-103).
        V3 = [
            INCOMPATIBLE_FEATURES = Field::new("incompatible_features", 72, 8),
            COMPATIBLE_FEATURES = Field::new("compatible_features", 80, 8),
            AUTOCLEAR_FEATURES = Field::new("autoclear_features", 88, 8),
            REFCOUNT_ORDER = Field::new("refcount_order", 96, 4),
            HEADER_LENGTH = Field::new("header_length", 100, 4),
        ]
    }
    pub const COMPRESSION_TYPE: Field = Field::new("compression_type", 104, 1);

    /// Length of a version 2 header, and where its extensions start.
    pub const V2_LENGTH: usize = 72;
    /// Minimum length of a version 3 header.
    pub const V3_MIN_LENGTH: usize = 104;

    /// incompatible_features bits.
    pub const INCOMPAT_DIRTY: u64 = 1 << 0;
    pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
    pub const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
    pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
    pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
    pub const INCOMPAT_KNOWN: u64 = 0x1f;
    /// autoclear_features bits.
    pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
    pub const AUTOCLEAR_RAW_EXTERNAL: u64 = 1 << 1;
    pub const AUTOCLEAR_KNOWN: u64 = 0x3;
}

/// A header extension's 8-byte prefix (spec "Header extensions").
pub mod extension {
    use super::Field;
    field_table! {
        FIELDS = [
            TYPE = Field::new("type", 0, 4),
            LENGTH = Field::new("length", 4, 4),
        ]
    }
    pub const PREFIX_LENGTH: usize = 8;

    pub const END: u32 = 0;
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    pub const FEATURE_NAME_TABLE: u32 = 0x6803_f857;
    pub const BITMAPS: u32 = 0x2385_2875;
    pub const ENCRYPTION: u32 = 0x0537_be77;
    pub const EXTERNAL_DATA_FILE: u32 = 0x4441_5441;

    /// Human name of an extension type.
    pub fn type_name(t: u32) -> &'static str {
        match t {
            END => "end of extensions",
            BACKING_FORMAT => "backing file format name",
            FEATURE_NAME_TABLE => "feature name table",
            BITMAPS => "bitmaps",
            ENCRYPTION => "full disk encryption header pointer",
            EXTERNAL_DATA_FILE => "external data file name",
            _ => "unknown",
        }
    }
}

/// Data of the full disk encryption header pointer extension.
pub mod encryption {
    use super::Field;
    field_table! {
        FIELDS = [
            OFFSET = Field::new("offset", 0, 8),
            LENGTH = Field::new("length", 8, 8),
        ]
    }
}

/// Data of the bitmaps extension (spec "Bitmaps extension").
pub mod bitmaps_ext {
    use super::Field;
    field_table! {
        FIELDS = [
            NB_BITMAPS = Field::new("nb_bitmaps", 0, 4),
            RESERVED = Field::new("reserved32", 4, 4),
            BITMAP_DIRECTORY_SIZE = Field::new("bitmap_directory_size", 8, 8),
            BITMAP_DIRECTORY_OFFSET = Field::new("bitmap_directory_offset", 16, 8),
        ]
    }
    pub const LENGTH: usize = 24;
    /// QEMU's limits.
    pub const MAX_BITMAPS: u64 = 65535;
    pub const MAX_DIRECTORY_SIZE: u64 = 1024 * 65535;
}

/// A bitmap directory entry (spec "Bitmap directory").
pub mod bitmap_entry {
    use super::Field;
    field_table! {
        FIELDS = [
            BITMAP_TABLE_OFFSET = Field::new("bitmap_table_offset", 0, 8),
            BITMAP_TABLE_SIZE = Field::new("bitmap_table_size", 8, 4),
            FLAGS = Field::new("flags", 12, 4),
            TYPE = Field::new("type", 16, 1),
            GRANULARITY_BITS = Field::new("granularity_bits", 17, 1),
            NAME_SIZE = Field::new("name_size", 18, 2),
            EXTRA_DATA_SIZE = Field::new("extra_data_size", 20, 4),
        ]
    }
    /// Size of the fixed part, before extra data and name.
    pub const FIXED_LENGTH: usize = 24;

    pub const FLAG_IN_USE: u64 = 1 << 0;
    pub const FLAG_AUTO: u64 = 1 << 1;
    pub const FLAG_EXTRA_DATA_COMPATIBLE: u64 = 1 << 2;
    pub const FLAGS_KNOWN: u64 = 0x7;
    pub const TYPE_DIRTY_TRACKING: u64 = 1;
    pub const MAX_QEMU_NAME_SIZE: u64 = 1023;
    pub const QEMU_MIN_GRANULARITY_BITS: u64 = 9;
    pub const QEMU_MAX_GRANULARITY_BITS: u64 = 31;

    /// Total entry size (fixed part, extra data, name, zero padding to 8).
    pub const fn entry_length(extra_data_size: u64, name_size: u64) -> u64 {
        (FIXED_LENGTH as u64 + extra_data_size + name_size).div_ceil(8) * 8
    }
}

/// A bitmap table entry (spec "Bitmap table").
pub mod bitmap_table_entry {
    /// Bit 0: with no offset, the cluster reads as all ones.
    pub const ALL_ONES: u64 = 1;
    /// Bits 1-8 and 56-63.
    pub const RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
    /// Bits 9-55: host cluster offset.
    pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
}

/// L1 and L2 entries (spec "Cluster mapping").
pub mod mapping {
    /// L1 entry bits 9-55: L2 table offset.
    pub const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
    /// L1 entry bits 1-8 and 56-62.
    pub const L1_RESERVED_MASK: u64 = 0x7f00_0000_0000_01fe;
    /// L1/L2 entry bit 63: refcount is exactly one.
    pub const COPIED: u64 = 1 << 63;
    /// L2 entry bit 62: compressed cluster.
    pub const COMPRESSED: u64 = 1 << 62;
    /// Standard cluster descriptor bit 0: reads as zeros (v3).
    pub const ZERO: u64 = 1;
    /// Standard cluster descriptor bits 9-55.
    pub const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
    /// Standard cluster descriptor bits 1-8 and 56-61.
    pub const L2_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
}

/// A snapshot table entry (spec "Snapshots").
pub mod snapshot {
    use super::Field;
    field_table! {
        FIELDS = [
            L1_TABLE_OFFSET = Field::new("l1_table_offset", 0, 8),
            L1_SIZE = Field::new("l1_size", 8, 4),
            ID_STR_SIZE = Field::new("id_str_size", 12, 2),
            NAME_SIZE = Field::new("name_size", 14, 2),
            DATE_SEC = Field::new("date_sec", 16, 4),
            DATE_NSEC = Field::new("date_nsec", 20, 4),
            VM_CLOCK_NSEC = Field::new("vm_clock_nsec", 24, 8),
            VM_STATE_SIZE = Field::new("vm_state_size", 32, 4),
            EXTRA_DATA_SIZE = Field::new("extra_data_size", 36, 4),
        ]
    }
    pub const FIXED_LENGTH: usize = 40;
    field_table! {
        /// Extra data fields, relative to the start of the extra data.
        EXTRA_FIELDS = [
            VM_STATE_SIZE_LARGE = Field::new("vm_state_size_large", 0, 8),
            DISK_SIZE = Field::new("disk_size", 8, 8),
            ICOUNT = Field::new("icount", 16, 8),
        ]
    }
    /// Extra data a version 3 image must carry.
    pub const V3_MIN_EXTRA: u64 = 16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_put_round_trip_and_short_buffers_read_zero() {
        let mut buf = vec![0u8; 8];
        let f = Field::new("x", 2, 4);
        f.put(&mut buf, 0xdead_beef);
        assert_eq!(buf, [0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0]);
        assert_eq!(f.get(&buf), 0xdead_beef);
        assert_eq!(Field::new("y", 6, 4).get(&buf), 0);
    }
}
