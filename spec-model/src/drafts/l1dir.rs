//! The two 2014 drafts, which share one design: a directory of entries with
//! granularity in bytes and size in 512-byte sectors, each pointing to a
//! one-level "L1" table of standard cluster descriptors.
//!
//! - `header-fields-2014` (seed 004): the directory's offset and entry
//!   count are main-header fields of a qcow2 v3 image (bytes 104-115).
//! - `qdb-2014` (seed 003): a separate "QDB" file with its own header.
//!
//! Choices where the seeds are silent (see `docs/revisions.md`):
//! - bits are LSB first within each data byte (the final format's order);
//! - an L1 entry of 0, or one with bit 0 ("reads as zeros") set, stands for
//!   a cluster of zeros whatever its offset bits (the format has no
//!   all-ones entry, so clusters of ones are stored);
//! - every data cluster lies whole inside the file; structures do not
//!   share clusters with each other or with the header cluster
//!   (`bitmaps.overlap`); qcow2 refcounts are left to the final-spec
//!   `check`;
//! - an L1 table of zero entries may have offset 0; otherwise offset 0 is
//!   an error (`bitmaps.dir.table-offset-zero`: the table would be the
//!   header);
//! - fewer L1 entries than the bitmap's data needs is an error
//!   (`bitmaps.dir.table-size`), more is a note;
//! - a granularity of 0 is an error; a granularity that is not a power of
//!   two is `unspecified` (the contents are still computed, with
//!   nbits = ceil(size * 512 / granularity));
//! - non-zero entry padding, set tail bits, an empty name and duplicate
//!   names are `unspecified` (the drafts do not say);
//! - in `qdb-2014`, the fields the seed does not show are as in
//!   [`super::fields::qdb_2014`]; the header plus extensions lie inside the
//!   first cluster; the file has no refcounts.

use super::content::Geo;
use super::fields::{header_fields_2014 as hf, qdb_2014 as qdb};
use super::reader::{Reader, TableFormat};
use super::rules::DraftRule;
use super::{DraftBitmap, DraftDump, DraftExtension};
use crate::dump::values;
use crate::extensions::repeats;
use crate::fields::Field;
use crate::io::{CheckError, Image};
use crate::report::Contents;
use crate::revision::Revision;
use crate::rules::Severity;
use std::collections::HashSet;
use std::io::{Read, Seek};

/// Which of the two drafts: their directory entries differ past byte 23.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    HeaderFields,
    Qdb,
}

impl Kind {
    fn fixed(self) -> usize {
        match self {
            Kind::HeaderFields => hf::ENTRY_FIXED,
            Kind::Qdb => qdb::ENTRY_FIXED,
        }
    }
    fn entry_fields(self) -> &'static [Field] {
        match self {
            Kind::HeaderFields => hf::ENTRY_FIELDS,
            Kind::Qdb => qdb::ENTRY_FIELDS,
        }
    }
    /// The entry's name size and extra data size.
    fn sizes(self, raw: &[u8]) -> (u64, u64) {
        match self {
            Kind::HeaderFields => (hf::NAME_SIZE.get(raw), 0),
            Kind::Qdb => (qdb::NAME_SIZE.get(raw), qdb::EXTRA_DATA_SIZE.get(raw)),
        }
    }
}

/// Reads an image per `header-fields-2014`.
pub(crate) fn header_fields_2014<R: Read + Seek>(
    img: &mut Image<R>,
) -> Result<DraftDump, CheckError> {
    let file_length = img.len();
    let mut rd = Reader::new(img, Revision::HeaderFields2014);
    let Some(base) = rd.qcow2_base()? else {
        return Ok(rd.finish(|_| true));
    };
    if base.version != 3 || base.header_length < hf::HEADER_END {
        let (version, header_length) = (base.version, base.header_length);
        rd.findings.add_with(
            DraftRule::HeaderFieldsAbsent,
            crate::fields::header::HEADER_LENGTH.offset as u64,
            msg!(
                "version {version} header of length {header_length}: the draft's fields at bytes 104-115 are not present, so the image has no bitmaps"
            ),
        );
        return Ok(rd.finish(|_| true));
    }
    if (base.raw.len() as u64) < hf::HEADER_END {
        rd.findings.add_with(
            DraftRule::HeaderTruncated,
            0,
            msg!("the file ends at {file_length}, inside the draft's header fields"),
        );
        return Ok(rd.finish(|_| true));
    }
    rd.dump
        .header
        .extend(values(0, hf::HEADER_FIELDS, &base.raw));
    let nb = hf::NB_DIRTY_BITMAPS.get(&base.raw);
    let dir = hf::DIRTY_BITMAPS_OFFSET.get(&base.raw);
    directory(
        &mut rd,
        Kind::HeaderFields,
        hf::DIRTY_BITMAPS_OFFSET,
        dir,
        nb,
    )?;
    Ok(rd.finish(|_| true))
}

/// Reads a QDB file per `qdb-2014`.
pub(crate) fn qdb_2014<R: Read + Seek>(img: &mut Image<R>) -> Result<DraftDump, CheckError> {
    let file_length = img.len();
    let mut rd = Reader::new(img, Revision::Qdb2014);
    let head = rd.img.read_clipped(0, qdb::MIN_HEADER_LENGTH)?;
    rd.dump.header = values(0, qdb::HEADER_FIELDS, &head);
    if head.len() < 4 || qdb::MAGIC.get(&head) != qdb::MAGIC_VALUE {
        rd.findings.add(
            DraftRule::HeaderMagic,
            0,
            "not a QDB file: magic is not \"QDB\\0\"",
        );
        return Ok(rd.finish(|_| true));
    }
    if (head.len() as u64) < qdb::MIN_HEADER_LENGTH {
        rd.findings.add_with(
            DraftRule::HeaderTruncated,
            0,
            msg!("the file is {file_length} bytes, the header needs 28"),
        );
        return Ok(rd.finish(|_| true));
    }
    let version = qdb::VERSION.get(&head);
    if version != qdb::VERSION_VALUE {
        rd.findings.add_with(
            DraftRule::HeaderVersion,
            qdb::VERSION.offset as u64,
            msg!("version is {version}, the only valid value is 1"),
        );
        return Ok(rd.finish(|_| true));
    }
    let cb = qdb::CLUSTER_BITS.get(&head);
    if !(9..=62).contains(&cb) {
        rd.findings.add_with(
            DraftRule::HeaderClusterBits,
            qdb::CLUSTER_BITS.offset as u64,
            msg!("cluster_bits is {cb}: at least 9 is required (and at most 62 can be addressed)"),
        );
        return Ok(rd.finish(|_| true));
    }
    rd.set_cluster_bits(cb as u32);
    let hl = qdb::HEADER_LENGTH.get(&head);
    if hl < qdb::MIN_HEADER_LENGTH || hl > rd.cluster_size() {
        rd.findings.add_with(
            DraftRule::HeaderLength,
            qdb::HEADER_LENGTH.offset as u64,
            msg!("header_length is {hl}: expected at least 28 and inside the first cluster"),
        );
    }
    let exts = rd.extensions(hl.max(qdb::MIN_HEADER_LENGTH))?;
    // The seed: every type (all are unknown) may appear once.
    for x in repeats(&exts, false) {
        let ext_type = x.ext_type;
        rd.findings.add_with(
            DraftRule::ExtDuplicate,
            x.offset,
            msg!("header extension type {ext_type:#010x} appears more than once"),
        );
    }
    rd.dump.extensions = exts
        .iter()
        .map(|x| DraftExtension {
            type_name: "unknown (ignored)",
            ..DraftExtension::new(x, &[])
        })
        .collect();
    let nb = qdb::NB_BITMAPS.get(&head);
    let dir = qdb::BITMAPS_OFFSET.get(&head);
    directory(&mut rd, Kind::Qdb, qdb::BITMAPS_OFFSET, dir, nb)?;
    Ok(rd.finish(|_| true))
}

/// Reads the `nb` entries of the directory at `dir`, whose offset the
/// header field `offset_field` holds.
fn directory<R: Read + Seek>(
    rd: &mut Reader<'_, R>,
    kind: Kind,
    offset_field: Field,
    dir: u64,
    nb: u64,
) -> Result<(), CheckError> {
    if nb == 0 {
        return Ok(());
    }
    let cs = rd.cluster_size();
    if !dir.is_multiple_of(cs) {
        let name = offset_field.name;
        rd.findings.add_with(
            DraftRule::HeaderDirectoryAlignment,
            offset_field.offset as u64,
            msg!("{name} is {dir:#x}, not a multiple of the cluster size {cs:#x}"),
        );
        return Ok(());
    }
    let fixed = kind.fixed() as u64;
    let mut pos = dir;
    let mut names: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..nb {
        rd.room_for_entry(dir)?;
        let Some(raw) = rd.img.read_checked(pos, fixed)? else {
            rd.findings.add_with(
                DraftRule::DirEntryBounds,
                pos,
                msg!("entry {i} of {nb} at {pos:#x} runs past the end of the file"),
            );
            break;
        };
        let (name_size, extra_size) = kind.sizes(&raw);
        let len = (fixed + extra_size + name_size).div_ceil(8) * 8;
        let Some(rest) =
            rd.img
                .read_structure("bitmap directory entry", pos + fixed, len - fixed)?
        else {
            rd.findings.add_with(
                DraftRule::DirEntryBounds,
                pos,
                msg!("entry {i} at {pos:#x} ({len} bytes with name and padding) runs past the end of the file"),
            );
            break;
        };
        let (extra, after) = rest.split_at(extra_size as usize);
        let (name, padding) = after.split_at(name_size as usize);
        if padding.iter().any(|&b| b != 0) {
            rd.findings.add_as_with(
                DraftRule::DirPadding,
                Severity::Unspecified,
                pos + fixed + extra_size + name_size,
                msg!("entry {i}: padding is not zero (the draft does not say it must be)"),
            );
        }
        if name.is_empty() {
            rd.findings.add_as_with(
                DraftRule::DirNameEmpty,
                Severity::Unspecified,
                pos,
                msg!("entry {i}: name_size is 0"),
            );
        }
        if !names.insert(name.to_vec()) {
            rd.findings.add_as_with(
                DraftRule::DirNameUnique,
                Severity::Unspecified,
                pos,
                msg!(
                    "entry {i}: name {:?} appears twice",
                    String::from_utf8_lossy(name)
                ),
            );
        }
        let flags = if kind == Kind::Qdb {
            qdb_flags(rd, i, pos, &raw)
        } else {
            Vec::new()
        };
        let (name, name_hex) = super::name_of(name);
        let gran = hf::GRANULARITY.get(&raw);
        let sectors = hf::SIZE.get(&raw);
        let mut b = DraftBitmap {
            entry_offset: pos,
            name,
            name_hex,
            fields: values(pos, kind.entry_fields(), &raw),
            flags,
            extra_data_hex: hex::encode(extra),
            granularity: Some(gran),
            granularity_bits: gran.is_power_of_two().then(|| gran.trailing_zeros() as u8),
            size: sectors.checked_mul(512),
            nbits: None,
            table_offset: hf::L1_TABLE_OFFSET.get(&raw),
            table_size: hf::L1_SIZE.get(&raw),
            table: Vec::new(),
            usable: false,
            contents: Contents::default(),
        };
        l1_bitmap(rd, i as usize, &mut b, sectors)?;
        rd.dump.bitmaps.push(b);
        pos += len;
    }
    rd.extents
        .add(dir, pos - dir, super::extents::Owner::Directory);
    Ok(())
}

/// The flags of QDB entry `i` at `pos` (bytes 24-25, chosen), reporting
/// reserved flag bits and the reserved bytes 28-35.
fn qdb_flags<R>(rd: &mut Reader<'_, R>, i: u64, pos: u64, raw: &[u8]) -> Vec<&'static str> {
    let mut flags = Vec::new();
    let fl = qdb::FLAGS.get(raw);
    if fl & qdb::FLAG_ENABLED != 0 {
        flags.push("enabled");
    }
    if fl & !qdb::FLAGS_KNOWN != 0 {
        rd.findings.add_with(
            DraftRule::DirFlagsReserved,
            pos + qdb::FLAGS.offset as u64,
            msg!("entry {i}: flags {fl:#x} set reserved bits 1-15"),
        );
    }
    let r = qdb::RESERVED.get(raw);
    if r != 0 {
        rd.findings.add_with(
            DraftRule::DirReserved,
            pos + qdb::RESERVED.offset as u64,
            msg!("entry {i}: reserved bytes 28-35 are {r:#x}, must be zero"),
        );
    }
    flags
}

/// Reads bitmap `idx`'s L1 table and contents into `b`.
fn l1_bitmap<R: Read + Seek>(
    rd: &mut Reader<'_, R>,
    idx: usize,
    b: &mut DraftBitmap,
    sectors: u64,
) -> Result<(), CheckError> {
    let at = b.entry_offset;
    let gran = b.granularity.unwrap_or(0);
    let (l1_off, l1_size) = (b.table_offset, b.table_size);
    let gran_at = at + hf::GRANULARITY.offset as u64;
    if gran == 0 {
        rd.findings.add_with(
            DraftRule::DirGranularity,
            gran_at,
            msg!("bitmap {idx}: granularity is 0 bytes"),
        );
    } else if !gran.is_power_of_two() {
        rd.findings.add_as_with(
            DraftRule::DirGranularity,
            Severity::Unspecified,
            gran_at,
            msg!("bitmap {idx}: granularity {gran} is not a power of two"),
        );
    }
    let geo = Geo {
        size: u128::from(sectors) * 512,
        granularity: u128::from(gran.max(1)),
        cluster_bits: rd.cluster_bits,
    };
    b.nbits = u64::try_from(geo.nbits()).ok().filter(|_| gran > 0);
    let needed = geo.needed();
    let slots = rd.table(TableFormat::L1, idx, at, l1_off, l1_size, "")?;
    if slots.is_some() && gran > 0 {
        let size_at = at + hf::L1_SIZE.offset as u64;
        if u128::from(l1_size) < needed {
            rd.findings.add_with(
                DraftRule::DirTableSize,
                size_at,
                msg!("bitmap {idx}: {l1_size} L1 entries, the bitmap's data needs {needed}"),
            );
        } else if u128::from(l1_size) > needed {
            rd.findings.add_as_with(
                DraftRule::DirTableSize,
                Severity::Note,
                size_at,
                msg!("bitmap {idx}: {l1_size} L1 entries, the data needs only {needed}"),
            );
        }
    }
    let geo = (gran > 0).then_some(geo);
    rd.data(idx, at, geo, slots.as_deref(), Severity::Unspecified, b)
}
