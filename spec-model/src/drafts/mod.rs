//! Readers for the historical drafts of the bitmaps format (the seed
//! documents of `shared/seeds/`). Each reads an image laid out as its draft
//! describes and returns a [`DraftDump`]: the draft's fields by name with
//! their offsets and values, the bitmaps found with their table layout and
//! contents, and findings for whatever breaks the draft's own rules.
//!
//! The drafts leave fields undefined; every choice made here is documented
//! on the field constant ([`fields`]) or the reader, and collected in
//! `docs/revisions.md`. Same hard rules as the rest of the model: no
//! `unsafe`, no panic on any bytes, no allocation beyond what the file's
//! length justifies, and bounded work (`content::Budget`).
//!
//! The draft rules are a catalogue of their own ([`DraftRule`], each
//! citing its seed section), reported through [`crate::finding::Findings`]
//! like the final rules; a finding's rule reads
//! `draft.<revision>.<rule ID>`, e.g.
//! `draft.header-fields-2014.header.directory-alignment`.
//!
//! Modules: [`fields`] the drafts' field tables, [`rules`] the catalogue,
//! `reader` what the readers share, `l1dir` and `extdir` the two designs
//! (2014: a directory of "L1" tables; 2015-2016: the bitmaps header
//! extension), `content` a bitmap's data, `extents` the overlap check,
//! `render` the human form.

mod content;
mod extdir;
mod extents;
pub mod fields;
mod l1dir;
mod reader;
mod render;
pub mod rules;

pub use content::MAX_CONTENT_BYTES;
pub use render::render;
pub use rules::DraftRule;

use crate::bitmaps::ExtensionState;
use crate::io::{CheckError, Image};
use crate::report::{Contents, Verdict};
use crate::revision::Revision;
use crate::rules::Severity;
use serde::Serialize;
use std::io::{Read, Seek};

/// One field of a draft structure with its absolute file offset and value
/// (the same shape as a final-format dump's fields).
pub type DraftField = crate::dump::FieldValue;

/// One broken (or noteworthy) draft rule at one file offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftFinding {
    /// `draft.<revision>.<rule ID>`, the ID one of [`DraftRule`]'s.
    pub rule: String,
    pub severity: Severity,
    pub offset: u64,
    pub message: String,
}

/// A header extension found by a draft reader (the same shape as a
/// final-format dump's, never with text or features).
pub type DraftExtension = crate::dump::ExtensionDump;

/// A run of consecutive table entries of one kind: `zeros`, `ones`,
/// `data` (contiguous data clusters from `host_offset`) or `invalid` (the
/// same shape as a final-format dump's runs).
pub type DraftRun = crate::dump::TableRun;

/// One bitmap as a draft reader finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftBitmap {
    /// File offset of the directory entry.
    pub entry_offset: u64,
    /// The name, invalid UTF-8 replaced (see `name_hex` then).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
    /// The entry's fixed fields.
    pub fields: Vec<DraftField>,
    /// Flags the draft defines that are set (`in_use`, `auto`, `enabled`,
    /// `extra_data_compatible`).
    pub flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub extra_data_hex: String,
    /// Granularity in bytes, whatever unit the draft stores it in.
    pub granularity: Option<u64>,
    /// log2 of the granularity when it is a power of two.
    pub granularity_bits: Option<u8>,
    /// Bytes of disk the bitmap covers (None when that overflows u64).
    pub size: Option<u64>,
    /// Bits in the bitmap, ceil(size / granularity).
    pub nbits: Option<u64>,
    /// Table (or "L1 table") offset and number of entries.
    pub table_offset: u64,
    pub table_size: u64,
    pub table: Vec<DraftRun>,
    /// True when nothing in the draft says the contents must not be used:
    /// no error in the draft's structures, not `in_use`, the extension
    /// (where there is one) consistent, no incompatible extra data.
    pub usable: bool,
    /// Its contents, whenever this bitmap's own table and data can be
    /// read, even if `usable` is false.
    #[serde(flatten)]
    pub contents: Contents,
}

/// Everything a draft reader found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftDump {
    pub revision: Revision,
    pub file_length: u64,
    pub cluster_size: Option<u64>,
    /// The header fields as the draft reads them.
    pub header: Vec<DraftField>,
    pub extensions: Vec<DraftExtension>,
    /// For the drafts with a bitmaps header extension (`rfc-v5-2015`,
    /// `empty-table-2016`): its state under the draft's autoclear rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmaps_extension: Option<ExtensionState>,
    pub bitmaps: Vec<DraftBitmap>,
    pub findings: Vec<DraftFinding>,
    /// `invalid` if any finding is an error, else `unspecified` if any is
    /// unspecified, else `valid` (the contract's rule, under the draft).
    pub verdict: Verdict,
}

/// Reads `reader` as an image laid out per the draft `revision`.
///
/// For [`Revision::Final`] this returns an error: use [`crate::dump`].
pub fn dump_draft<R: Read + Seek>(revision: Revision, reader: R) -> Result<DraftDump, CheckError> {
    let mut img = Image::new(reader)?;
    match revision {
        Revision::Final => Err(CheckError::Io {
            offset: 0,
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "revision \"final\" is read by the normal dump (spec_model::dump), not by dump_draft",
            ),
        }),
        Revision::HeaderFields2014 => l1dir::header_fields_2014(&mut img),
        Revision::Qdb2014 => l1dir::qdb_2014(&mut img),
        Revision::RfcV5_2015 => extdir::read(&mut img, &extdir::RFC_V5_2015),
        Revision::EmptyTable2016 => extdir::read(&mut img, &extdir::EMPTY_TABLE_2016),
    }
}

/// [`dump_draft`] over bytes in memory.
pub fn dump_draft_bytes(revision: Revision, bytes: &[u8]) -> Result<DraftDump, CheckError> {
    dump_draft(revision, std::io::Cursor::new(bytes))
}

/// A name for reports: lossy UTF-8, plus hex when it is not UTF-8.
pub(crate) fn name_of(raw: &[u8]) -> (String, Option<String>) {
    let utf8 = std::str::from_utf8(raw).is_ok();
    (
        String::from_utf8_lossy(raw).into_owned(),
        (!utf8).then(|| hex::encode(raw)),
    )
}
