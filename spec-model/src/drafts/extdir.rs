//! The drafts that keep bitmaps in the bitmaps header extension (type
//! 0x23852875) with a bitmap directory and one-level bitmap tables:
//!
//! - `rfc-v5-2015` (seed 001): 16 bytes of extension data (no reserved
//!   field, a 4-byte directory size), a 22-byte fixed entry part with a
//!   2-byte `extra_data_size`, the name before the extra data, type 0 =
//!   dirty tracking, flags `in_use` and `auto` only, names of 1-1023 bytes.
//! - `empty-table-2016` (seed 002): the final format, plus the proposal
//!   that `bitmap_table_offset = 0` with `bitmap_table_size = 0` stands for
//!   a bitmap with no set bit.
//!
//! Both use the final bitmap table entry (bit 0 all ones / zeros, bits
//! 9-55 offset). Choices where the RFC is silent (see `docs/revisions.md`):
//! the bitmap covers the header's virtual size (as its review thread
//! answers); non-zero entry padding is `unspecified`; extra data is kept
//! and ignored (the RFC defines none and has no compatibility flag), so it
//! does not make the bitmap unusable; a table offset of 0 is an error
//! (`bitmaps.dir.table-offset-zero`, the table would be the header). Rules
//! the drafts share with the final format have the final rule's ID under
//! the draft's prefix, e.g. `draft.rfc-v5-2015.bitmaps.ext.length`.

use super::content::{Geo, Slot, MAX_CONTENT_BYTES};
use super::extents::Owner;
use super::fields::rfc_v5_2015 as rfc;
use super::reader::{Reader, TableFormat};
use super::rules::DraftRule;
use super::{name_of, DraftBitmap, DraftDump, DraftExtension};
use crate::bitmaps::ExtensionState;
use crate::dump::values;
use crate::extensions::{report_repeats, Extension};
use crate::fields::{bitmap_entry as entry, bitmaps_ext as bext, extension as ext, Field};
use crate::io::{CheckError, Image};
use crate::report::Contents;
use crate::revision::Revision;
use crate::rules::Severity;
use std::collections::HashSet;
use std::io::{Read, Seek};

/// How one of the two drafts lays out the extension and its directory.
/// What they share is read through the final format's field tables
/// (`nb_bitmaps` and the entry's bytes 0-19 are the same in both).
pub(crate) struct Dialect {
    revision: Revision,
    ext_length: usize,
    ext_fields: &'static [Field],
    dir_size: Field,
    dir_offset: Field,
    reserved: Option<Field>,
    entry_fields: &'static [Field],
    fixed: usize,
    extra_size: Field,
    name_first: bool,
    dirty_type: u64,
    flags_known: u64,
    flag_extra_compatible: Option<u64>,
    /// Names over 1023 bytes: an error (RFC) or QEMU's limit (final).
    long_name_error: bool,
    /// Non-zero entry padding: an error (final) or unspecified (RFC).
    padding_error: bool,
    /// Offset 0 with size 0 is an empty bitmap (the 2016 proposal).
    empty_table: bool,
}

pub(crate) const RFC_V5_2015: Dialect = Dialect {
    revision: Revision::RfcV5_2015,
    ext_length: rfc::EXT_LENGTH,
    ext_fields: rfc::EXT_FIELDS,
    dir_size: rfc::BITMAP_DIRECTORY_SIZE,
    dir_offset: rfc::BITMAP_DIRECTORY_OFFSET,
    reserved: None,
    entry_fields: rfc::ENTRY_FIELDS,
    fixed: rfc::ENTRY_FIXED,
    extra_size: rfc::EXTRA_DATA_SIZE,
    name_first: true,
    dirty_type: rfc::TYPE_DIRTY_TRACKING,
    flags_known: rfc::FLAGS_KNOWN,
    flag_extra_compatible: None,
    long_name_error: true,
    padding_error: false,
    empty_table: false,
};

pub(crate) const EMPTY_TABLE_2016: Dialect = Dialect {
    revision: Revision::EmptyTable2016,
    ext_length: bext::LENGTH,
    ext_fields: bext::FIELDS,
    dir_size: bext::BITMAP_DIRECTORY_SIZE,
    dir_offset: bext::BITMAP_DIRECTORY_OFFSET,
    reserved: Some(bext::RESERVED),
    entry_fields: entry::FIELDS,
    fixed: entry::FIXED_LENGTH,
    extra_size: entry::EXTRA_DATA_SIZE,
    name_first: false,
    dirty_type: entry::TYPE_DIRTY_TRACKING,
    flags_known: entry::FLAGS_KNOWN,
    flag_extra_compatible: Some(entry::FLAG_EXTRA_DATA_COMPATIBLE),
    long_name_error: false,
    padding_error: true,
    empty_table: true,
};

/// Reads an image per `d`.
pub(crate) fn read<R: Read + Seek>(
    img: &mut Image<R>,
    d: &Dialect,
) -> Result<DraftDump, CheckError> {
    let mut rd = Reader::new(img, d.revision);
    let Some(base) = rd.qcow2_base()? else {
        return Ok(rd.finish(|_| true));
    };
    let exts = rd.extensions(base.ext_start)?;
    report_repeats(
        &mut rd.findings,
        &exts,
        DraftRule::ExtDuplicate,
        "more than once",
    );
    rd.dump.extensions = exts
        .iter()
        .map(|x| {
            let table: &[Field] = if x.ext_type == ext::BITMAPS {
                d.ext_fields
            } else {
                &[]
            };
            DraftExtension::new(x, table)
        })
        .collect();
    let bit0 = base.autoclear & crate::fields::header::AUTOCLEAR_BITMAPS != 0;
    let bitmaps_ext = exts.iter().find(|x| x.ext_type == ext::BITMAPS);
    let autoclear_at = crate::fields::header::AUTOCLEAR_FEATURES.offset as u64;
    let state = match bitmaps_ext {
        None => {
            if bit0 && base.version == 3 {
                rd.findings.add(
                    DraftRule::AutoclearWithoutExtension,
                    autoclear_at,
                    "autoclear bit 0 is set but there is no bitmaps extension",
                );
            }
            ExtensionState::Absent
        }
        Some(x) if base.version == 2 => {
            rd.findings.add(
                DraftRule::V2Image,
                x.offset,
                "a version 2 header has no autoclear field: the bitmaps extension is inconsistent",
            );
            ExtensionState::Inconsistent
        }
        Some(x) if !bit0 => {
            rd.findings.add(
                DraftRule::AutoclearMissing,
                x.offset,
                "autoclear bit 0 is clear: the bitmaps extension is inconsistent",
            );
            ExtensionState::Inconsistent
        }
        Some(_) => ExtensionState::Consistent,
    };
    rd.dump.bitmaps_extension = Some(state);
    let mut unusable = Vec::new();
    if let Some(x) = bitmaps_ext {
        directory(&mut rd, d, base.size, x, &mut unusable)?;
    }
    let consistent = state == ExtensionState::Consistent;
    Ok(rd.finish(|i| consistent && !unusable.get(i).copied().unwrap_or(false)))
}

/// Reads the directory the bitmaps extension `x` points to; `unusable`
/// gets, per bitmap, whether its own entry says its contents must not be
/// used.
fn directory<R: Read + Seek>(
    rd: &mut Reader<'_, R>,
    d: &Dialect,
    virtual_size: u64,
    x: &Extension,
    unusable: &mut Vec<bool>,
) -> Result<(), CheckError> {
    let data_at = x.data_offset();
    let len = x.data.len();
    let want = d.ext_length;
    if len < want {
        rd.findings.add_with(
            DraftRule::ExtLength,
            x.offset + 4,
            msg!("bitmaps extension length is {len}, the draft's data is {want} bytes"),
        );
        return Ok(());
    }
    if len > want {
        rd.findings.add_as_with(
            DraftRule::ExtLength,
            Severity::Unspecified,
            x.offset + 4,
            msg!("bitmaps extension length is {len}, the draft's data is {want} bytes"),
        );
    }
    let nb = bext::NB_BITMAPS.get(&x.data);
    let dir_size = d.dir_size.get(&x.data);
    let dir_off = d.dir_offset.get(&x.data);
    if nb == 0 {
        rd.findings.add(
            DraftRule::ExtNbBitmapsZero,
            data_at,
            "nb_bitmaps is 0, at least 1 is required",
        );
        return Ok(());
    }
    if let Some(rf) = d.reserved {
        let v = rf.get(&x.data);
        if v != 0 {
            rd.findings.add_with(
                DraftRule::ExtReserved,
                data_at + rf.offset as u64,
                msg!("reserved field is {v:#x}, must be zero"),
            );
        }
    }
    if nb > bext::MAX_BITMAPS || dir_size > bext::MAX_DIRECTORY_SIZE {
        rd.findings.add_with(
            DraftRule::ExtLimits,
            data_at,
            msg!("{nb} bitmaps, directory of {dir_size} bytes: beyond QEMU's limits"),
        );
    }
    let dir_off_at = data_at + d.dir_offset.offset as u64;
    if !dir_off.is_multiple_of(rd.cluster_size()) {
        rd.findings.add_with(
            DraftRule::ExtDirectoryAlignment,
            dir_off_at,
            msg!("bitmap_directory_offset {dir_off:#x} is not cluster aligned"),
        );
        return Ok(());
    }
    let Some(dir) = rd
        .img
        .read_structure("bitmap directory", dir_off, dir_size)?
    else {
        rd.findings.add_with(
            DraftRule::ExtDirectoryBounds,
            dir_off_at,
            msg!("directory at {dir_off:#x} of {dir_size} bytes runs past the end of the file"),
        );
        return Ok(());
    };
    rd.extents.add(dir_off, dir_size, Owner::Directory);
    let mut pos = 0u64;
    let mut names: HashSet<Vec<u8>> = HashSet::new();
    let mut complete = true;
    for i in 0..nb {
        let at = dir_off + pos;
        let (raw, elen) = match fit(&dir, d, i, nb, pos) {
            Ok(found) => found,
            Err((rule, message)) => {
                rd.findings.add(rule, at, message);
                complete = false;
                break;
            }
        };
        let name_size = entry::NAME_SIZE.get(raw);
        let extra_size = d.extra_size.get(raw);
        let body = &dir[pos as usize + d.fixed..(pos + elen) as usize];
        let (first, second) = if d.name_first {
            (name_size, extra_size)
        } else {
            (extra_size, name_size)
        };
        let (a, rest) = body.split_at(first as usize);
        let (b, padding) = rest.split_at(second as usize);
        let (name, extra) = if d.name_first { (a, b) } else { (b, a) };
        let parts = EntryParts {
            raw,
            name,
            extra,
            padding,
        };
        rd.room_for_entry(dir_off)?;
        let (bitmap, alone) = bitmap(rd, d, i as usize, at, virtual_size, parts, &mut names)?;
        rd.dump.bitmaps.push(bitmap);
        unusable.push(alone);
        pos += elen;
    }
    if complete && pos != dir_size {
        let left = dir_size - pos;
        rd.findings.add_with(
            DraftRule::ExtDirectorySize,
            dir_off + pos,
            msg!("{left} bytes left in the directory after the last of {nb} entries"),
        );
    }
    Ok(())
}

/// Entry `i` of `nb` at `pos` in the directory `dir`: its fixed part and
/// its whole length, or the rule it breaks by not fitting the directory.
fn fit<'d>(
    dir: &'d [u8],
    d: &Dialect,
    i: u64,
    nb: u64,
    pos: u64,
) -> Result<(&'d [u8], u64), (DraftRule, String)> {
    let (size, fixed) = (dir.len() as u64, d.fixed as u64);
    if pos >= size {
        return Err((
            DraftRule::ExtDirectorySize,
            format!("entry {i} of {nb} would start at or past the directory's end ({size} bytes)"),
        ));
    }
    if pos + fixed > size {
        return Err((
            DraftRule::DirEntryBounds,
            format!("entry {i}: its fixed part runs past the directory's end"),
        ));
    }
    let raw = &dir[pos as usize..(pos + fixed) as usize];
    let elen = (fixed + d.extra_size.get(raw) + entry::NAME_SIZE.get(raw)).div_ceil(8) * 8;
    if pos + elen > size {
        return Err((
            DraftRule::DirEntryBounds,
            format!("entry {i}: {elen} bytes with name, extra data and padding run past the directory's end"),
        ));
    }
    Ok((raw, elen))
}

/// A directory entry's bytes: the fixed part and the variable parts.
struct EntryParts<'e> {
    raw: &'e [u8],
    name: &'e [u8],
    extra: &'e [u8],
    padding: &'e [u8],
}

/// Reads the bitmap of directory entry `idx` at `at`. The bool is true
/// when the entry itself says the contents must not be used (`in_use`,
/// or extra data without `extra_data_compatible`).
fn bitmap<R: Read + Seek>(
    rd: &mut Reader<'_, R>,
    d: &Dialect,
    idx: usize,
    at: u64,
    virtual_size: u64,
    e: EntryParts<'_>,
    names: &mut HashSet<Vec<u8>>,
) -> Result<(DraftBitmap, bool), CheckError> {
    let raw = e.raw;
    let flags = entry::FLAGS.get(raw);
    let btype = entry::TYPE.get(raw);
    let gb = entry::GRANULARITY_BITS.get(raw);
    let field_at = |f: Field| at + f.offset as u64;
    if flags & !d.flags_known != 0 {
        rd.findings.add_with(
            DraftRule::DirFlagsReserved,
            field_at(entry::FLAGS),
            msg!("bitmap {idx}: flags {flags:#x} set reserved bits"),
        );
    }
    if btype != d.dirty_type {
        let dirty = d.dirty_type;
        rd.findings.add_with(
            DraftRule::DirType,
            field_at(entry::TYPE),
            msg!("bitmap {idx}: type {btype}, dirty tracking is {dirty}"),
        );
    }
    if gb > 63 {
        rd.findings.add_with(
            DraftRule::DirGranularity,
            field_at(entry::GRANULARITY_BITS),
            msg!("bitmap {idx}: granularity_bits {gb}, at most 63"),
        );
    } else if !(9..=31).contains(&gb) {
        rd.findings.add_as_with(
            DraftRule::DirGranularity,
            Severity::Limit,
            field_at(entry::GRANULARITY_BITS),
            msg!("bitmap {idx}: granularity_bits {gb}, QEMU supports 9-31"),
        );
    }
    names_checked(rd, d, idx, at, e.name, names);
    if e.padding.iter().any(|&b| b != 0) {
        let sev = if d.padding_error {
            Severity::Error
        } else {
            Severity::Unspecified
        };
        rd.findings.add_as_with(
            DraftRule::DirPadding,
            sev,
            at,
            msg!("bitmap {idx}: entry padding is not zero"),
        );
    }
    let in_use = flags & entry::FLAG_IN_USE != 0;
    let compatible = d.flag_extra_compatible.is_none_or(|f| flags & f != 0);
    if !e.extra.is_empty() {
        let n = e.extra.len();
        let why = if compatible {
            ""
        } else {
            " without extra_data_compatible: must not be used"
        };
        rd.findings.add_with(
            DraftRule::DirExtraData,
            at,
            msg!("bitmap {idx}: {n} bytes of extra data{why}"),
        );
    }
    if in_use {
        rd.findings.add_with(
            DraftRule::DirInUse,
            at,
            msg!("bitmap {idx}: in_use set, its contents must not be used"),
        );
    }
    let mut fl = Vec::new();
    if in_use {
        fl.push("in_use");
    }
    if flags & entry::FLAG_AUTO != 0 {
        fl.push("auto");
    }
    if d.flag_extra_compatible.is_some_and(|f| flags & f != 0) {
        fl.push("extra_data_compatible");
    }
    let (n, name_hex) = name_of(e.name);
    let gran = (gb <= 63).then(|| 1u64 << gb);
    let geo = Geo {
        size: u128::from(virtual_size),
        granularity: u128::from(gran.unwrap_or(1)),
        cluster_bits: rd.cluster_bits,
    };
    let mut b = DraftBitmap {
        entry_offset: at,
        name: n,
        name_hex,
        fields: values(at, d.entry_fields, raw),
        flags: fl,
        extra_data_hex: hex::encode(e.extra),
        granularity: gran,
        granularity_bits: gran.map(|_| gb as u8),
        size: Some(virtual_size),
        nbits: gran.and_then(|_| u64::try_from(geo.nbits()).ok()),
        table_offset: entry::BITMAP_TABLE_OFFSET.get(raw),
        table_size: entry::BITMAP_TABLE_SIZE.get(raw),
        table: Vec::new(),
        usable: false,
        contents: Contents::default(),
    };
    let geo = gran.map(|_| geo);
    table(rd, d, idx, at, in_use, geo, &mut b)?;
    let unusable = in_use || (!e.extra.is_empty() && !compatible);
    Ok((b, unusable))
}

/// Checks entry `idx`'s name: not empty, not too long, unique.
fn names_checked<R>(
    rd: &mut Reader<'_, R>,
    d: &Dialect,
    idx: usize,
    at: u64,
    name: &[u8],
    names: &mut HashSet<Vec<u8>>,
) {
    let name_size_at = at + entry::NAME_SIZE.offset as u64;
    let len = name.len();
    if name.is_empty() {
        rd.findings.add_with(
            DraftRule::DirNameEmpty,
            name_size_at,
            msg!("bitmap {idx}: name_size is 0"),
        );
    } else if len > 1023 {
        if d.long_name_error {
            rd.findings.add_with(
                DraftRule::DirNameSize,
                name_size_at,
                msg!("bitmap {idx}: name_size {len}, valid sizes are 1-1023"),
            );
        } else {
            rd.findings.add_with(
                DraftRule::DirNameLimit,
                name_size_at,
                msg!("bitmap {idx}: name_size {len}, QEMU supports at most 1023"),
            );
        }
    }
    if !names.insert(name.to_vec()) {
        rd.findings.add_with(
            DraftRule::DirNameUnique,
            at,
            msg!(
                "bitmap {idx}: name {:?} is used twice",
                String::from_utf8_lossy(name)
            ),
        );
    }
}

/// Reads bitmap `idx`'s table and contents into `b` (`geo` is `None`
/// when the granularity is invalid).
fn table<R: Read + Seek>(
    rd: &mut Reader<'_, R>,
    d: &Dialect,
    idx: usize,
    at: u64,
    in_use: bool,
    geo: Option<Geo>,
    b: &mut DraftBitmap,
) -> Result<(), CheckError> {
    let (off, size) = (b.table_offset, b.table_size);
    if off == 0 && size == 0 && d.empty_table {
        rd.findings.add_with(
            DraftRule::DirEmptyTable,
            at,
            msg!("bitmap {idx}: no bitmap table (offset 0, size 0): every bit is zero"),
        );
        let Some(geo) = geo else {
            return Ok(());
        };
        if geo.nbytes() > u128::from(MAX_CONTENT_BYTES) {
            let nbytes = geo.nbytes();
            rd.findings.add_with(
                DraftRule::WorkLimit,
                at,
                msg!("bitmap {idx}: {nbytes} data bytes, contents not computed (work limit)"),
            );
            return Ok(());
        }
        let slots = vec![Slot::Zeros; geo.needed() as usize];
        return rd.content(idx, at, geo, &slots, b);
    }
    let zero_note = if d.empty_table {
        "; only size 0 marks an empty bitmap"
    } else {
        ""
    };
    let slots = rd.table(TableFormat::Bitmap, idx, at, off, size, zero_note)?;
    if let (Some(_), Some(geo)) = (&slots, geo) {
        let size_at = at + entry::BITMAP_TABLE_SIZE.offset as u64;
        let needed = geo.needed();
        let have = u128::from(size);
        if have < needed && !in_use {
            rd.findings.add_with(
                DraftRule::DirTableSize,
                size_at,
                msg!("bitmap {idx}: {size} table entries, the virtual size needs {needed}"),
            );
        } else if have > needed || (needed == 0 && size == 0) {
            rd.findings.add_as_with(
                DraftRule::DirTableSize,
                Severity::Unspecified,
                size_at,
                msg!("bitmap {idx}: {size} table entries where the virtual size needs {needed}"),
            );
        }
    }
    rd.data(idx, at, geo, slots.as_deref(), Severity::Error, b)
}
