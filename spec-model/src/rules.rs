//! The rule catalogue: every check the model makes, with a stable ID, its
//! possible severities and the section of QEMU's `docs/interop/qcow2.rst`
//! that it enforces. The IDs of `spec/DIGEST.md` are a public contract.

use serde::Serialize;

/// How a broken rule affects the image's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The image does not conform.
    Error,
    /// The bitmaps extension must be ignored; the image still conforms.
    Inconsistent,
    /// Conforming, but beyond QEMU's documented limits: a reader may refuse cleanly.
    Limit,
    /// The spec is silent: behaviour is recorded, never judged.
    Unspecified,
    /// A cluster is allocated but not referenced; conforming.
    Leak,
    /// Per-bitmap or per-image state worth knowing; conforming.
    Note,
}

impl Severity {
    /// Lower-case name as used in JSON and the human report.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Inconsistent => "inconsistent",
            Severity::Limit => "limit",
            Severity::Unspecified => "unspecified",
            Severity::Leak => "leak",
            Severity::Note => "note",
        }
    }
}

/// What [`crate::finding::Findings`] needs of a rule catalogue: the final
/// spec's [`Rule`] here, the drafts' [`crate::drafts::DraftRule`] there.
pub trait Catalogued: Copy + Eq + Ord + std::fmt::Debug + std::fmt::Display + 'static {
    /// How many rules the catalogue has.
    const COUNT: usize;
    /// Where the summary of a capped rule ("N more findings ... not
    /// listed") is put: `false` at the offset of the rule's last listed
    /// finding, `true` at offset `u64::MAX`, after every other finding.
    const SUMMARY_LAST: bool = false;
    /// The rule's position in the catalogue (findings at one offset are
    /// listed in this order).
    fn index(self) -> usize;
    /// The stable rule ID.
    fn id(self) -> &'static str;
    /// The severities a finding of this rule can carry, the default first.
    fn severities(self) -> &'static [Severity];
}

/// Declares a rule catalogue: an enum `$name` with one variant per rule,
/// each with a stable ID, its severities (the first is the default), the
/// section of the document it enforces and its condition in one sentence;
/// `ALL`, the lookups, `from_id`, `Display` and `Serialize` (as the ID).
/// The final spec's catalogue is below; the drafts' is in
/// `drafts/rules.rs`.
macro_rules! rule_catalogue {
    (
        $(#[doc = $enum_doc:expr])*
        pub enum $name:ident;
        $(
            $(#[doc = $doc:expr])*
            $variant:ident = $id:literal [$($sev:ident),+] $section:literal $condition:literal;
        )*
    ) => {
        $crate::rules::catalogue_enum! {
            $(#[doc = $enum_doc])*
            pub enum $name;
            $( $(#[doc = $doc])* $variant = $id; )*
        }

        impl $name {
            /// The severities a finding of this rule can carry.
            pub fn severities(self) -> &'static [$crate::rules::Severity] {
                match self { $($name::$variant => &[$($crate::rules::Severity::$sev),+],)* }
            }

            /// The section of the document the rule enforces.
            pub fn section(self) -> &'static str {
                match self { $($name::$variant => $section,)* }
            }

            /// When the rule is broken, in one sentence.
            pub fn condition(self) -> &'static str {
                match self { $($name::$variant => $condition,)* }
            }
        }
    };
}
pub(crate) use rule_catalogue;

/// What every catalogue keyed by a stable ID has (rules, draft rules,
/// obligations): the enum with one variant per entry, `ALL` in catalogue
/// order, `id`, `from_id` over `ALL`, and `Display`/`Serialize` as the
/// ID. [`rule_catalogue`] and the obligations' macro add their columns.
macro_rules! catalogue_enum {
    (
        $(#[doc = $enum_doc:expr])*
        pub enum $name:ident;
        $( $(#[doc = $doc:expr])* $variant:ident = $id:literal; )*
    ) => {
        $(#[doc = $enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl $name {
            /// Every entry, in catalogue order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stable ID, e.g. `bitmaps.dir.name-unique`.
            pub fn id(self) -> &'static str {
                match self { $($name::$variant => $id,)* }
            }

            /// Looks an entry of the catalogue up by its ID.
            pub fn from_id(id: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|r| r.id() == id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.id())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.id())
            }
        }
    };
}
pub(crate) use catalogue_enum;

rule_catalogue! {
    /// A rule of the catalogue. Each variant's documentation cites the
    /// spec section of `docs/interop/qcow2.rst` it enforces.
    pub enum Rule;
    /// Spec "Header", bytes 0-3: the magic must be `QFI\xfb`.
    HeaderMagic = "header.magic" [Error] "Header" "magic is not QFI\\xfb";
    /// Spec "Header": the file must hold the whole header (72 bytes for v2, header_length for v3).
    HeaderTruncated = "header.truncated" [Error] "Header" "the file ends inside the header";
    /// Spec "Header", bytes 4-7: valid versions are 2 and 3.
    HeaderVersion = "header.version" [Error] "Header" "version is not 2 or 3";
    /// Spec "Header", bytes 20-23: cluster_bits must be at least 9; QEMU opens at most 21.
    HeaderClusterBits = "header.cluster-bits" [Error, Limit] "Header" "cluster_bits < 9 (error) or > 21 (limit)";
    /// Spec "Header", bytes 100-103: header_length of a v3 header is at least 104 and a multiple of 8.
    HeaderLength = "header.length" [Error] "Header" "v3 header_length < 104 or not a multiple of 8";
    /// Spec "Header", bytes 72-79: bits 5-63 of incompatible_features are reserved; a reader must refuse the image.
    HeaderIncompatibleBits = "header.incompatible-bits" [Error] "Header" "reserved incompatible feature bits 5-63 set";
    /// Spec "Header", bytes 96-99: refcount_order must not exceed 6.
    HeaderRefcountOrder = "header.refcount-order" [Error] "Header" "refcount_order > 6";
    /// Spec "Header": the L1 table, refcount table and snapshot table offsets must be cluster aligned.
    HeaderAlignment = "header.alignment" [Error] "Header" "l1/refcount/snapshot table offset not cluster aligned";
    /// Spec "Header", byte 104 and incompatible bit 3: a non-zero compression_type requires the compression-type bit, and the bit requires a non-zero type.
    HeaderCompressionType = "header.compression-type" [Error] "Header" "compression_type non-zero without incompatible bit 3, or zero with it";
    /// Spec "Header", bytes 88-95: autoclear bits 2-63 are reserved; the spec does not say how a reader treats them beyond clearing them on write.
    HeaderAutoclearUnknown = "header.autoclear-unknown" [Unspecified] "Header" "autoclear bits 2-63 set";
    /// Spec "Header padding": the padding that rounds the additional fields up to header_length (bytes 105-111) must be zero.
    HeaderPadding = "header.padding" [Error] "Header padding" "bytes 105-111 of a longer v3 header are not zero";
    /// Spec "Header", autoclear bit 1: raw external data may only be set together with the external data file incompatible bit (bit 2).
    HeaderRawExternal = "header.raw-external" [Error] "Header" "autoclear bit 1 set without incompatible bit 2";
    /// Spec "Full disk encryption header pointer": the extension is present if, and only if, crypt_method needs it (LUKS, 2).
    HeaderEncryptionExtension = "header.encryption-extension" [Error] "Full disk encryption header pointer" "crypt_method 2 without the encryption header extension, or the extension with another crypt_method";
    /// Spec "Header", bytes 32-35: crypt_method is 0 (none), 1 (AES) or 2 (LUKS).
    HeaderCryptMethod = "header.crypt-method" [Error] "Header" "crypt_method is not 0, 1 or 2";
    /// Spec "Header", bytes 8-19: the backing file name must lie inside the first cluster and be at most 1023 bytes long.
    HeaderBackingFile = "header.backing-file" [Error] "Header" "backing file name outside the first cluster or longer than 1023 bytes";
    /// Spec "Header", bytes 36-39: the active L1 table must have enough entries to map the whole virtual disk.
    HeaderL1Size = "header.l1-size" [Error] "Header" "l1_size too small for the virtual size";
    /// Spec "Header", incompatible bit 4: extended L2 entries need cluster_bits of at least 14.
    HeaderExtendedL2 = "header.extended-l2" [Error] "Header" "extended L2 entries with cluster_bits < 14";
    /// Spec "Header", incompatible bit 0: refcounts may be stale and must be rebuilt before use, so refcount findings are not reported.
    HeaderDirty = "header.dirty" [Note] "Header" "incompatible bit 0 (dirty) set: refcounts not compared";
    /// Spec "Header", incompatible bit 1: the image is marked corrupt and may only be opened read-only.
    HeaderCorrupt = "header.corrupt" [Note] "Header" "incompatible bit 1 (corrupt) set";
    /// Spec "Header extensions": every extension, with its padding, lies inside the first cluster and the file.
    ExtBounds = "ext.bounds" [Error] "Header extensions" "an extension (with padding) runs past the first cluster or the file";
    /// Spec "Header extensions": each known extension type appears at most once.
    ExtDuplicate = "ext.duplicate" [Error] "Header extensions" "a known extension type appears twice";
    /// Spec "Header extensions": data is padded to a multiple of 8 bytes, but
    /// the spec does not require the padding to be zero (and "String header
    /// extensions" says outright that it may not be), so non-zero padding of
    /// a non-string extension is recorded, never judged.
    ExtPadding = "ext.padding" [Unspecified] "Header extensions" "padding after the data of a non-string extension is not zero";
    /// Spec "Header", autoclear bit 0: a v3 image whose bit 0 is clear has an inconsistent bitmaps extension that must be ignored.
    BitmapsAutoclearMissing = "bitmaps.autoclear-missing" [Inconsistent] "Header (autoclear_features bit 0), Bitmaps extension" "v3, bitmaps extension present, autoclear bit 0 clear";
    /// Spec "Bitmaps extension": a v2 header has no autoclear field, so its bitmaps extension can never be consistent.
    BitmapsV2Image = "bitmaps.v2-image" [Inconsistent] "Bitmaps extension" "version 2 image carries a bitmaps extension";
    /// Spec "Header", autoclear bit 0: the bit means the bitmaps extension is present and consistent.
    BitmapsAutoclearWithoutExtension = "bitmaps.autoclear-without-extension" [Error] "Header (autoclear_features bit 0)" "autoclear bit 0 set, no bitmaps extension";
    /// Spec "Bitmaps extension": the extension data is 24 bytes.
    BitmapsExtLength = "bitmaps.ext.length" [Error, Unspecified] "Bitmaps extension" "extension length < 24 (error) or > 24 (unspecified)";
    /// Spec "Bitmaps extension", bytes 0-3: nb_bitmaps is at least 1 when the extension exists.
    BitmapsExtNbBitmapsZero = "bitmaps.ext.nb-bitmaps-zero" [Error] "Bitmaps extension" "nb_bitmaps = 0";
    /// Spec "Bitmaps extension", bytes 4-7: reserved, must be zero.
    BitmapsExtReserved = "bitmaps.ext.reserved" [Error] "Bitmaps extension" "bytes 4-7 non-zero";
    /// Spec "Bitmaps extension", bytes 16-23: bitmap_directory_offset must be cluster aligned.
    BitmapsExtDirectoryAlignment = "bitmaps.ext.directory-alignment" [Error] "Bitmaps extension" "directory offset not cluster aligned";
    /// Spec "Bitmaps extension", bytes 8-15: bitmap_directory_size is the cumulative size of the nb_bitmaps entries.
    BitmapsExtDirectorySize = "bitmaps.ext.directory-size" [Error] "Bitmaps extension" "the nb_bitmaps entries do not exactly fill bitmap_directory_size";
    /// Spec "Bitmaps extension": the directory is an area of the image file, so it must lie inside the file.
    BitmapsExtDirectoryBounds = "bitmaps.ext.directory-bounds" [Error] "Bitmaps extension, Bitmap directory" "the directory runs past the end of the file";
    /// Spec "Bitmaps extension": QEMU supports at most 65535 bitmaps and a directory of at most 1024 * 65535 bytes.
    BitmapsExtLimits = "bitmaps.ext.limits" [Limit] "Bitmaps extension" "nb_bitmaps > 65535 or directory size > 1024*65535";
    /// Spec "Bitmap directory": each entry (fixed part, extra data, name, padding) lies inside the directory.
    BitmapsDirEntryBounds = "bitmaps.dir.entry-bounds" [Error] "Bitmap directory" "an entry runs past the end of the directory";
    /// Spec "Bitmap directory", bytes 0-7: offset 0 would overlay the header (the 2016 empty-bitmap proposal was refused).
    BitmapsDirTableOffsetZero = "bitmaps.dir.table-offset-zero" [Error] "Bitmap directory" "bitmap_table_offset = 0";
    /// Spec "Bitmap directory", bytes 0-7: bitmap_table_offset must be cluster aligned.
    BitmapsDirTableAlignment = "bitmaps.dir.table-alignment" [Error] "Bitmap directory" "bitmap_table_offset not cluster aligned";
    /// Spec "Bitmap directory", bytes 8-11, and "Bitmaps": the bitmap covers the whole virtual disk, so the table needs ceil(nbytes / cluster_size) entries.
    BitmapsDirTableSize = "bitmaps.dir.table-size" [Error, Unspecified] "Bitmap directory, Bitmap data" "too few table entries (error, not for in_use); too many (unspecified, not for in_use: its metadata may be outdated), or zero-size disk (unspecified)";
    /// Spec "Bitmap directory", bytes 12-15: flag bits 3-31 are reserved and must be zero.
    BitmapsDirFlagsReserved = "bitmaps.dir.flags-reserved" [Error] "Bitmap directory" "flag bits 3-31 set";
    /// Spec "Bitmap directory", byte 16: type 1 (dirty tracking) is the only defined value.
    BitmapsDirType = "bitmaps.dir.type" [Error] "Bitmap directory" "type != 1";
    /// Spec "Bitmap directory", byte 17: granularity_bits 0-63 are valid; QEMU supports 9-31.
    BitmapsDirGranularity = "bitmaps.dir.granularity" [Error, Limit] "Bitmap directory" "granularity_bits > 63 (error) or outside 9-31 (limit)";
    /// Spec "Bitmap directory", bytes 18-19: name_size must be non-zero.
    BitmapsDirNameEmpty = "bitmaps.dir.name-empty" [Error] "Bitmap directory" "name_size = 0";
    /// Spec "Bitmap directory", bytes 18-19: QEMU does not support names longer than 1023 bytes.
    BitmapsDirNameLimit = "bitmaps.dir.name-limit" [Limit] "Bitmap directory" "name_size > 1023";
    /// Spec "Bitmap directory", name: unique among all bitmap names of the extension.
    BitmapsDirNameUnique = "bitmaps.dir.name-unique" [Error] "Bitmap directory" "two entries with byte-identical names";
    /// Spec "Bitmap directory", name: the spec says nothing of encoding or NUL bytes.
    BitmapsDirNameBytes = "bitmaps.dir.name-bytes" [Unspecified] "Bitmap directory" "name contains a NUL byte or is not valid UTF-8";
    /// Spec "Bitmap directory": all bytes of an entry's padding must be zero.
    BitmapsDirPadding = "bitmaps.dir.padding" [Error] "Bitmap directory" "entry padding not zero";
    /// Spec "Bitmap directory", extra_data_size and flag bit 2: unknown extra data makes the bitmap unusable unless extra_data_compatible is set.
    BitmapsDirExtraData = "bitmaps.dir.extra-data" [Note] "Bitmap directory" "extra_data_size > 0";
    /// Spec "Bitmap directory", flag bit 0: an in_use bitmap was not saved correctly and its contents must not be used.
    BitmapsDirInUse = "bitmaps.dir.in-use" [Note] "Bitmap directory, Dirty tracking bitmaps" "in_use set";
    /// Spec "Bitmap table": the table is a contiguous area of allocated clusters inside the file.
    BitmapsTableBounds = "bitmaps.table.bounds" [Error] "Bitmap table" "table past end of file or its clusters not allocated";
    /// Spec "Bitmap table": entry bits 1-8 and 56-63 are reserved and must be zero.
    BitmapsTableReservedBits = "bitmaps.table.reserved-bits" [Error] "Bitmap table" "entry bits 1-8 or 56-63 set";
    /// Spec "Bitmap table": bit 0 must be zero when bits 9-55 hold an offset.
    BitmapsTableAllOnesWithOffset = "bitmaps.table.all-ones-with-offset" [Error] "Bitmap table" "bit 0 set while bits 9-55 are non-zero";
    /// Spec "Bitmap table": the data cluster offset must be cluster aligned.
    BitmapsTableEntryAlignment = "bitmaps.table.entry-alignment" [Error] "Bitmap table" "data offset not cluster aligned";
    /// Spec "Bitmap data": data clusters lie inside the file and are allocated.
    BitmapsDataBounds = "bitmaps.data.bounds" [Error] "Bitmap data" "data cluster past end of file or unallocated";
    /// Spec "Bitmap data": unused tail bits of the last data cluster must be zero.
    BitmapsDataTailBits = "bitmaps.data.tail-bits" [Error] "Bitmap data" "a bit past nbits in the last data cluster is set";
    /// Spec "L1 table": the L1 table lies inside the file.
    L1Bounds = "l1.bounds" [Error] "Cluster mapping" "an L1 table runs past the end of the file";
    /// Spec "Cluster mapping", L1 entry: bits 1-8 and 56-62 are reserved and must be zero.
    L1ReservedBits = "l1.reserved-bits" [Error] "Cluster mapping" "L1 entry bits 1-8 or 56-62 set";
    /// Spec "Cluster mapping", L1 entry: the L2 table offset must be cluster aligned.
    L1Alignment = "l1.alignment" [Error] "Cluster mapping" "L2 table offset not cluster aligned";
    /// Spec "Cluster mapping": an L2 table lies inside the file.
    L2Bounds = "l2.bounds" [Error] "Cluster mapping" "an L2 table runs past the end of the file";
    /// Spec "Cluster mapping", standard cluster descriptor: bits 1-8 and 56-61 are reserved (bit 0 too in v2 images).
    L2ReservedBits = "l2.reserved-bits" [Error] "Cluster mapping" "reserved bits of an L2 entry set";
    /// Spec "Cluster mapping", standard cluster descriptor: the host cluster offset must be cluster aligned.
    L2Alignment = "l2.alignment" [Error] "Cluster mapping" "data cluster offset not cluster aligned";
    /// Spec "Cluster mapping": a data cluster (or compressed data) starts inside the file.
    L2DataBounds = "l2.data-bounds" [Error] "Cluster mapping" "guest data cluster past the end of the file";
    /// Spec "Extended L2 Entries": a subcluster is not both allocated and zero; compressed entries have a zero bitmap; allocated subclusters need an offset.
    L2Subclusters = "l2.subclusters" [Error] "Extended L2 Entries" "invalid subcluster allocation bitmap";
    /// Spec "Host cluster management": refcount blocks are cluster aligned and refcount table entry bits 0-8 are reserved.
    RefcountBlockAlignment = "refcount.block-alignment" [Error] "Host cluster management" "refcount block offset not cluster aligned";
    /// Spec "Host cluster management": the refcount table and blocks lie inside the file.
    RefcountBounds = "refcount.bounds" [Error] "Host cluster management" "refcount table or block past the end of the file";
    /// Spec "Host cluster management": every cluster in use has a non-zero refcount.
    RefcountUnallocated = "refcount.unallocated" [Error] "Host cluster management" "a cluster used by metadata or data has refcount 0";
    /// Spec "Host cluster management": a cluster belongs to one structure, and its refcount counts every reference.
    RefcountOverlap = "refcount.overlap" [Error] "Host cluster management" "two structures share a cluster, or a refcount is lower than the number of references";
    /// Spec "Host cluster management": a refcount above the number of references wastes space but harms nothing.
    RefcountLeak = "refcount.leak" [Leak] "Host cluster management" "refcount higher than references";
    /// Spec "Snapshots": the snapshot table and each snapshot's L1 table lie inside the file, and L1 offsets are cluster aligned.
    SnapshotBounds = "snapshot.bounds" [Error] "Snapshots" "snapshot table or L1 table outside the file or misaligned";
    /// Spec "Snapshots": version 3 images include snapshot extra data at least up to byte 55 (16 bytes).
    SnapshotExtraData = "snapshot.extra-data" [Error] "Snapshots" "v3 snapshot with less than 16 bytes of extra data";
}

impl Catalogued for Rule {
    const COUNT: usize = Rule::ALL.len();
    fn index(self) -> usize {
        self as usize
    }
    fn id(self) -> &'static str {
        Rule::id(self)
    }
    fn severities(self) -> &'static [Severity] {
        Rule::severities(self)
    }
}

/// One catalogue row, for `qcow2-conform rules --json`.
#[derive(Debug, Serialize)]
pub struct RuleInfo {
    pub id: &'static str,
    pub severities: Vec<&'static str>,
    pub section: &'static str,
    pub condition: &'static str,
}

/// The whole catalogue in a serialisable form.
pub fn catalogue() -> Vec<RuleInfo> {
    Rule::ALL
        .iter()
        .map(|r| RuleInfo {
            id: r.id(),
            severities: r.severities().iter().map(|s| s.as_str()).collect(),
            section: r.section(),
            condition: r.condition(),
        })
        .collect()
}
