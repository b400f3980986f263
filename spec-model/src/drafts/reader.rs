//! What the draft readers share: the state of one read ([`Reader`]: the
//! image, the findings under the draft catalogue, the work budget, the
//! structures' extents and the dump being filled in), the qcow2 header of
//! the qcow2-based drafts, their header extensions (the final spec's
//! walk), one bitmap's table and contents, and the dump a read ends in.

use super::content::{digest, runs, tail_bits_set, Budget, Geo, Slot, MAX_CONTENT_BYTES};
use super::extents::{Extents, Owner};
use super::rules::DraftRule;
use super::{DraftBitmap, DraftDump, DraftFinding};
use crate::extensions::{walk, Extension, Overrun};
use crate::fields::bitmap_table_entry as table_entry;
use crate::finding::Findings;
use crate::io::{CheckError, Image};
use crate::report::{Contents, Verdict};
use crate::revision::Revision;
use crate::rules::Severity;
use std::io::{Read, Seek};

/// One read of an image under a draft.
pub(crate) struct Reader<'a, R> {
    pub img: &'a mut Image<R>,
    pub findings: Findings<DraftRule>,
    pub budget: Budget,
    /// Set by [`Reader::set_cluster_bits`] once the header is read.
    pub cluster_bits: u32,
    pub extents: Extents,
    /// The dump as far as it is known; [`Reader::finish`] adds the
    /// findings, the verdict and each bitmap's `usable`.
    pub dump: DraftDump,
}

/// How a draft's bitmap table entries read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableFormat {
    /// The 2014 drafts' one-level "L1" table of standard cluster
    /// descriptors: bit 0 (or no offset) reads as zeros; a table of no
    /// entries may have any offset.
    L1,
    /// The bitmap table of `rfc-v5-2015` and later (the final format's):
    /// with no offset, bit 0 reads as all ones.
    Bitmap,
}

impl TableFormat {
    fn offset_name(self) -> &'static str {
        match self {
            TableFormat::L1 => "l1_table_offset",
            TableFormat::Bitmap => "bitmap_table_offset",
        }
    }
    fn table_name(self) -> &'static str {
        match self {
            TableFormat::L1 => "L1 table",
            TableFormat::Bitmap => "table",
        }
    }
    fn entry_name(self) -> &'static str {
        match self {
            TableFormat::L1 => "L1 entry",
            TableFormat::Bitmap => "table entry",
        }
    }
}

/// The qcow2 header fields the qcow2-based drafts need.
pub(crate) struct Qcow2Base {
    pub version: u32,
    pub size: u64,
    pub header_length: u64,
    pub autoclear: u64,
    /// Where header extensions start.
    pub ext_start: u64,
    /// The header bytes (up to header_length, clipped to the file).
    pub raw: Vec<u8>,
}

/// Directory entries a draft reader keeps at most (QEMU's own limit on
/// bitmaps per image is 65535): past it the read stops with
/// [`CheckError::Limit`], so that a sparse file of zeros cannot make the
/// reader list billions of entries.
pub(crate) const MAX_DRAFT_ENTRIES: usize = 1 << 16;

impl<'a, R: Read + Seek> Reader<'a, R> {
    /// Refuses entry number `i` (at `at`) past [`MAX_DRAFT_ENTRIES`].
    pub(crate) fn room_for_entry(&self, at: u64) -> Result<(), CheckError> {
        if self.dump.bitmaps.len() >= MAX_DRAFT_ENTRIES {
            return Err(CheckError::TooMany {
                structure: "bitmap directory",
                offset: at,
                limit: MAX_DRAFT_ENTRIES as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn new(img: &'a mut Image<R>, revision: Revision) -> Self {
        let file_length = img.len();
        Reader {
            img,
            findings: Findings::default(),
            budget: Budget::for_file(file_length),
            cluster_bits: 0,
            extents: Extents::new(0),
            dump: DraftDump {
                revision,
                file_length,
                cluster_size: None,
                header: Vec::new(),
                extensions: Vec::new(),
                bitmaps_extension: None,
                bitmaps: Vec::new(),
                findings: Vec::new(),
                verdict: Verdict::Valid,
            },
        }
    }

    /// The cluster size is known: the header cluster is the first extent.
    pub(crate) fn set_cluster_bits(&mut self, cluster_bits: u32) {
        self.cluster_bits = cluster_bits;
        self.dump.cluster_size = Some(1 << cluster_bits);
        self.extents = Extents::new(cluster_bits);
        self.extents.add(0, 1 << cluster_bits, Owner::Header);
    }

    pub(crate) fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Ends the read: reports structures that share a cluster, marks each
    /// bitmap usable when no error was found, its contents were computed
    /// and `usable_alone(index)` holds, and builds the dump.
    pub(crate) fn finish(mut self, usable_alone: impl Fn(usize) -> bool) -> DraftDump {
        let extents = std::mem::replace(&mut self.extents, Extents::new(0));
        extents.report(&mut self.findings);
        let clean = !self.findings.any_error(|_| true);
        let mut dump = self.dump;
        for (i, b) in dump.bitmaps.iter_mut().enumerate() {
            b.usable = clean && usable_alone(i) && b.contents.content_sha256.is_some();
        }
        let found = self.findings.into_sorted();
        dump.verdict = Verdict::of(&found);
        let prefix = dump.revision.as_str();
        dump.findings = found
            .into_iter()
            .map(|f| DraftFinding {
                rule: format!("draft.{prefix}.{}", f.rule.id()),
                severity: f.severity,
                offset: f.offset,
                message: f.message.to_string(),
            })
            .collect();
        dump
    }

    /// Reads the qcow2 header of a qcow2-based draft into the dump's header
    /// and sets the cluster size. `None` (with a `header.*` error) when the
    /// file is not a qcow2 image the draft could apply to.
    pub(crate) fn qcow2_base(&mut self) -> Result<Option<Qcow2Base>, CheckError> {
        use crate::fields::header as hdr;
        let head = self.img.read_clipped(0, hdr::V3_MIN_LENGTH as u64)?;
        if head.len() < 8 || hdr::MAGIC.get(&head) != 0x5146_49fb {
            self.findings.add(
                DraftRule::HeaderMagic,
                0,
                "not a qcow2 image (magic is not QFI\\xfb), so it cannot hold this draft's bitmaps",
            );
            return Ok(None);
        }
        let version = hdr::VERSION.get(&head) as u32;
        let fixed = match version {
            2 => hdr::V2_LENGTH,
            3 => hdr::V3_MIN_LENGTH,
            _ => {
                self.findings.add_with(
                    DraftRule::HeaderVersion,
                    hdr::VERSION.offset as u64,
                    msg!("qcow2 version {version}, expected 2 or 3"),
                );
                return Ok(None);
            }
        };
        if head.len() < fixed {
            self.findings.add_with(
                DraftRule::HeaderTruncated,
                0,
                msg!("the file ends inside the {fixed}-byte version {version} header"),
            );
            return Ok(None);
        }
        let cluster_bits = hdr::CLUSTER_BITS.get(&head);
        if !(9..=62).contains(&cluster_bits) {
            self.findings.add_with(
                DraftRule::HeaderClusterBits,
                hdr::CLUSTER_BITS.offset as u64,
                msg!("cluster_bits is {cluster_bits}, expected 9-62"),
            );
            return Ok(None);
        }
        let cluster_bits = cluster_bits as u32;
        let (header_length, autoclear, ext_start) = if version == 3 {
            let hl = hdr::HEADER_LENGTH.get(&head);
            (hl, hdr::AUTOCLEAR_FEATURES.get(&head), hl.max(fixed as u64))
        } else {
            (fixed as u64, 0, fixed as u64)
        };
        self.set_cluster_bits(cluster_bits);
        let raw = self
            .img
            .read_clipped(0, header_length.max(fixed as u64).min(self.cluster_size()))?;
        let mut table: Vec<crate::fields::Field> = hdr::V2.to_vec();
        if version == 3 {
            table.extend_from_slice(hdr::V3);
        }
        self.dump.header = crate::dump::values(0, &table, &raw);
        Ok(Some(Qcow2Base {
            version,
            size: hdr::SIZE.get(&head),
            header_length,
            autoclear,
            ext_start,
            raw,
        }))
    }

    /// Walks the header extensions from `start` (the final spec's walk),
    /// reporting an overrun as `ext.bounds`.
    pub(crate) fn extensions(&mut self, start: u64) -> Result<Vec<Extension>, CheckError> {
        let (list, overrun) = walk(self.img, start, self.cluster_size(), |_, _, _| {})?;
        if let Some(Overrun {
            offset: pos,
            ext,
            limit,
        }) = overrun
        {
            match ext {
                None => self.findings.add_with(
                    DraftRule::ExtBounds,
                    pos,
                    msg!("extension header at {pos:#x} runs past {limit:#x} (first cluster or file end)"),
                ),
                Some((ext_type, length)) => self.findings.add_with(
                    DraftRule::ExtBounds,
                    pos,
                    msg!("extension {ext_type:#010x} of length {length} at {pos:#x} runs past {limit:#x} (first cluster or file end)"),
                ),
            }
        }
        Ok(list)
    }

    /// Locates and reads bitmap `idx`'s table of `size` entries at `off`
    /// (its directory entry at `at`), reporting what breaks the draft's
    /// rules. The slots, or `None` when the table cannot be read.
    /// `zero_note` ends the message of a table at offset 0.
    pub(crate) fn table(
        &mut self,
        format: TableFormat,
        idx: usize,
        at: u64,
        off: u64,
        size: u64,
        zero_note: &str,
    ) -> Result<Option<Vec<Slot>>, CheckError> {
        let cs = self.cluster_size();
        let (offset_name, table_name) = (format.offset_name(), format.table_name());
        if size == 0 && format == TableFormat::L1 {
            return Ok(Some(Vec::new()));
        }
        if off == 0 {
            self.findings.add_with(
                DraftRule::DirTableOffsetZero,
                at,
                msg!("bitmap {idx}: {offset_name} is 0 with {size} entries (the table would be the header){zero_note}"),
            );
            return Ok(None);
        }
        if !off.is_multiple_of(cs) {
            self.findings.add_with(
                DraftRule::DirTableAlignment,
                at,
                msg!("bitmap {idx}: {offset_name} {off:#x} is not cluster aligned"),
            );
            return Ok(None);
        }
        if size == 0 {
            return Ok(Some(Vec::new()));
        }
        if !self.img.contains(off, size * 8) {
            self.findings.add_with(
                DraftRule::TableBounds,
                at,
                msg!("bitmap {idx}: {table_name} at {off:#x} ({size} entries) runs past the end of the file"),
            );
            return Ok(None);
        }
        if !self.budget.take_entries(size) {
            self.findings.add_as_with(
                DraftRule::WorkLimit,
                Severity::Limit,
                at,
                msg!("bitmap {idx}: table not read, the file's table-entry budget is spent"),
            );
            return Ok(None);
        }
        let raw = self
            .img
            .read_structure("bitmap table", off, size * 8)?
            .unwrap_or_default();
        self.extents.add(off, size * 8, Owner::Table(idx));
        let mut slots = Vec::with_capacity(raw.len() / 8);
        for (j, e) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(e.try_into().unwrap_or_default());
            slots.push(self.entry(format, idx, j, off + 8 * j as u64, e));
        }
        Ok(Some(slots))
    }

    /// What table entry `j` (value `e`, at `eat`) of bitmap `idx` stands
    /// for. An "L1" entry is a standard cluster descriptor with bits 62-63
    /// reserved: its masks are the bitmap table entry's, only bit 0 reads
    /// differently.
    fn entry(&mut self, format: TableFormat, idx: usize, j: usize, eat: u64, e: u64) -> Slot {
        let cs = self.cluster_size();
        let entry_name = format.entry_name();
        let host = e & table_entry::OFFSET_MASK;
        let bit0 = e & table_entry::ALL_ONES != 0;
        if e & table_entry::RESERVED_MASK != 0 {
            self.findings.add_with(
                DraftRule::TableReservedBits,
                eat,
                msg!("bitmap {idx}: {entry_name} {j} is {e:#018x}, reserved bits set"),
            );
            Slot::Invalid(e)
        } else if format == TableFormat::Bitmap && host != 0 && bit0 {
            self.findings.add_with(
                DraftRule::TableAllOnesWithOffset,
                eat,
                msg!("bitmap {idx}: table entry {j} is {e:#018x}: bit 0 with an offset"),
            );
            Slot::Invalid(e)
        } else if host == 0 || (format == TableFormat::L1 && bit0) {
            if format == TableFormat::Bitmap && bit0 {
                Slot::Ones
            } else {
                Slot::Zeros
            }
        } else if !host.is_multiple_of(cs) {
            self.findings.add_with(
                DraftRule::TableEntryAlignment,
                eat,
                msg!("bitmap {idx}: {entry_name} {j} offset {host:#x} is not cluster aligned"),
            );
            Slot::Invalid(e)
        } else if !self.img.contains(host, cs) {
            self.findings.add_with(
                DraftRule::DataBounds,
                eat,
                msg!("bitmap {idx}: data cluster {j} at {host:#x} runs past the end of the file"),
            );
            Slot::Invalid(e)
        } else {
            self.extents.add(host, cs, Owner::Data(idx, j as u64));
            Slot::Data(host)
        }
    }

    /// Fills in `b`'s table runs and, when the table was read (`slots`),
    /// the granularity is valid (`geo`) and the slots cover the bitmap's
    /// data, its contents, reporting set tail bits with `tail` (an error in
    /// the drafts that forbid them, unspecified in those silent on them).
    pub(crate) fn data(
        &mut self,
        idx: usize,
        at: u64,
        geo: Option<Geo>,
        slots: Option<&[Slot]>,
        tail: Severity,
        b: &mut DraftBitmap,
    ) -> Result<(), CheckError> {
        b.table = runs(slots.unwrap_or_default(), self.cluster_size());
        let (Some(geo), Some(slots)) = (geo, slots) else {
            return Ok(());
        };
        if (slots.len() as u128) < geo.needed() {
            return Ok(());
        }
        if let Some(off) = tail_bits_set(self.img, geo, slots)? {
            let why = if tail == Severity::Error {
                "in its last data cluster"
            } else {
                "(cleared when read)"
            };
            self.findings.add_as_with(
                DraftRule::DataTailBits,
                tail,
                off,
                msg!("bitmap {idx}: bits past the bitmap's end are set {why}"),
            );
        }
        self.content(idx, at, geo, slots, b)
    }

    /// Computes `b`'s contents from `slots` when the work budget allows.
    pub(crate) fn content(
        &mut self,
        idx: usize,
        at: u64,
        geo: Geo,
        slots: &[Slot],
        b: &mut DraftBitmap,
    ) -> Result<(), CheckError> {
        let nbytes = geo.nbytes();
        if nbytes > u128::from(MAX_CONTENT_BYTES) || !self.budget.take_bytes(nbytes as u64) {
            self.findings.add_as_with(
                DraftRule::WorkLimit,
                Severity::Limit,
                at,
                msg!("bitmap {idx}: {nbytes} data bytes, contents not computed (work limit)"),
            );
            return Ok(());
        }
        if let Some((sha, set)) = digest(self.img, geo, slots)? {
            b.contents = Contents {
                set_bits: Some(set),
                content_sha256: Some(sha),
            };
        }
        Ok(())
    }
}
