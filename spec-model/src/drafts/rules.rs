//! The draft rule catalogue: every rule the draft readers check, with a
//! stable ID, its severities and the section of the seed document (in
//! `shared/seeds/`, see its README) it comes from. Findings are reported as
//! `draft.<revision>.<ID>`.
//!
//! IDs follow the final catalogue's naming (`header.`, `ext.`,
//! `bitmaps.ext.`, `bitmaps.dir.`, `bitmaps.table.`, `bitmaps.data.`); a
//! draft rule that checks what a final rule checks has the final rule's ID,
//! though its condition may differ with the draft's layout (the drafts have
//! their own catalogue because each rule cites the draft, not
//! `qcow2.rst`). Choices the seeds leave open are in `docs/revisions.md`.
//!
//! The rules are in ID order: findings at one offset are listed in
//! catalogue order, so a dump lists them by offset, then ID.

use crate::rules::{rule_catalogue, Catalogued, Severity};

rule_catalogue! {
    /// A rule of a historical draft. Each variant's documentation cites the
    /// seed documents and sections it comes from: seed 004
    /// (`header-fields-2014`), 003 (`qdb-2014`), 001 (`rfc-v5-2015`), 002
    /// (`empty-table-2016`, the final format plus one change).
    pub enum DraftRule;
    /// seeds/001_24d3914d0b32ce22.txt, 'Header' (autoclear_features bit 0:
    /// "If it is not set, but there is a Bitmaps extension, its data should
    /// be considered as inconsistent"); the same in empty-table-2016.
    AutoclearMissing = "bitmaps.autoclear-missing" [Inconsistent] "seeds/001 'Header' (autoclear bit 0); seeds/002 as final" "v3, bitmaps extension present, autoclear bit 0 clear";
    /// seeds/001_24d3914d0b32ce22.txt, 'Header' (autoclear_features bit 0:
    /// "If it is set, but there is no Bitmaps extension, this should be
    /// considered as an error"); the same in empty-table-2016.
    AutoclearWithoutExtension = "bitmaps.autoclear-without-extension" [Error] "seeds/001 'Header' (autoclear bit 0); seeds/002 as final" "v3, autoclear bit 0 set, no bitmaps extension";
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Cluster mapping' (a data cluster
    /// is a standard cluster descriptor's host cluster); seeds/003 the
    /// same; seeds/001_24d3914d0b32ce22.txt, 'Bitmap Table' (bits 9-55,
    /// host cluster offset); seeds/002 as final. Every data cluster lies
    /// whole inside the file.
    DataBounds = "bitmaps.data.bounds" [Error] "seeds/004 'Cluster mapping'; seeds/001 'Bitmap Table'" "a data cluster runs past the end of the file";
    /// seeds/001_24d3914d0b32ce22.txt (the review, seeds/000: "These bits
    /// must be zero") and seeds/002 as final: an error. The 2014 drafts
    /// (seeds/004, 003) do not say: unspecified.
    DataTailBits = "bitmaps.data.tail-bits" [Error, Unspecified] "seeds/001 'Bitmap Data'; seeds/004 'Dirty bitmaps' (silent)" "a bit past the bitmap's end is set in its last data cluster";
    /// seeds/002_5582814d73963f5f.txt, 'Structure of a bitmap directory
    /// entry' (the refused proposal: "Zero value means that bitmap table is
    /// not allocated and the bitmap should be considered as empty").
    DirEmptyTable = "bitmaps.dir.empty-table" [Note] "seeds/002 'Structure of a bitmap directory entry'" "bitmap_table_offset 0 and bitmap_table_size 0: no table, every bit zero";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (the entries lie
    /// in the directory of bitmap_directory_size bytes); seeds/002 as
    /// final. The 2014 drafts (seeds/004 'Bitmap table', seeds/003) store
    /// no directory size: an entry runs past the end of the file.
    DirEntryBounds = "bitmaps.dir.entry-bounds" [Error] "seeds/001 'Bitmap Directory'; seeds/004 'Bitmap table'" "an entry runs past the end of the directory (or, with no stored size, of the file)";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' ("Type-specific
    /// extra data"): kept and ignored; seeds/002 as final (unusable without
    /// extra_data_compatible).
    DirExtraData = "bitmaps.dir.extra-data" [Note] "seeds/001 'Bitmap Directory'; seeds/002 as final" "extra_data_size > 0";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (flags: "Bits 2 -
    /// 31 are reserved and must be 0"); seeds/002 as final (bits 3-31);
    /// seeds/003_be34a5d26c202721.txt, the entry's `enabled` field (chosen:
    /// bit 0 of a 16-bit field, bits 1-15 reserved).
    DirFlagsReserved = "bitmaps.dir.flags-reserved" [Error] "seeds/001 'Bitmap Directory'; seeds/003 entry (chosen)" "reserved flag bits set";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory'
    /// (granularity_bits: "Valid values are: 0 - 63", QEMU supports up to
    /// 31): error above 63, limit outside 9-31; seeds/002 as final.
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Bitmap table' ("Bitmap granularity
    /// in bytes"), seeds/003 the same: 0 is an error, not a power of two
    /// unspecified.
    DirGranularity = "bitmaps.dir.granularity" [Error, Limit, Unspecified] "seeds/001 'Bitmap Directory'; seeds/004 'Bitmap table'" "granularity_bits > 63 (error) or outside 9-31 (limit); granularity in bytes 0 (error) or not a power of two (unspecified)";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (in_use: "The
    /// bitmap was not saved correctly and may be inconsistent"); seeds/002
    /// as final.
    DirInUse = "bitmaps.dir.in-use" [Note] "seeds/001 'Bitmap Directory'" "in_use set";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (name_size
    /// "Valid values: 1 - 1023") and seeds/002 as final: an error. The
    /// 2014 drafts (seeds/004 'Bitmap table', seeds/003) do not say:
    /// unspecified.
    DirNameEmpty = "bitmaps.dir.name-empty" [Error, Unspecified] "seeds/001 'Bitmap Directory'; seeds/004 'Bitmap table' (silent)" "name_size = 0";
    /// seeds/002_5582814d73963f5f.txt, the final format: QEMU supports
    /// names of at most 1023 bytes.
    DirNameLimit = "bitmaps.dir.name-limit" [Limit] "seeds/002 as final 'Bitmap directory'" "name_size > 1023";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (name_size
    /// "Valid values: 1 - 1023": beyond is an error, not a QEMU limit).
    DirNameSize = "bitmaps.dir.name-size" [Error] "seeds/001 'Bitmap Directory'" "name_size > 1023";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (the name "Must
    /// be unique among all bitmap names within the Bitmaps extension") and
    /// seeds/002 as final: an error. The 2014 drafts do not say:
    /// unspecified.
    DirNameUnique = "bitmaps.dir.name-unique" [Error, Unspecified] "seeds/001 'Bitmap Directory'; seeds/004 'Bitmap table' (silent)" "two entries with byte-identical names";
    /// seeds/002_5582814d73963f5f.txt, the final format: padding must be
    /// zero (error). seeds/001_24d3914d0b32ce22.txt 'Bitmap Directory',
    /// seeds/004 'Bitmap table' and seeds/003 only say "Padding to round
    /// up": unspecified.
    DirPadding = "bitmaps.dir.padding" [Error, Unspecified] "seeds/002 as final; seeds/001 'Bitmap Directory', seeds/004 'Bitmap table' (silent)" "entry padding not zero";
    /// seeds/003_be34a5d26c202721.txt, the bitmap table entry (chosen:
    /// bytes 28-35, which the seed does not quote, are reserved and zero).
    DirReserved = "bitmaps.dir.reserved" [Error] "seeds/003 entry (chosen)" "entry bytes 28-35 not zero";
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Bitmap table' (the L1 table offset
    /// "Must be aligned to a cluster boundary"), seeds/003 the same;
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory'
    /// (bitmap_table_offset, the same words); seeds/002 as final.
    DirTableAlignment = "bitmaps.dir.table-alignment" [Error] "seeds/004 'Bitmap table'; seeds/001 'Bitmap Directory'" "table offset not cluster aligned";
    /// seeds/004_dfa3ca789b2fdec1.txt 'Bitmap table', seeds/003,
    /// seeds/001_24d3914d0b32ce22.txt 'Bitmap Directory': offset 0 would
    /// put the table over the header (chosen: allowed for an L1 table of 0
    /// entries). seeds/002_5582814d73963f5f.txt: offset 0 is the empty
    /// bitmap only with size 0.
    DirTableOffsetZero = "bitmaps.dir.table-offset-zero" [Error] "seeds/004 'Bitmap table'; seeds/001 'Bitmap Directory'; seeds/002" "table offset 0 with a non-zero size";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Data' (exactly
    /// bitmap_table_size clusters cover the virtual disk) and seeds/002 as
    /// final: too few entries is an error (not for in_use), too many or a
    /// zero-size disk unspecified. seeds/004_dfa3ca789b2fdec1.txt, 'Cluster
    /// mapping', and seeds/003: too few L1 entries is an error, more a note.
    DirTableSize = "bitmaps.dir.table-size" [Error, Unspecified, Note] "seeds/001 'Bitmap Data'; seeds/004 'Cluster mapping'" "too few table entries for the bitmap's data (error); too many (unspecified, or a note for an L1 table)";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (type "0: Dirty
    /// Tracking Bitmap", 1-255 reserved); seeds/002 as final (1).
    DirType = "bitmaps.dir.type" [Error] "seeds/001 'Bitmap Directory'; seeds/002 as final" "type is not dirty tracking (0 in rfc-v5-2015, 1 in empty-table-2016)";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmaps extension'
    /// (bitmap_directory_offset "Must be aligned to a cluster boundary");
    /// seeds/002 as final.
    ExtDirectoryAlignment = "bitmaps.ext.directory-alignment" [Error] "seeds/001 'Bitmaps extension'" "directory offset not cluster aligned";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Directory' (the directory
    /// is "a contiguous area in the image file"); seeds/002 as final.
    ExtDirectoryBounds = "bitmaps.ext.directory-bounds" [Error] "seeds/001 'Bitmap Directory'" "the directory runs past the end of the file";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmaps extension'
    /// (bitmap_directory_size "must be equal to sum of sizes of all
    /// (nb_bitmaps) bitmap headers"); seeds/002 as final.
    ExtDirectorySize = "bitmaps.ext.directory-size" [Error] "seeds/001 'Bitmaps extension'" "the nb_bitmaps entries do not exactly fill bitmap_directory_size";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmaps extension' (16 bytes of
    /// fields); seeds/002 as final (24): fewer is an error, more
    /// unspecified.
    ExtLength = "bitmaps.ext.length" [Error, Unspecified] "seeds/001 'Bitmaps extension'; seeds/002 as final" "extension data shorter (error) or longer (unspecified) than the draft's";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmaps extension' ("Qemu currently
    /// only supports up to 65535 bitmaps per image"); seeds/002 as final.
    ExtLimits = "bitmaps.ext.limits" [Limit] "seeds/001 'Bitmaps extension'" "nb_bitmaps > 65535 or directory size > 1024*65535";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmaps extension' (nb_bitmaps
    /// "Must be greater or equal to 1"); seeds/002 as final.
    ExtNbBitmapsZero = "bitmaps.ext.nb-bitmaps-zero" [Error] "seeds/001 'Bitmaps extension'" "nb_bitmaps = 0";
    /// seeds/002_5582814d73963f5f.txt, the final format: bytes 4-7 of the
    /// extension are reserved and zero (rfc-v5-2015 has no such field).
    ExtReserved = "bitmaps.ext.reserved" [Error] "seeds/002 as final 'Bitmaps extension'" "bytes 4-7 non-zero";
    /// Every draft (seeds/004 'Bitmap table' and 'Cluster mapping', seeds/003,
    /// seeds/001 'Bitmap Directory' and 'Bitmap Table', seeds/002): each
    /// structure is its own area of the file (chosen: the header cluster,
    /// directory, tables and data clusters share no cluster; refcounts are
    /// left to `check`).
    Overlap = "bitmaps.overlap" [Error] "seeds/004 'Cluster mapping'; seeds/001 'Bitmap Table' (chosen)" "two of the draft's structures share a cluster";
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Table' ("Bit 0: Reserved
    /// and must be zero if bits 9 - 55 are non-zero"); seeds/002 as final.
    TableAllOnesWithOffset = "bitmaps.table.all-ones-with-offset" [Error] "seeds/001 'Bitmap Table'" "bit 0 set while bits 9-55 are non-zero";
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Cluster mapping' ("The L1 table
    /// ... must be contiguous in the image file"), seeds/003 the same;
    /// seeds/001_24d3914d0b32ce22.txt, 'Bitmap Table' (the same words);
    /// seeds/002 as final.
    TableBounds = "bitmaps.table.bounds" [Error] "seeds/004 'Cluster mapping'; seeds/001 'Bitmap Table'" "the table runs past the end of the file";
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Cluster mapping' (a standard
    /// cluster descriptor's offset is cluster aligned), seeds/003 the
    /// same; seeds/001_24d3914d0b32ce22.txt, 'Bitmap Table' (bits 9-55
    /// "Must be aligned to a cluster boundary"); seeds/002 as final.
    TableEntryAlignment = "bitmaps.table.entry-alignment" [Error] "seeds/004 'Cluster mapping'; seeds/001 'Bitmap Table'" "data offset not cluster aligned";
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Cluster mapping' (L1 entry bits
    /// 62-63 "Reserved", and the descriptor's reserved bits 1-8, 56-61),
    /// seeds/003 the same; seeds/001_24d3914d0b32ce22.txt, 'Bitmap Table'
    /// (bits 1-8 and 56-63 "Reserved and must be zero"); seeds/002 as final.
    TableReservedBits = "bitmaps.table.reserved-bits" [Error] "seeds/004 'Cluster mapping'; seeds/001 'Bitmap Table'" "reserved bits of a table entry set";
    /// seeds/001_24d3914d0b32ce22.txt, 'Header' (autoclear bit 0; a version
    /// 2 header has no autoclear field, so the extension is never
    /// consistent); seeds/002 as final.
    V2Image = "bitmaps.v2-image" [Inconsistent] "seeds/001 'Header' (autoclear bit 0)" "version 2 image carries a bitmaps extension";
    /// No draft: the readers' own bound on work, proportional to the file
    /// (at most 64 MiB of data per bitmap), so that a hostile file cannot
    /// make them run long.
    WorkLimit = "bitmaps.work-limit" [Limit] "none (the readers' work budget)" "a table or a bitmap's contents not read: the work budget is spent";
    /// seeds/001_24d3914d0b32ce22.txt and seeds/002 keep qcow2's 'Header
    /// extensions'; seeds/003_be34a5d26c202721.txt, 'Header' (extensions
    /// "Like in qcow2"): every extension lies inside the first cluster.
    ExtBounds = "ext.bounds" [Error] "seeds/003 'Header'; qcow2 'Header extensions'" "an extension (with padding) runs past the first cluster or the file";
    /// seeds/003_be34a5d26c202721.txt, 'Header' ("each header extension
    /// type shall appear at most once", any type); qcow2's 'Header
    /// extensions' for the other drafts (known types).
    ExtDuplicate = "ext.duplicate" [Error] "seeds/003 'Header'; qcow2 'Header extensions'" "an extension type appears twice";
    /// seeds/003_be34a5d26c202721.txt, 'Header' (cluster_bits "Must not be
    /// less than 9"; chosen: at most 62 can be addressed); the qcow2
    /// header of the other drafts the same.
    HeaderClusterBits = "header.cluster-bits" [Error] "seeds/003 'Header'; qcow2 'Header'" "cluster_bits < 9 or > 62";
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Header' (dirty_bitmaps_offset "Must
    /// be aligned to a cluster boundary"); seeds/003_be34a5d26c202721.txt,
    /// 'Header' (bitmaps_offset, the same words).
    HeaderDirectoryAlignment = "header.directory-alignment" [Error] "seeds/004 'Header'; seeds/003 'Header'" "the directory offset in the header is not cluster aligned";
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Header' (bytes 104-115; chosen: a
    /// version 2 header or a shorter header_length has no bitmaps).
    HeaderFieldsAbsent = "header.fields-absent" [Note] "seeds/004 'Header'" "version 2, or header_length < 116: no draft fields, no bitmaps";
    /// seeds/003_be34a5d26c202721.txt, 'Header' (header_length; chosen: at
    /// least the 28 bytes of fields, at most the first cluster).
    HeaderLength = "header.length" [Error] "seeds/003 'Header'" "header_length < 28 or past the first cluster";
    /// seeds/003_be34a5d26c202721.txt, 'Header' (magic "QDB\0"); the
    /// qcow2 drafts need the qcow2 magic.
    HeaderMagic = "header.magic" [Error] "seeds/003 'Header'; qcow2 'Header'" "magic is not the draft's (QDB\\0, or QFI\\xfb for the qcow2 drafts)";
    /// seeds/003_be34a5d26c202721.txt, 'Header' (28 bytes of fields);
    /// seeds/004_dfa3ca789b2fdec1.txt, 'Header' (bytes 104-115); the qcow2
    /// header of the other drafts.
    HeaderTruncated = "header.truncated" [Error] "seeds/003 'Header'; seeds/004 'Header'; qcow2 'Header'" "the file ends inside the header";
    /// seeds/003_be34a5d26c202721.txt, 'Header' (version "valid value is
    /// 1"); the qcow2 drafts need version 2 or 3.
    HeaderVersion = "header.version" [Error] "seeds/003 'Header'; qcow2 'Header'" "version is not the draft's (1, or 2-3 for the qcow2 drafts)";
}

impl Catalogued for DraftRule {
    const COUNT: usize = DraftRule::ALL.len();
    /// The draft readers always listed a capped rule's summary last.
    const SUMMARY_LAST: bool = true;
    fn index(self) -> usize {
        self as usize
    }
    fn id(self) -> &'static str {
        DraftRule::id(self)
    }
    fn severities(self) -> &'static [Severity] {
        DraftRule::severities(self)
    }
}

#[cfg(test)]
mod tests {
    use super::DraftRule;

    #[test]
    fn catalogue_is_in_id_order_with_unique_ids() {
        // Findings at one offset are listed in catalogue order, which must
        // therefore be ID order (as the readers always listed them).
        for pair in DraftRule::ALL.windows(2) {
            assert!(pair[0].id() < pair[1].id(), "{} >= {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn ids_round_trip() {
        for &r in DraftRule::ALL {
            assert_eq!(DraftRule::from_id(r.id()), Some(r));
            assert!(!r.section().is_empty() && !r.condition().is_empty());
        }
    }
}
