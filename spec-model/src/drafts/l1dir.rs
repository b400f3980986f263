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
//!   (`overlap`); qcow2 refcounts are left to the final-spec `check`;
//! - an L1 table of zero entries may have offset 0; otherwise offset 0 is
//!   an error (`table-offset-zero`: the table would be the header);
//! - fewer L1 entries than the bitmap's data needs is an error
//!   (`table-size`), more is a note;
//! - a granularity of 0 is an error; a granularity that is not a power of
//!   two is `unspecified` (the contents are still computed, with
//!   nbits = ceil(size * 512 / granularity));
//! - non-zero entry padding, set tail bits, an empty name and duplicate
//!   names are `unspecified` (the drafts do not say);
//! - in `qdb-2014`, the fields the seed does not show are as in
//!   [`super::fields::qdb_2014`]; the header plus extensions lie inside the
//!   first cluster; the file has no refcounts.

use super::fields::{header_fields_2014 as hf, l1_entry as l1, qdb_2014 as q};
use super::{
    name_of, qcow2_base, runs, tail_bits_set, values, walk_extensions, Budget, DraftBitmap,
    DraftDump, DraftExtension, DraftField, Extents, Geo, Out, Owner, Slot,
};
use crate::io::{CheckError, Image};
use crate::revision::Revision;
use crate::rules::Severity;
use std::collections::HashSet;
use std::io::{Read, Seek};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    HeaderFields,
    Qdb,
}

impl Kind {
    fn fixed(self) -> usize {
        match self {
            Kind::HeaderFields => hf::ENTRY_FIXED,
            Kind::Qdb => q::ENTRY_FIXED,
        }
    }
}

struct Ctx<'a, R> {
    img: &'a mut Image<R>,
    out: Out,
    budget: Budget,
    extents: Extents,
    cluster_bits: u32,
}

fn finish(
    revision: Revision,
    file_length: u64,
    cluster_size: Option<u64>,
    header: Vec<DraftField>,
    extensions: Vec<DraftExtension>,
    mut bitmaps: Vec<DraftBitmap>,
    out: Out,
) -> DraftDump {
    let clean = !out.has_errors();
    for b in &mut bitmaps {
        b.usable = clean && b.content_sha256.is_some();
    }
    let (findings, verdict) = out.finish();
    DraftDump {
        revision,
        file_length,
        cluster_size,
        header,
        extensions,
        bitmaps_extension: None,
        bitmaps,
        findings,
        verdict,
    }
}

/// Reads an image per `header-fields-2014`.
pub(crate) fn header_fields_2014<R: Read + Seek>(
    img: &mut Image<R>,
) -> Result<DraftDump, CheckError> {
    let rev = Revision::HeaderFields2014;
    let file_length = img.len();
    let mut out = Out::new(rev);
    let Some(base) = qcow2_base(img, &mut out)? else {
        return Ok(finish(
            rev,
            file_length,
            None,
            Vec::new(),
            Vec::new(),
            Vec::new(),
            out,
        ));
    };
    let cb = base.cluster_bits;
    let cs = 1u64 << cb;
    let mut header = base.fields.clone();
    if base.version != 3 || base.header_length < hf::HEADER_END {
        out.add(
            "fields-absent",
            Severity::Note,
            crate::fields::header::HEADER_LENGTH.offset as u64,
            format!(
                "version {} header of length {}: the draft's fields at bytes 104-115 are not present, so the image has no bitmaps",
                base.version, base.header_length
            ),
        );
        return Ok(finish(
            rev,
            file_length,
            Some(cs),
            header,
            Vec::new(),
            Vec::new(),
            out,
        ));
    }
    if (base.raw.len() as u64) < hf::HEADER_END {
        out.error(
            "header-truncated",
            0,
            format!("the file ends at {file_length}, inside the draft's header fields"),
        );
        return Ok(finish(
            rev,
            file_length,
            Some(cs),
            header,
            Vec::new(),
            Vec::new(),
            out,
        ));
    }
    header.extend(values(0, hf::HEADER_FIELDS, &base.raw));
    let nb = hf::NB_DIRTY_BITMAPS.get(&base.raw);
    let dir = hf::DIRTY_BITMAPS_OFFSET.get(&base.raw);
    let mut ctx = Ctx {
        img,
        out,
        budget: Budget::for_file(file_length),
        extents: Extents::new(cb),
        cluster_bits: cb,
    };
    ctx.extents.add(0, cs, Owner::Header);
    let mut bitmaps = Vec::new();
    if nb > 0 {
        if !dir.is_multiple_of(cs) {
            ctx.out.error(
                "alignment",
                hf::DIRTY_BITMAPS_OFFSET.offset as u64,
                format!(
                    "dirty_bitmaps_offset is {dir:#x}, not a multiple of the cluster size {cs:#x}"
                ),
            );
        } else {
            bitmaps = read_directory(&mut ctx, Kind::HeaderFields, dir, nb)?;
        }
    }
    let Ctx {
        mut out, extents, ..
    } = ctx;
    extents.report(&mut out);
    Ok(finish(
        rev,
        file_length,
        Some(cs),
        header,
        Vec::new(),
        bitmaps,
        out,
    ))
}

/// Reads a QDB file per `qdb-2014`.
pub(crate) fn qdb_2014<R: Read + Seek>(img: &mut Image<R>) -> Result<DraftDump, CheckError> {
    let rev = Revision::Qdb2014;
    let file_length = img.len();
    let mut out = Out::new(rev);
    let head = img.read_clipped(0, q::MIN_HEADER_LENGTH)?;
    let header = values(0, q::HEADER_FIELDS, &head);
    if head.len() < 4 || q::MAGIC.get(&head) != q::MAGIC_VALUE {
        out.error("header.magic", 0, "not a QDB file: magic is not \"QDB\\0\"");
        return Ok(finish(
            rev,
            file_length,
            None,
            header,
            Vec::new(),
            Vec::new(),
            out,
        ));
    }
    if (head.len() as u64) < q::MIN_HEADER_LENGTH {
        out.error(
            "header.truncated",
            0,
            format!("the file is {file_length} bytes, the header needs 28"),
        );
        return Ok(finish(
            rev,
            file_length,
            None,
            header,
            Vec::new(),
            Vec::new(),
            out,
        ));
    }
    let version = q::VERSION.get(&head);
    if version != q::VERSION_VALUE {
        out.error(
            "header.version",
            q::VERSION.offset as u64,
            format!("version is {version}, the only valid value is 1"),
        );
        return Ok(finish(
            rev,
            file_length,
            None,
            header,
            Vec::new(),
            Vec::new(),
            out,
        ));
    }
    let cb = q::CLUSTER_BITS.get(&head);
    if !(9..=62).contains(&cb) {
        out.error(
            "header.cluster-bits",
            q::CLUSTER_BITS.offset as u64,
            format!(
                "cluster_bits is {cb}: at least 9 is required (and at most 62 can be addressed)"
            ),
        );
        return Ok(finish(
            rev,
            file_length,
            None,
            header,
            Vec::new(),
            Vec::new(),
            out,
        ));
    }
    let cb = cb as u32;
    let cs = 1u64 << cb;
    let hl = q::HEADER_LENGTH.get(&head);
    if hl < q::MIN_HEADER_LENGTH || hl > cs {
        out.error(
            "header.length",
            q::HEADER_LENGTH.offset as u64,
            format!("header_length is {hl}: expected at least 28 and inside the first cluster"),
        );
    }
    let exts = walk_extensions(img, hl.max(q::MIN_HEADER_LENGTH), cs, &mut out)?;
    let mut seen = HashSet::new();
    let mut extensions = Vec::new();
    for x in &exts {
        if !seen.insert(x.ext_type) {
            out.error(
                "ext.duplicate",
                x.offset,
                format!(
                    "header extension type {:#010x} appears more than once",
                    x.ext_type
                ),
            );
        }
        extensions.push(DraftExtension {
            offset: x.offset,
            ext_type: format!("{:#010x}", x.ext_type),
            type_name: "unknown (ignored)",
            length: x.length,
            fields: Vec::new(),
        });
    }
    let nb = q::NB_BITMAPS.get(&head);
    let dir = q::BITMAPS_OFFSET.get(&head);
    let mut ctx = Ctx {
        img,
        out,
        budget: Budget::for_file(file_length),
        extents: Extents::new(cb),
        cluster_bits: cb,
    };
    ctx.extents.add(0, cs, Owner::Header);
    let mut bitmaps = Vec::new();
    if nb > 0 {
        if !dir.is_multiple_of(cs) {
            ctx.out.error(
                "alignment",
                q::BITMAPS_OFFSET.offset as u64,
                format!("bitmaps_offset is {dir:#x}, not a multiple of the cluster size {cs:#x}"),
            );
        } else {
            bitmaps = read_directory(&mut ctx, Kind::Qdb, dir, nb)?;
        }
    }
    let Ctx {
        mut out, extents, ..
    } = ctx;
    extents.report(&mut out);
    Ok(finish(
        rev,
        file_length,
        Some(cs),
        header,
        extensions,
        bitmaps,
        out,
    ))
}

fn read_directory<R: Read + Seek>(
    ctx: &mut Ctx<'_, R>,
    kind: Kind,
    dir: u64,
    nb: u64,
) -> Result<Vec<DraftBitmap>, CheckError> {
    let fixed = kind.fixed() as u64;
    let mut pos = dir;
    let mut list = Vec::new();
    let mut names: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..nb {
        let Some(raw) = ctx.img.read_checked(pos, fixed)? else {
            ctx.out.error(
                "directory-bounds",
                pos,
                format!("entry {i} of {nb} at {pos:#x} runs past the end of the file"),
            );
            break;
        };
        let (name_size, extra_size) = match kind {
            Kind::HeaderFields => (hf::NAME_SIZE.get(&raw), 0),
            Kind::Qdb => (q::NAME_SIZE.get(&raw), q::EXTRA_DATA_SIZE.get(&raw)),
        };
        let len = (fixed + extra_size + name_size).div_ceil(8) * 8;
        let Some(rest) = ctx.img.read_checked(pos + fixed, len - fixed)? else {
            ctx.out.error(
                "directory-bounds",
                pos,
                format!("entry {i} at {pos:#x} ({len} bytes with name and padding) runs past the end of the file"),
            );
            break;
        };
        let (extra, after) = rest.split_at(extra_size as usize);
        let (name, padding) = after.split_at(name_size as usize);
        if padding.iter().any(|&b| b != 0) {
            ctx.out.add(
                "padding",
                Severity::Unspecified,
                pos + fixed + extra_size + name_size,
                format!("entry {i}: padding is not zero (the draft does not say it must be)"),
            );
        }
        if name.is_empty() {
            ctx.out.add(
                "name-empty",
                Severity::Unspecified,
                pos,
                format!("entry {i}: name_size is 0"),
            );
        }
        if !names.insert(name.to_vec()) {
            ctx.out.add(
                "name-unique",
                Severity::Unspecified,
                pos,
                format!(
                    "entry {i}: name {:?} appears twice",
                    String::from_utf8_lossy(name)
                ),
            );
        }
        let (fields_table, l1_off, l1_size, gran, sectors) = match kind {
            Kind::HeaderFields => (
                hf::ENTRY_FIELDS,
                hf::L1_TABLE_OFFSET.get(&raw),
                hf::L1_SIZE.get(&raw),
                hf::GRANULARITY.get(&raw),
                hf::SIZE.get(&raw),
            ),
            Kind::Qdb => (
                q::ENTRY_FIELDS,
                q::L1_TABLE_OFFSET.get(&raw),
                q::L1_SIZE.get(&raw),
                q::GRANULARITY.get(&raw),
                q::SIZE.get(&raw),
            ),
        };
        let mut flags = Vec::new();
        if kind == Kind::Qdb {
            let fl = q::FLAGS.get(&raw);
            if fl & q::FLAG_ENABLED != 0 {
                flags.push("enabled");
            }
            if fl & !q::FLAGS_KNOWN != 0 {
                ctx.out.error(
                    "flags-reserved",
                    pos + q::FLAGS.offset as u64,
                    format!("entry {i}: flags {fl:#x} set reserved bits 1-15"),
                );
            }
            let r = q::RESERVED.get(&raw);
            if r != 0 {
                ctx.out.error(
                    "reserved",
                    pos + q::RESERVED.offset as u64,
                    format!("entry {i}: reserved bytes 28-35 are {r:#x}, must be zero"),
                );
            }
        }
        let (name, name_hex) = name_of(name);
        let mut b = DraftBitmap {
            entry_offset: pos,
            name,
            name_hex,
            fields: values(pos, fields_table, &raw),
            flags,
            extra_data_hex: hex::encode(extra),
            granularity: Some(gran),
            granularity_bits: gran.is_power_of_two().then(|| gran.trailing_zeros() as u8),
            size: sectors.checked_mul(512),
            nbits: None,
            table_offset: l1_off,
            table_size: l1_size,
            table: Vec::new(),
            usable: false,
            set_bits: None,
            content_sha256: None,
        };
        l1_bitmap(ctx, i as usize, &mut b, sectors)?;
        list.push(b);
        pos += len;
    }
    ctx.extents.add(dir, pos - dir, Owner::Directory);
    Ok(list)
}

/// Reads bitmap `idx`'s L1 table and contents into `b`.
fn l1_bitmap<R: Read + Seek>(
    ctx: &mut Ctx<'_, R>,
    idx: usize,
    b: &mut DraftBitmap,
    sectors: u64,
) -> Result<(), CheckError> {
    let at = b.entry_offset;
    let cb = ctx.cluster_bits;
    let cs = 1u64 << cb;
    let gran = b.granularity.unwrap_or(0);
    let (l1_off, l1_size) = (b.table_offset, b.table_size);
    if gran == 0 {
        ctx.out.error(
            "granularity",
            at + hf::GRANULARITY.offset as u64,
            format!("bitmap {idx}: granularity is 0 bytes"),
        );
    } else if !gran.is_power_of_two() {
        ctx.out.add(
            "granularity",
            Severity::Unspecified,
            at + hf::GRANULARITY.offset as u64,
            format!("bitmap {idx}: granularity {gran} is not a power of two"),
        );
    }
    let geo = Geo {
        size: u128::from(sectors) * 512,
        granularity: u128::from(gran.max(1)),
        cluster_bits: cb,
    };
    b.nbits = u64::try_from(geo.nbits()).ok().filter(|_| gran > 0);
    let needed = geo.needed();
    let mut slots: Vec<Slot> = Vec::new();
    let mut table_ok = false;
    if l1_size == 0 {
        table_ok = true;
    } else if l1_off == 0 {
        ctx.out.error(
            "table-offset-zero",
            at,
            format!("bitmap {idx}: l1_table_offset is 0 with {l1_size} entries (the table would be the header)"),
        );
    } else if !l1_off.is_multiple_of(cs) {
        ctx.out.error(
            "table-alignment",
            at,
            format!("bitmap {idx}: l1_table_offset {l1_off:#x} is not cluster aligned"),
        );
    } else if !ctx.img.contains(l1_off, l1_size * 8) {
        ctx.out.error(
            "table-bounds",
            at,
            format!("bitmap {idx}: L1 table at {l1_off:#x} ({l1_size} entries) runs past the end of the file"),
        );
    } else if !ctx.budget.take_entries(l1_size) {
        ctx.out.add(
            "work-limit",
            Severity::Limit,
            at,
            format!("bitmap {idx}: table not read, the file's table-entry budget is spent"),
        );
    } else {
        let raw = ctx
            .img
            .read_checked(l1_off, l1_size * 8)?
            .unwrap_or_default();
        ctx.extents.add(l1_off, l1_size * 8, Owner::Table(idx));
        table_ok = true;
        for (j, e) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(e.try_into().unwrap_or_default());
            let eat = l1_off + 8 * j as u64;
            let host = e & l1::OFFSET_MASK;
            let slot = if e & l1::RESERVED_MASK != 0 {
                ctx.out.error(
                    "entry-reserved",
                    eat,
                    format!("bitmap {idx}: L1 entry {j} is {e:#018x}, reserved bits set"),
                );
                Slot::Invalid(e)
            } else if e & l1::ZERO != 0 || host == 0 {
                Slot::Zeros
            } else if !host.is_multiple_of(cs) {
                ctx.out.error(
                    "entry-alignment",
                    eat,
                    format!("bitmap {idx}: L1 entry {j} offset {host:#x} is not cluster aligned"),
                );
                Slot::Invalid(e)
            } else if !ctx.img.contains(host, cs) {
                ctx.out.error(
                    "data-bounds",
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
    if table_ok && gran > 0 {
        if u128::from(l1_size) < needed {
            ctx.out.error(
                "table-size",
                at + hf::L1_SIZE.offset as u64,
                format!("bitmap {idx}: {l1_size} L1 entries, the bitmap's data needs {needed}"),
            );
        } else if u128::from(l1_size) > needed {
            ctx.out.add(
                "table-size",
                Severity::Note,
                at + hf::L1_SIZE.offset as u64,
                format!("bitmap {idx}: {l1_size} L1 entries, the data needs only {needed}"),
            );
        }
    }
    b.table = runs(&slots, cs);
    if !table_ok || gran == 0 || (slots.len() as u128) < needed {
        return Ok(());
    }
    if let Some(off) = tail_bits_set(ctx.img, geo, &slots)? {
        ctx.out.add(
            "tail-bits",
            Severity::Unspecified,
            off,
            format!("bitmap {idx}: bits past the bitmap's end are set (cleared when read)"),
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
