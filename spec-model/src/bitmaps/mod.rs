//! The bitmaps extension (spec "Bitmaps extension", "Bitmap directory",
//! "Bitmap table", "Bitmap data"): validated and claimed here; contents in
//! [`content`], the space bitmaps take when written in [`space`].

pub mod content;
pub mod directory;
pub mod space;

use crate::clusters::Owner;
use crate::context::Ctx;
use crate::extensions::Extension;
use crate::fields::{
    bitmap_entry as entry, bitmap_table_entry as table_entry, bitmaps_ext as bext, extension,
    header as hdr,
};
use crate::finding::Findings;
use crate::io::CheckError;
use crate::rules::{Rule, Severity};
use content::Geometry;
use serde::Serialize;
use std::collections::HashSet;
use std::io::{Read, Seek};

/// The `bitmaps_extension` state of the verdict contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtensionState {
    Absent,
    Consistent,
    Inconsistent,
}

/// The bitmaps extension's data fields.
#[derive(Debug, Clone, Serialize)]
pub struct BitmapsExt {
    /// File offset of the extension's data.
    pub offset: u64,
    pub length: u32,
    pub nb_bitmaps: u32,
    pub reserved32: u32,
    pub bitmap_directory_size: u64,
    pub bitmap_directory_offset: u64,
}

/// One bitmap directory entry and its table, as found in the file.
#[derive(Debug, Clone, Serialize)]
pub struct DirEntry {
    /// File offset of the entry.
    pub offset: u64,
    pub bitmap_table_offset: u64,
    pub bitmap_table_size: u32,
    pub flags: u32,
    #[serde(rename = "type")]
    pub bitmap_type: u8,
    pub granularity_bits: u8,
    pub name_size: u16,
    pub extra_data_size: u32,
    /// The 24 fixed bytes, read through the field table by `dump`.
    #[serde(skip)]
    pub raw_fixed: [u8; entry::FIXED_LENGTH],
    #[serde(skip)]
    pub name: Vec<u8>,
    #[serde(skip)]
    pub extra_data: Vec<u8>,
    /// The table entries, when the table lies inside the file.
    #[serde(skip)]
    pub table: Option<Vec<u64>>,
}

impl DirEntry {
    pub fn in_use(&self) -> bool {
        u64::from(self.flags) & entry::FLAG_IN_USE != 0
    }
    pub fn auto(&self) -> bool {
        u64::from(self.flags) & entry::FLAG_AUTO != 0
    }
    pub fn extra_data_compatible(&self) -> bool {
        u64::from(self.flags) & entry::FLAG_EXTRA_DATA_COMPATIBLE != 0
    }
    /// The bitmap's sizes for an image of `size` virtual bytes.
    pub fn geometry(&self, size: u64, cluster_bits: u32) -> Geometry {
        Geometry {
            size,
            granularity_bits: u32::from(self.granularity_bits),
            cluster_bits,
        }
    }
    /// Whether the entry alone allows using the contents (the extension
    /// must also be consistent and valid).
    pub fn self_usable(&self, size: u64, cluster_bits: u32) -> bool {
        !self.in_use()
            && (self.extra_data_size == 0 || self.extra_data_compatible())
            && u64::from(self.bitmap_type) == entry::TYPE_DIRTY_TRACKING
            && self.granularity_bits <= 63
            && self.table.as_ref().is_some_and(|tb| {
                tb.len() as u64 >= self.geometry(size, cluster_bits).clusters_needed()
            })
    }
}

/// What the bitmaps pass found.
#[derive(Debug, Clone)]
pub struct BitmapsFound {
    pub state: ExtensionState,
    pub ext: Option<BitmapsExt>,
    pub entries: Vec<DirEntry>,
}

impl<R: Read + Seek> Ctx<R> {
    /// Validates the bitmaps extension and claims its clusters. An
    /// inconsistent extension is still read (to list its bitmaps) but is
    /// ignored: its defects are not findings and its clusters are not
    /// claimed, so they show as leaks.
    pub fn check_bitmaps(&mut self, exts: &[Extension]) -> Result<BitmapsFound, CheckError> {
        let ext = exts.iter().find(|x| x.ext_type == extension::BITMAPS);
        let bit0 = self.h.autoclear_features & hdr::AUTOCLEAR_BITMAPS != 0;
        let Some(ext) = ext else {
            if self.h.version == 3 && bit0 {
                self.findings.add_with(
                    Rule::BitmapsAutoclearWithoutExtension,
                    hdr::AUTOCLEAR_FEATURES.offset as u64,
                    msg!(
                        "autoclear_features is {:#x}: bit 0 set but the image has no bitmaps extension",
                        self.h.autoclear_features
                    ),
                );
            }
            return Ok(BitmapsFound {
                state: ExtensionState::Absent,
                ext: None,
                entries: Vec::new(),
            });
        };
        let state = if self.h.version == 2 {
            self.findings.add(
                Rule::BitmapsV2Image,
                ext.offset,
                "version 2 image with a bitmaps extension: it has no autoclear bit, so the extension is ignored",
            );
            ExtensionState::Inconsistent
        } else if !bit0 {
            self.findings.add_with(
                Rule::BitmapsAutoclearMissing,
                hdr::AUTOCLEAR_FEATURES.offset as u64,
                msg!(
                    "autoclear_features is {:#x}: bit 0 clear, so the bitmaps extension at {:#x} is ignored",
                    self.h.autoclear_features, ext.offset
                ),
            );
            ExtensionState::Inconsistent
        } else {
            ExtensionState::Consistent
        };
        if state == ExtensionState::Consistent {
            let (ext, entries) = self.read_bitmaps(ext, true)?;
            return Ok(BitmapsFound {
                state,
                ext,
                entries,
            });
        }
        // Ignored extension: read it for the listing only. Its length is
        // still judged: it frames the extension (Header extensions), and
        // autoclear bit 0 speaks of the extension's data, not its length.
        self.check_ext_length(ext);
        let saved = std::mem::take(&mut self.findings);
        let result = self.read_bitmaps(ext, false);
        self.findings = saved;
        let (ext, entries) = result?;
        Ok(BitmapsFound {
            state,
            ext,
            entries,
        })
    }

    /// `bitmaps.ext.length` (spec: Bitmaps extension, 24 bytes of
    /// fields): shorter is an error, longer unspecified. Returns whether
    /// the fields fit.
    fn check_ext_length(&mut self, ext: &Extension) -> bool {
        let length = ext.length as usize;
        if length != bext::LENGTH {
            let severity = if length < bext::LENGTH {
                Severity::Error
            } else {
                Severity::Unspecified
            };
            self.findings.add_as_with(
                Rule::BitmapsExtLength,
                severity,
                ext.offset + 4,
                msg!("bitmaps extension length is {}, expected 24", ext.length),
            );
        }
        length >= bext::LENGTH
    }

    fn read_bitmaps(
        &mut self,
        ext: &Extension,
        claim: bool,
    ) -> Result<(Option<BitmapsExt>, Vec<DirEntry>), CheckError> {
        let data_at = ext.data_offset();
        if !self.check_ext_length(ext) {
            return Ok((None, Vec::new()));
        }
        let be = BitmapsExt {
            offset: data_at,
            length: ext.length,
            nb_bitmaps: ext.get(bext::NB_BITMAPS) as u32,
            reserved32: ext.get(bext::RESERVED) as u32,
            bitmap_directory_size: ext.get(bext::BITMAP_DIRECTORY_SIZE),
            bitmap_directory_offset: ext.get(bext::BITMAP_DIRECTORY_OFFSET),
        };
        let at = |f: crate::fields::Field| data_at + f.offset as u64;
        if be.nb_bitmaps == 0 {
            self.findings.add(
                Rule::BitmapsExtNbBitmapsZero,
                at(bext::NB_BITMAPS),
                "nb_bitmaps is 0",
            );
        }
        if be.reserved32 != 0 {
            self.findings.add_with(
                Rule::BitmapsExtReserved,
                at(bext::RESERVED),
                msg!("reserved bytes 4-7 are {:#x}, must be 0", be.reserved32),
            );
        }
        if u64::from(be.nb_bitmaps) > bext::MAX_BITMAPS
            || be.bitmap_directory_size > bext::MAX_DIRECTORY_SIZE
        {
            self.findings.add_with(
                Rule::BitmapsExtLimits,
                at(bext::NB_BITMAPS),
                msg!(
                    "nb_bitmaps {} / bitmap_directory_size {}: QEMU supports at most {} bitmaps and {} directory bytes",
                    be.nb_bitmaps,
                    be.bitmap_directory_size,
                    bext::MAX_BITMAPS,
                    bext::MAX_DIRECTORY_SIZE
                ),
            );
        }
        let dir_off = be.bitmap_directory_offset;
        if !self.h.aligned(dir_off) {
            self.findings.add_with(
                Rule::BitmapsExtDirectoryAlignment,
                at(bext::BITMAP_DIRECTORY_OFFSET),
                msg!("bitmap_directory_offset {dir_off:#x} is not cluster aligned"),
            );
        }
        let dir_size = be.bitmap_directory_size;
        if !self.img.contains(dir_off, dir_size) {
            self.findings.add_with(
                Rule::BitmapsExtDirectoryBounds,
                at(bext::BITMAP_DIRECTORY_OFFSET),
                msg!(
                    "bitmap directory at {dir_off:#x} ({dir_size} bytes) runs past the end of the file ({} bytes)",
                    self.img.len()
                ),
            );
            return Ok((Some(be), Vec::new()));
        }
        // Only the bytes the entries take are read: a size that they
        // cannot fill is decided below (`bitmaps.ext.directory-size`)
        // without reading what it claims.
        let dir = directory::read_entries(&mut self.img, dir_off, dir_size, be.nb_bitmaps)?;
        if claim {
            // A size beyond what the entries can fill claims only what
            // they take (the rest is no structure of the image).
            let claimed = if dir_size > directory::most_filled(be.nb_bitmaps) {
                dir.len() as u64
            } else {
                dir_size
            };
            self.map.claim(
                &mut self.findings,
                dir_off,
                claimed,
                Owner::BitmapDirectory,
                dir_off,
            );
        }
        let entries = self.parse_directory(&be, &dir, claim)?;
        Ok((Some(be), entries))
    }

    fn parse_directory(
        &mut self,
        be: &BitmapsExt,
        dir: &[u8],
        claim: bool,
    ) -> Result<Vec<DirEntry>, CheckError> {
        let dir_off = be.bitmap_directory_offset;
        // `dir` holds the bytes the entries take (up to the claimed size):
        // every index below is within it.
        let dir_size = be.bitmap_directory_size;
        let mut entries = Vec::new();
        // Names as slices of the directory: one set, no copies.
        let mut names: HashSet<&[u8]> = HashSet::new();
        let mut pos = 0u64;
        let size_field = be.offset + bext::BITMAP_DIRECTORY_SIZE.offset as u64;
        for i in 0..be.nb_bitmaps {
            let at = dir_off + pos;
            if pos >= dir_size {
                self.findings.add_with(
                    Rule::BitmapsExtDirectorySize,
                    size_field,
                    msg!(
                        "bitmap_directory_size is {dir_size}: entry {i} of {} would start at or past its end",
                        be.nb_bitmaps
                    ),
                );
                return Ok(entries);
            }
            if pos + entry::FIXED_LENGTH as u64 > dir_size {
                self.findings.add_with(
                    Rule::BitmapsDirEntryBounds,
                    at,
                    msg!("entry {i}: its 24 fixed bytes run past the end of the directory"),
                );
                return Ok(entries);
            }
            let raw = &dir[pos as usize..];
            let extra_size = entry::EXTRA_DATA_SIZE.get(raw);
            let name_size = entry::NAME_SIZE.get(raw);
            let len = entry::entry_length(extra_size, name_size);
            if pos + len > dir_size {
                self.findings.add_with(
                    Rule::BitmapsDirEntryBounds,
                    at,
                    msg!(
                        "entry {i}: {len} bytes (extra_data_size {extra_size}, name_size {name_size}) run past the end of the directory"
                    ),
                );
                return Ok(entries);
            }
            let fixed = entry::FIXED_LENGTH as u64;
            let extra_end = (fixed + extra_size) as usize;
            let name_end = extra_end + name_size as usize;
            let mut entry = DirEntry {
                offset: at,
                bitmap_table_offset: entry::BITMAP_TABLE_OFFSET.get(raw),
                bitmap_table_size: entry::BITMAP_TABLE_SIZE.get(raw) as u32,
                flags: entry::FLAGS.get(raw) as u32,
                bitmap_type: entry::TYPE.get(raw) as u8,
                granularity_bits: entry::GRANULARITY_BITS.get(raw) as u8,
                name_size: name_size as u16,
                extra_data_size: extra_size as u32,
                raw_fixed: raw[..entry::FIXED_LENGTH].try_into().unwrap_or_default(),
                extra_data: raw[fixed as usize..extra_end].to_vec(),
                name: raw[extra_end..name_end].to_vec(),
                table: None,
            };
            if raw[name_end..len as usize].iter().any(|&b| b != 0) {
                self.findings.add_with(
                    Rule::BitmapsDirPadding,
                    at + name_end as u64,
                    msg!("entry {i}: padding after the name is not zero"),
                );
            }
            let name = &raw[extra_end..name_end];
            if !name.is_empty() && !names.insert(name) {
                self.findings.add_with(
                    Rule::BitmapsDirNameUnique,
                    at + extra_end as u64,
                    msg!(
                        "entry {i}: name {:?} is used by an earlier entry",
                        String::from_utf8_lossy(&entry.name)
                    ),
                );
            }
            self.check_entry(i, &mut entry, claim)?;
            // Entries are kept: a sparse file can hold millions of them.
            let kept = std::mem::size_of::<DirEntry>() as u64 + len;
            self.retain("bitmap directory entry", at, kept)?;
            entries.push(entry);
            pos += len;
        }
        if pos != dir_size {
            let most = directory::most_filled(be.nb_bitmaps);
            let why = if dir_size > most {
                format!(" (at most {most} bytes for {} entries)", be.nb_bitmaps)
            } else {
                String::new()
            };
            self.findings.add_with(
                Rule::BitmapsExtDirectorySize,
                size_field,
                msg!(
                    "bitmap_directory_size is {dir_size}, the {} entries fill {pos} bytes{why}",
                    be.nb_bitmaps
                ),
            );
        }
        Ok(entries)
    }

    fn check_entry(&mut self, i: u32, entry: &mut DirEntry, claim: bool) -> Result<(), CheckError> {
        let at = entry.offset;
        let fat = |f: crate::fields::Field| at + f.offset as u64;
        let flags = u64::from(entry.flags);
        if flags & !entry::FLAGS_KNOWN != 0 {
            self.findings.add_with(
                Rule::BitmapsDirFlagsReserved,
                fat(entry::FLAGS),
                msg!(
                    "entry {i}: flags {flags:#x} has reserved bits {:#x} set",
                    flags & !entry::FLAGS_KNOWN
                ),
            );
        }
        if u64::from(entry.bitmap_type) != entry::TYPE_DIRTY_TRACKING {
            self.findings.add_with(
                Rule::BitmapsDirType,
                fat(entry::TYPE),
                msg!(
                    "entry {i}: type is {}, only 1 (dirty tracking) is defined",
                    entry.bitmap_type
                ),
            );
        }
        let gb = u64::from(entry.granularity_bits);
        if gb > 63 {
            self.findings.add_as_with(
                Rule::BitmapsDirGranularity,
                Severity::Error,
                fat(entry::GRANULARITY_BITS),
                msg!("entry {i}: granularity_bits is {gb}, valid values are 0-63"),
            );
        } else if !(entry::QEMU_MIN_GRANULARITY_BITS..=entry::QEMU_MAX_GRANULARITY_BITS)
            .contains(&gb)
        {
            self.findings.add_as_with(
                Rule::BitmapsDirGranularity,
                Severity::Limit,
                fat(entry::GRANULARITY_BITS),
                msg!("entry {i}: granularity_bits is {gb}, QEMU supports 9-31"),
            );
        }
        if entry.name_size == 0 {
            self.findings.add_with(
                Rule::BitmapsDirNameEmpty,
                fat(entry::NAME_SIZE),
                msg!("entry {i}: name_size is 0"),
            );
        } else if u64::from(entry.name_size) > entry::MAX_QEMU_NAME_SIZE {
            self.findings.add_with(
                Rule::BitmapsDirNameLimit,
                fat(entry::NAME_SIZE),
                msg!(
                    "entry {i}: name_size is {}, QEMU supports at most 1023",
                    entry.name_size
                ),
            );
        }
        if entry.name.contains(&0) || std::str::from_utf8(&entry.name).is_err() {
            self.findings.add_with(
                Rule::BitmapsDirNameBytes,
                at + (entry::FIXED_LENGTH as u64) + u64::from(entry.extra_data_size),
                msg!(
                    "entry {i}: name {:?} contains a NUL byte or is not UTF-8",
                    String::from_utf8_lossy(&entry.name)
                ),
            );
        }
        if entry.extra_data_size > 0 {
            let how = if entry.extra_data_compatible() {
                "extra_data_compatible is set: usable, extra data kept as is"
            } else {
                "extra_data_compatible is clear: the bitmap must not be used"
            };
            self.findings.add_with(
                Rule::BitmapsDirExtraData,
                fat(entry::EXTRA_DATA_SIZE),
                msg!(
                    "entry {i}: extra_data_size is {}; {how}",
                    entry.extra_data_size
                ),
            );
        }
        if entry.in_use() {
            self.findings.add_with(
                Rule::BitmapsDirInUse,
                fat(entry::FLAGS),
                msg!("entry {i}: in_use is set: contents may be stale and must not be used"),
            );
        }
        let geo = entry.geometry(self.h.size, self.h.cluster_bits);
        let needed = if gb <= 63 {
            Some(geo.clusters_needed())
        } else {
            None
        };
        let size = u64::from(entry.bitmap_table_size);
        if let Some(needed) = needed {
            if size < needed && !entry.in_use() {
                self.findings.add_as_with(
                    Rule::BitmapsDirTableSize,
                    Severity::Error,
                    fat(entry::BITMAP_TABLE_SIZE),
                    msg!("entry {i}: bitmap_table_size is {size}, the virtual size {} needs {needed}", self.h.size),
                );
            } else if size > needed && !entry.in_use() {
                // An `in_use` bitmap's size and table may be outdated (the
                // spec's in_use flag: the bitmap was not saved
                // consistently), so a table sized for another disk is
                // what such a bitmap is allowed to have.
                self.findings.add_as_with(
                    Rule::BitmapsDirTableSize,
                    Severity::Unspecified,
                    fat(entry::BITMAP_TABLE_SIZE),
                    msg!("entry {i}: bitmap_table_size is {size}, only {needed} needed"),
                );
            } else if needed == 0 {
                self.findings.add_as_with(
                    Rule::BitmapsDirTableSize,
                    Severity::Unspecified,
                    fat(entry::BITMAP_TABLE_SIZE),
                    msg!("entry {i}: empty bitmap of a zero-size disk"),
                );
            }
        }
        let off = entry.bitmap_table_offset;
        if off == 0 {
            self.findings.add_with(
                Rule::BitmapsDirTableOffsetZero,
                fat(entry::BITMAP_TABLE_OFFSET),
                msg!("entry {i}: bitmap_table_offset is 0"),
            );
            return Ok(());
        }
        if !self.h.aligned(off) {
            self.findings.add_with(
                Rule::BitmapsDirTableAlignment,
                fat(entry::BITMAP_TABLE_OFFSET),
                msg!("entry {i}: bitmap_table_offset {off:#x} is not cluster aligned"),
            );
            return Ok(());
        }
        let bytes = size * 8;
        if !claim {
            // An ignored extension is listed, not validated: its tables
            // are not read.
            return Ok(());
        }
        if !self.img.contains(off, bytes) {
            self.findings.add_with(
                Rule::BitmapsTableBounds,
                fat(entry::BITMAP_TABLE_OFFSET),
                msg!(
                    "entry {i}: bitmap table at {off:#x} ({size} entries) runs past the end of the file ({} bytes)",
                    self.img.len()
                ),
            );
            return Ok(());
        }
        let claimed = self.map.claim(
            &mut self.findings,
            off,
            bytes,
            Owner::BitmapTable,
            fat(entry::BITMAP_TABLE_OFFSET),
        );
        if claimed.shared {
            // Overlap reported; a table on another structure's clusters is
            // not walked, which bounds the work by the file's size.
            return Ok(());
        }
        // Kept for the contents: counted against the model's budget.
        self.retain("bitmap table", off, bytes)?;
        let table = crate::io::read_u64_table(&mut self.img, "bitmap table", off, size)?
            .unwrap_or_default();
        let cs = self.h.cluster_size();
        let mut tail_buf = Vec::new();
        for (j, &te) in table.iter().enumerate() {
            let eat = off + 8 * j as u64;
            if te & table_entry::RESERVED_MASK != 0 {
                self.findings.add_with(
                    Rule::BitmapsTableReservedBits,
                    eat,
                    msg!(
                        "entry {i}, table entry {j} is {te:#018x}: reserved bits {:#x} set",
                        te & table_entry::RESERVED_MASK
                    ),
                );
            }
            let host = te & table_entry::OFFSET_MASK;
            if host == 0 {
                continue;
            }
            if te & table_entry::ALL_ONES != 0 {
                self.findings.add_with(
                    Rule::BitmapsTableAllOnesWithOffset,
                    eat,
                    msg!("entry {i}, table entry {j} is {te:#018x}: bit 0 set together with an offset"),
                );
            }
            if !self.h.aligned(host) {
                self.findings.add_with(
                    Rule::BitmapsTableEntryAlignment,
                    eat,
                    msg!(
                        "entry {i}, table entry {j}: data offset {host:#x} is not cluster aligned"
                    ),
                );
                continue;
            }
            // The bytes of this cluster the bitmap uses must be in the file.
            let used = if (j as u64) < needed.unwrap_or(0) {
                cs.min(geo.nbytes() - j as u64 * cs)
            } else {
                1
            };
            if !self.img.contains(host, used) {
                self.findings.add_with(
                    Rule::BitmapsDataBounds,
                    eat,
                    msg!("entry {i}, table entry {j}: data cluster at {host:#x} lies past the end of the file"),
                );
                continue;
            }
            // A short last cluster is fine as long as the used bytes exist.
            self.map
                .claim(&mut self.findings, host, cs, Owner::BitmapData, eat);
            if Some(j as u64 + 1) == needed && !entry.in_use() {
                self.check_tail_bits(i, j, host, geo, &mut tail_buf)?;
            }
        }
        entry.table = Some(table);
        Ok(())
    }

    /// Spec "Bitmap data": bits past `nbits` in the last data cluster are zero.
    fn check_tail_bits(
        &mut self,
        i: u32,
        j: usize,
        host: u64,
        geo: Geometry,
        buf: &mut Vec<u8>,
    ) -> Result<(), CheckError> {
        let cs = self.h.cluster_size();
        let first_bit = geo.nbits() - j as u64 * cs * 8; // first unused bit in this cluster
        let avail = self.img.len().saturating_sub(host).min(cs);
        let start_byte = first_bit / 8;
        if start_byte >= avail {
            return Ok(());
        }
        buf.resize((avail - start_byte) as usize, 0);
        self.img.read_into(host + start_byte, buf)?;
        let partial = first_bit % 8;
        let first_mask = if partial == 0 {
            0xff
        } else {
            0xffu8 << partial
        };
        let bad = if buf.first().is_some_and(|b| b & first_mask != 0) {
            Some(0)
        } else {
            buf.get(1..)
                .and_then(crate::zeros::first_nonzero)
                .map(|k| k + 1)
        };
        if let Some(k) = bad {
            self.findings.add_with(
                Rule::BitmapsDataTailBits,
                host + start_byte + k as u64,
                msg!(
                    "entry {i}: bits past nbits = {} are set in the last data cluster at {host:#x}",
                    geo.nbits()
                ),
            );
        }
        Ok(())
    }
}

/// True when any bitmaps-scoped error makes the whole extension unusable.
pub fn extension_invalid(findings: &Findings) -> bool {
    findings.bitmaps_invalid()
}
