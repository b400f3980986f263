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
//! (`dir.table-offset-zero`, the table would be the header). Rules the
//! drafts share with the final format keep the final rule's name under the
//! draft's prefix, e.g. `draft.rfc-v5-2015.ext.length`.

use super::fields::rfc_v5_2015 as r;
use super::{
    name_of, qcow2_base, runs, tail_bits_set, values, walk_extensions, Budget, DraftBitmap,
    DraftDump, DraftExtension, Extents, Geo, Out, Owner, Slot, MAX_CONTENT_BYTES,
};
use crate::bitmaps::ExtensionState;
use crate::fields::{
    bitmap_entry as fe, bitmap_table_entry as t, bitmaps_ext as fx, extension as xf, Field,
};
use crate::io::{CheckError, Image};
use crate::revision::Revision;
use crate::rules::Severity;
use std::collections::HashSet;
use std::io::{Read, Seek};

/// How one of the two drafts lays out the extension and its directory.
pub(crate) struct Dialect {
    revision: Revision,
    ext_length: usize,
    ext_fields: &'static [Field],
    nb: Field,
    dir_size: Field,
    dir_offset: Field,
    reserved: Option<Field>,
    entry_fields: &'static [Field],
    fixed: usize,
    table_offset: Field,
    table_size: Field,
    flags: Field,
    btype: Field,
    gran_bits: Field,
    name_size: Field,
    extra_size: Field,
    name_first: bool,
    dirty_type: u64,
    flags_known: u64,
    flag_in_use: u64,
    flag_auto: u64,
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
    ext_length: r::EXT_LENGTH,
    ext_fields: r::EXT_FIELDS,
    nb: r::NB_BITMAPS,
    dir_size: r::BITMAP_DIRECTORY_SIZE,
    dir_offset: r::BITMAP_DIRECTORY_OFFSET,
    reserved: None,
    entry_fields: r::ENTRY_FIELDS,
    fixed: r::ENTRY_FIXED,
    table_offset: r::BITMAP_TABLE_OFFSET,
    table_size: r::BITMAP_TABLE_SIZE,
    flags: r::FLAGS,
    btype: r::TYPE,
    gran_bits: r::GRANULARITY_BITS,
    name_size: r::NAME_SIZE,
    extra_size: r::EXTRA_DATA_SIZE,
    name_first: true,
    dirty_type: r::TYPE_DIRTY_TRACKING,
    flags_known: r::FLAGS_KNOWN,
    flag_in_use: r::FLAG_IN_USE,
    flag_auto: r::FLAG_AUTO,
    flag_extra_compatible: None,
    long_name_error: true,
    padding_error: false,
    empty_table: false,
};

pub(crate) const EMPTY_TABLE_2016: Dialect = Dialect {
    revision: Revision::EmptyTable2016,
    ext_length: fx::LENGTH,
    ext_fields: fx::FIELDS,
    nb: fx::NB_BITMAPS,
    dir_size: fx::BITMAP_DIRECTORY_SIZE,
    dir_offset: fx::BITMAP_DIRECTORY_OFFSET,
    reserved: Some(fx::RESERVED),
    entry_fields: fe::FIELDS,
    fixed: fe::FIXED_LENGTH,
    table_offset: fe::BITMAP_TABLE_OFFSET,
    table_size: fe::BITMAP_TABLE_SIZE,
    flags: fe::FLAGS,
    btype: fe::TYPE,
    gran_bits: fe::GRANULARITY_BITS,
    name_size: fe::NAME_SIZE,
    extra_size: fe::EXTRA_DATA_SIZE,
    name_first: false,
    dirty_type: fe::TYPE_DIRTY_TRACKING,
    flags_known: fe::FLAGS_KNOWN,
    flag_in_use: fe::FLAG_IN_USE,
    flag_auto: fe::FLAG_AUTO,
    flag_extra_compatible: Some(fe::FLAG_EXTRA_DATA_COMPATIBLE),
    long_name_error: false,
    padding_error: true,
    empty_table: true,
};

struct Ctx<'a, R> {
    img: &'a mut Image<R>,
    out: Out,
    budget: Budget,
    extents: Extents,
    cluster_bits: u32,
    virtual_size: u64,
}

/// Per-bitmap facts that decide `usable` once all findings are in.
struct Usability {
    in_use: bool,
    extra_incompatible: bool,
}

/// Reads an image per `d`.
pub(crate) fn read<R: Read + Seek>(
    img: &mut Image<R>,
    d: &Dialect,
) -> Result<DraftDump, CheckError> {
    let file_length = img.len();
    let mut out = Out::new(d.revision);
    let Some(base) = qcow2_base(img, &mut out)? else {
        let (findings, verdict) = out.finish();
        return Ok(DraftDump {
            revision: d.revision,
            file_length,
            cluster_size: None,
            header: Vec::new(),
            extensions: Vec::new(),
            bitmaps_extension: None,
            bitmaps: Vec::new(),
            findings,
            verdict,
        });
    };
    let cb = base.cluster_bits;
    let cs = 1u64 << cb;
    let exts = walk_extensions(img, base.ext_start, cs, &mut out)?;
    let mut extensions = Vec::new();
    let mut seen = HashSet::new();
    for x in &exts {
        let known = xf::type_name(x.ext_type) != "unknown";
        if known && !seen.insert(x.ext_type) {
            out.error(
                "ext.duplicate",
                x.offset,
                format!(
                    "extension {:#010x} ({}) appears more than once",
                    x.ext_type,
                    xf::type_name(x.ext_type)
                ),
            );
        }
        let table: &[Field] = if x.ext_type == xf::BITMAPS {
            d.ext_fields
        } else {
            &[]
        };
        extensions.push(DraftExtension {
            offset: x.offset,
            ext_type: format!("{:#010x}", x.ext_type),
            type_name: xf::type_name(x.ext_type),
            length: x.length,
            fields: values(x.offset + xf::PREFIX_LENGTH as u64, table, &x.data),
        });
    }
    let bit0 = base.autoclear & crate::fields::header::AUTOCLEAR_BITMAPS != 0;
    let ext = exts.iter().find(|x| x.ext_type == xf::BITMAPS);
    let autoclear_at = crate::fields::header::AUTOCLEAR_FEATURES.offset as u64;
    let state = match ext {
        None => {
            if bit0 && base.version == 3 {
                out.error(
                    "autoclear-without-extension",
                    autoclear_at,
                    "autoclear bit 0 is set but there is no bitmaps extension",
                );
            }
            ExtensionState::Absent
        }
        Some(x) if base.version == 2 => {
            out.add(
                "v2-image",
                Severity::Inconsistent,
                x.offset,
                "a version 2 header has no autoclear field: the bitmaps extension is inconsistent",
            );
            ExtensionState::Inconsistent
        }
        Some(x) if !bit0 => {
            out.add(
                "autoclear-missing",
                Severity::Inconsistent,
                x.offset,
                "autoclear bit 0 is clear: the bitmaps extension is inconsistent",
            );
            ExtensionState::Inconsistent
        }
        Some(_) => ExtensionState::Consistent,
    };
    let mut ctx = Ctx {
        img,
        out,
        budget: Budget::for_file(file_length),
        extents: Extents::new(cb),
        cluster_bits: cb,
        virtual_size: base.size,
    };
    ctx.extents.add(0, cs, Owner::Header);
    let mut bitmaps = Vec::new();
    let mut usability = Vec::new();
    if let Some(x) = ext {
        directory(&mut ctx, d, x, &mut bitmaps, &mut usability)?;
    }
    let Ctx {
        mut out, extents, ..
    } = ctx;
    extents.report(&mut out);
    let clean = !out.has_errors() && state == ExtensionState::Consistent;
    for (b, u) in bitmaps.iter_mut().zip(&usability) {
        b.usable = clean && !u.in_use && !u.extra_incompatible && b.content_sha256.is_some();
    }
    let (findings, verdict) = out.finish();
    Ok(DraftDump {
        revision: d.revision,
        file_length,
        cluster_size: Some(cs),
        header: base.fields,
        extensions,
        bitmaps_extension: Some(state),
        bitmaps,
        findings,
        verdict,
    })
}

fn directory<R: Read + Seek>(
    ctx: &mut Ctx<'_, R>,
    d: &Dialect,
    x: &super::RawExt,
    bitmaps: &mut Vec<DraftBitmap>,
    usability: &mut Vec<Usability>,
) -> Result<(), CheckError> {
    let data_at = x.offset + xf::PREFIX_LENGTH as u64;
    let len = x.data.len();
    if len < d.ext_length {
        ctx.out.error(
            "ext.length",
            x.offset + 4,
            format!(
                "bitmaps extension length is {len}, the draft's data is {} bytes",
                d.ext_length
            ),
        );
        return Ok(());
    }
    if len > d.ext_length {
        ctx.out.add(
            "ext.length",
            Severity::Unspecified,
            x.offset + 4,
            format!(
                "bitmaps extension length is {len}, the draft's data is {} bytes",
                d.ext_length
            ),
        );
    }
    let nb = d.nb.get(&x.data);
    let dir_size = d.dir_size.get(&x.data);
    let dir_off = d.dir_offset.get(&x.data);
    if nb == 0 {
        ctx.out.error(
            "ext.nb-bitmaps-zero",
            data_at,
            "nb_bitmaps is 0, at least 1 is required",
        );
        return Ok(());
    }
    if let Some(rf) = d.reserved {
        let v = rf.get(&x.data);
        if v != 0 {
            ctx.out.error(
                "ext.reserved",
                data_at + rf.offset as u64,
                format!("reserved field is {v:#x}, must be zero"),
            );
        }
    }
    if nb > fx::MAX_BITMAPS || dir_size > fx::MAX_DIRECTORY_SIZE {
        ctx.out.add(
            "ext.limits",
            Severity::Limit,
            data_at,
            format!("{nb} bitmaps, directory of {dir_size} bytes: beyond QEMU's limits"),
        );
    }
    let cs = 1u64 << ctx.cluster_bits;
    if !dir_off.is_multiple_of(cs) {
        ctx.out.error(
            "ext.directory-alignment",
            data_at + d.dir_offset.offset as u64,
            format!("bitmap_directory_offset {dir_off:#x} is not cluster aligned"),
        );
        return Ok(());
    }
    let Some(dir) = ctx.img.read_checked(dir_off, dir_size)? else {
        ctx.out.error(
            "ext.directory-bounds",
            data_at + d.dir_offset.offset as u64,
            format!("directory at {dir_off:#x} of {dir_size} bytes runs past the end of the file"),
        );
        return Ok(());
    };
    ctx.extents.add(dir_off, dir_size, Owner::Directory);
    let fixed = d.fixed as u64;
    let mut pos = 0u64;
    let mut names: HashSet<Vec<u8>> = HashSet::new();
    let mut complete = true;
    for i in 0..nb {
        let at = dir_off + pos;
        if pos >= dir_size {
            ctx.out.error(
                "ext.directory-size",
                at,
                format!("entry {i} of {nb} would start at or past the directory's end ({dir_size} bytes)"),
            );
            complete = false;
            break;
        }
        if pos + fixed > dir_size {
            ctx.out.error(
                "dir.entry-bounds",
                at,
                format!("entry {i}: its fixed part runs past the directory's end"),
            );
            complete = false;
            break;
        }
        let raw = &dir[pos as usize..(pos + fixed) as usize];
        let name_size = d.name_size.get(raw);
        let extra_size = d.extra_size.get(raw);
        let elen = (fixed + extra_size + name_size).div_ceil(8) * 8;
        if pos + elen > dir_size {
            ctx.out.error(
                "dir.entry-bounds",
                at,
                format!("entry {i}: {elen} bytes with name, extra data and padding run past the directory's end"),
            );
            complete = false;
            break;
        }
        let body = &dir[(pos + fixed) as usize..(pos + elen) as usize];
        let (first, second) = if d.name_first {
            (name_size, extra_size)
        } else {
            (extra_size, name_size)
        };
        let (a, rest) = body.split_at(first as usize);
        let (b, padding) = rest.split_at(second as usize);
        let (name, extra) = if d.name_first { (a, b) } else { (b, a) };
        let (bitmap, u) = entry(
            ctx, d, i as usize, at, raw, name, extra, padding, &mut names,
        )?;
        bitmaps.push(bitmap);
        usability.push(u);
        pos += elen;
    }
    if complete && pos != dir_size {
        ctx.out.error(
            "ext.directory-size",
            dir_off + pos,
            format!(
                "{} bytes left in the directory after the last of {nb} entries",
                dir_size - pos
            ),
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn entry<R: Read + Seek>(
    ctx: &mut Ctx<'_, R>,
    d: &Dialect,
    idx: usize,
    at: u64,
    raw: &[u8],
    name: &[u8],
    extra: &[u8],
    padding: &[u8],
    names: &mut HashSet<Vec<u8>>,
) -> Result<(DraftBitmap, Usability), CheckError> {
    let flags = d.flags.get(raw);
    let btype = d.btype.get(raw);
    let gb = d.gran_bits.get(raw);
    let off = d.table_offset.get(raw);
    let size = d.table_size.get(raw);
    let field_at = |f: Field| at + f.offset as u64;
    if flags & !d.flags_known != 0 {
        ctx.out.error(
            "dir.flags-reserved",
            field_at(d.flags),
            format!("bitmap {idx}: flags {flags:#x} set reserved bits"),
        );
    }
    if btype != d.dirty_type {
        ctx.out.error(
            "dir.type",
            field_at(d.btype),
            format!(
                "bitmap {idx}: type {btype}, dirty tracking is {}",
                d.dirty_type
            ),
        );
    }
    if gb > 63 {
        ctx.out.error(
            "dir.granularity",
            field_at(d.gran_bits),
            format!("bitmap {idx}: granularity_bits {gb}, at most 63"),
        );
    } else if !(9..=31).contains(&gb) {
        ctx.out.add(
            "dir.granularity",
            Severity::Limit,
            field_at(d.gran_bits),
            format!("bitmap {idx}: granularity_bits {gb}, QEMU supports 9-31"),
        );
    }
    if name.is_empty() {
        ctx.out.error(
            "dir.name-empty",
            field_at(d.name_size),
            format!("bitmap {idx}: name_size is 0"),
        );
    } else if name.len() > 1023 {
        if d.long_name_error {
            ctx.out.error(
                "dir.name-size",
                field_at(d.name_size),
                format!(
                    "bitmap {idx}: name_size {}, valid sizes are 1-1023",
                    name.len()
                ),
            );
        } else {
            ctx.out.add(
                "dir.name-limit",
                Severity::Limit,
                field_at(d.name_size),
                format!(
                    "bitmap {idx}: name_size {}, QEMU supports at most 1023",
                    name.len()
                ),
            );
        }
    }
    if !names.insert(name.to_vec()) {
        ctx.out.error(
            "dir.name-unique",
            at,
            format!(
                "bitmap {idx}: name {:?} is used twice",
                String::from_utf8_lossy(name)
            ),
        );
    }
    if padding.iter().any(|&b| b != 0) {
        let sev = if d.padding_error {
            Severity::Error
        } else {
            Severity::Unspecified
        };
        ctx.out.add(
            "dir.padding",
            sev,
            at,
            format!("bitmap {idx}: entry padding is not zero"),
        );
    }
    let in_use = flags & d.flag_in_use != 0;
    let compatible = d.flag_extra_compatible.is_none_or(|f| flags & f != 0);
    if !extra.is_empty() {
        ctx.out.add(
            "dir.extra-data",
            Severity::Note,
            at,
            format!(
                "bitmap {idx}: {} bytes of extra data{}",
                extra.len(),
                if compatible {
                    ""
                } else {
                    " without extra_data_compatible: must not be used"
                }
            ),
        );
    }
    if in_use {
        ctx.out.add(
            "dir.in-use",
            Severity::Note,
            at,
            format!("bitmap {idx}: in_use set, its contents must not be used"),
        );
    }
    let mut fl = Vec::new();
    if in_use {
        fl.push("in_use");
    }
    if flags & d.flag_auto != 0 {
        fl.push("auto");
    }
    if d.flag_extra_compatible.is_some_and(|f| flags & f != 0) {
        fl.push("extra_data_compatible");
    }
    let (n, name_hex) = name_of(name);
    let gran = (gb <= 63).then(|| 1u64 << gb);
    let geo = Geo {
        size: u128::from(ctx.virtual_size),
        granularity: u128::from(gran.unwrap_or(1)),
        cluster_bits: ctx.cluster_bits,
    };
    let mut b = DraftBitmap {
        entry_offset: at,
        name: n,
        name_hex,
        fields: values(at, d.entry_fields, raw),
        flags: fl,
        extra_data_hex: hex::encode(extra),
        granularity: gran,
        granularity_bits: gran.map(|_| gb as u8),
        size: Some(ctx.virtual_size),
        nbits: gran.and_then(|_| u64::try_from(geo.nbits()).ok()),
        table_offset: off,
        table_size: size,
        table: Vec::new(),
        usable: false,
        set_bits: None,
        content_sha256: None,
    };
    table(ctx, d, idx, at, in_use, gran.is_some(), geo, &mut b)?;
    Ok((
        b,
        Usability {
            in_use,
            extra_incompatible: !extra.is_empty() && !compatible,
        },
    ))
}

#[allow(clippy::too_many_arguments)]
fn table<R: Read + Seek>(
    ctx: &mut Ctx<'_, R>,
    d: &Dialect,
    idx: usize,
    at: u64,
    in_use: bool,
    gran_ok: bool,
    geo: Geo,
    b: &mut DraftBitmap,
) -> Result<(), CheckError> {
    let cs = 1u64 << ctx.cluster_bits;
    let (off, size) = (b.table_offset, b.table_size);
    let needed = geo.needed();
    let mut slots: Vec<Slot> = Vec::new();
    let size_at = at + d.table_size.offset as u64;
    if off == 0 && size == 0 && d.empty_table {
        ctx.out.add(
            "dir.empty-table",
            Severity::Note,
            at,
            format!("bitmap {idx}: no bitmap table (offset 0, size 0): every bit is zero"),
        );
        if !gran_ok {
            return Ok(());
        }
        if geo.nbytes() > u128::from(MAX_CONTENT_BYTES) {
            ctx.out.add(
                "work-limit",
                Severity::Limit,
                at,
                format!(
                    "bitmap {idx}: {} data bytes, contents not computed (work limit)",
                    geo.nbytes()
                ),
            );
            return Ok(());
        }
        slots = vec![Slot::Zeros; needed as usize];
        return super::content(
            ctx.img,
            &mut ctx.out,
            &mut ctx.budget,
            idx,
            at,
            geo,
            &slots,
            b,
        );
    }
    let mut read = false;
    if off == 0 {
        ctx.out.error(
            "dir.table-offset-zero",
            at,
            format!(
                "bitmap {idx}: bitmap_table_offset is 0 with {size} entries (the table would be the header){}",
                if d.empty_table { "; only size 0 marks an empty bitmap" } else { "" }
            ),
        );
    } else if !off.is_multiple_of(cs) {
        ctx.out.error(
            "dir.table-alignment",
            at,
            format!("bitmap {idx}: bitmap_table_offset {off:#x} is not cluster aligned"),
        );
    } else if size == 0 {
        read = true;
    } else if !ctx.img.contains(off, size * 8) {
        ctx.out.error(
            "table.bounds",
            at,
            format!(
                "bitmap {idx}: table at {off:#x} ({size} entries) runs past the end of the file"
            ),
        );
    } else if !ctx.budget.take_entries(size) {
        ctx.out.add(
            "work-limit",
            Severity::Limit,
            at,
            format!("bitmap {idx}: table not read, the file's table-entry budget is spent"),
        );
    } else {
        read = true;
        let raw = ctx.img.read_checked(off, size * 8)?.unwrap_or_default();
        ctx.extents.add(off, size * 8, Owner::Table(idx));
        for (j, e) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(e.try_into().unwrap_or_default());
            let eat = off + 8 * j as u64;
            let host = e & t::OFFSET_MASK;
            let slot = if e & t::RESERVED_MASK != 0 {
                ctx.out.error(
                    "table.reserved-bits",
                    eat,
                    format!("bitmap {idx}: table entry {j} is {e:#018x}, reserved bits set"),
                );
                Slot::Invalid(e)
            } else if host != 0 && e & t::ALL_ONES != 0 {
                ctx.out.error(
                    "table.all-ones-with-offset",
                    eat,
                    format!("bitmap {idx}: table entry {j} is {e:#018x}: bit 0 with an offset"),
                );
                Slot::Invalid(e)
            } else if host == 0 {
                if e & t::ALL_ONES != 0 {
                    Slot::Ones
                } else {
                    Slot::Zeros
                }
            } else if !host.is_multiple_of(cs) {
                ctx.out.error(
                    "table.entry-alignment",
                    eat,
                    format!(
                        "bitmap {idx}: table entry {j} offset {host:#x} is not cluster aligned"
                    ),
                );
                Slot::Invalid(e)
            } else if !ctx.img.contains(host, cs) {
                ctx.out.error(
                    "data.bounds",
                    eat,
                    format!(
                        "bitmap {idx}: data cluster {j} at {host:#x} runs past the end of the file"
                    ),
                );
                Slot::Invalid(e)
            } else {
                ctx.extents.add(host, cs, Owner::Data(idx, j as u64));
                Slot::Data(host)
            };
            slots.push(slot);
        }
    }
    if read && gran_ok {
        let have = u128::from(size);
        if have < needed && !in_use {
            ctx.out.error(
                "dir.table-size",
                size_at,
                format!("bitmap {idx}: {size} table entries, the virtual size needs {needed}"),
            );
        } else if have > needed || (needed == 0 && size == 0) {
            ctx.out.add(
                "dir.table-size",
                Severity::Unspecified,
                size_at,
                format!("bitmap {idx}: {size} table entries where the virtual size needs {needed}"),
            );
        }
    }
    b.table = runs(&slots, cs);
    if !read || !gran_ok || (slots.len() as u128) < needed {
        return Ok(());
    }
    if let Some(o) = tail_bits_set(ctx.img, geo, &slots)? {
        ctx.out.error(
            "data.tail-bits",
            o,
            format!("bitmap {idx}: bits past the bitmap's end are set in its last data cluster"),
        );
    }
    super::content(
        ctx.img,
        &mut ctx.out,
        &mut ctx.budget,
        idx,
        at,
        geo,
        &slots,
        b,
    )
}
