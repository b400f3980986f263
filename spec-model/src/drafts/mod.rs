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
//! length justifies, and bounded work (see [`Budget`]).
//!
//! Draft rule IDs are plain strings `draft.<revision>.<rule>`, e.g.
//! `draft.header-fields-2014.alignment`.

mod extdir;
pub mod fields;
mod l1dir;

use crate::bitmaps::ExtensionState;
use crate::io::{CheckError, Image};
use crate::report::Verdict;
use crate::revision::Revision;
use crate::rules::Severity;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Seek};

/// One field of a draft structure with its absolute file offset and value
/// (the same shape as a final-format dump's fields).
pub type DraftField = crate::dump::FieldValue;

/// One broken (or noteworthy) draft rule at one file offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftFinding {
    /// `draft.<revision>.<rule>`.
    pub rule: String,
    pub severity: Severity,
    pub offset: u64,
    pub message: String,
}

/// A header extension found by a draft reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftExtension {
    pub offset: u64,
    #[serde(rename = "type")]
    pub ext_type: String,
    pub type_name: &'static str,
    pub length: u32,
    pub fields: Vec<DraftField>,
}

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
    /// Set bits and SHA-256 of the `ceil(nbits / 8)` data bytes (bits LSB
    /// first, bits past `nbits` cleared), whenever this bitmap's own
    /// table and data can be read, even if `usable` is false.
    pub set_bits: Option<u64>,
    pub content_sha256: Option<String>,
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

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The human form of a draft dump.
pub fn render(d: &DraftDump) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "revision: {}", d.revision.as_str());
    let _ = writeln!(o, "file length: {} bytes", d.file_length);
    if let Some(cs) = d.cluster_size {
        let _ = writeln!(o, "cluster size: {cs} bytes");
    }
    let _ = writeln!(o, "\nheader:");
    crate::dump::field_lines(&mut o, "  ", &d.header);
    if !d.extensions.is_empty() {
        let _ = writeln!(o, "\nheader extensions: {}", d.extensions.len());
        for x in &d.extensions {
            let _ = writeln!(
                o,
                "  @{:#x} type {} ({}), length {}",
                x.offset, x.ext_type, x.type_name, x.length
            );
            crate::dump::field_lines(&mut o, "    ", &x.fields);
        }
    }
    if let Some(s) = d.bitmaps_extension {
        let s = match s {
            ExtensionState::Absent => "absent",
            ExtensionState::Consistent => "consistent",
            ExtensionState::Inconsistent => "inconsistent",
        };
        let _ = writeln!(o, "bitmaps extension: {s}");
    }
    let _ = writeln!(o, "\nbitmaps: {}", d.bitmaps.len());
    for b in &d.bitmaps {
        let _ = writeln!(
            o,
            "  @{:#x} bitmap {:?} flags [{}]{}",
            b.entry_offset,
            b.name,
            b.flags.join(", "),
            if b.usable { "" } else { " (not usable)" }
        );
        crate::dump::field_lines(&mut o, "    ", &b.fields);
        if !b.extra_data_hex.is_empty() {
            let _ = writeln!(o, "    extra data: {}", b.extra_data_hex);
        }
        let _ = writeln!(
            o,
            "    granularity {} bytes, covers {} bytes, {} bits",
            opt(&b.granularity),
            opt(&b.size),
            opt(&b.nbits)
        );
        crate::dump::table_lines(&mut o, &b.table);
        let _ = writeln!(
            o,
            "    set bits {}, sha256 {}",
            opt(&b.set_bits),
            opt(&b.content_sha256)
        );
    }
    if !d.findings.is_empty() {
        let _ = writeln!(o, "\nfindings: {}", d.findings.len());
        for f in &d.findings {
            let _ = writeln!(
                o,
                "  {:<12} {} @{:#x}: {}",
                f.severity.as_str(),
                f.rule,
                f.offset,
                f.message
            );
        }
    }
    let _ = writeln!(
        o,
        "\nverdict under {}: {}",
        d.revision.as_str(),
        d.verdict.as_str()
    );
    o
}

// ---------------------------------------------------------------------------
// Shared machinery of the readers.

/// At most this many findings of one rule are kept.
const MAX_PER_RULE: u32 = 64;

/// Bitmap data bytes hashed per bitmap at most; larger bitmaps get a
/// `work-limit` finding and no contents.
pub const MAX_CONTENT_BYTES: u64 = 64 << 20;

/// Findings of one draft reader, with per-rule caps.
pub(crate) struct Out {
    prefix: &'static str,
    list: Vec<DraftFinding>,
    counts: HashMap<(&'static str, Severity), u32>,
}

impl Out {
    pub(crate) fn new(revision: Revision) -> Out {
        Out {
            prefix: revision.as_str(),
            list: Vec::new(),
            counts: HashMap::new(),
        }
    }

    pub(crate) fn add(
        &mut self,
        rule: &'static str,
        severity: Severity,
        offset: u64,
        message: impl Into<String>,
    ) {
        let n = self.counts.entry((rule, severity)).or_insert(0);
        *n += 1;
        if *n <= MAX_PER_RULE {
            self.list.push(DraftFinding {
                rule: format!("draft.{}.{rule}", self.prefix),
                severity,
                offset,
                message: message.into(),
            });
        }
    }

    pub(crate) fn error(&mut self, rule: &'static str, offset: u64, message: impl Into<String>) {
        self.add(rule, Severity::Error, offset, message)
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.counts.keys().any(|(_, s)| *s == Severity::Error)
    }

    pub(crate) fn finish(mut self) -> (Vec<DraftFinding>, Verdict) {
        let mut extra = Vec::new();
        for ((rule, sev), n) in &self.counts {
            if *n > MAX_PER_RULE {
                extra.push(DraftFinding {
                    rule: format!("draft.{}.{rule}", self.prefix),
                    severity: *sev,
                    offset: u64::MAX,
                    message: format!("{} more findings of this rule not listed", n - MAX_PER_RULE),
                });
            }
        }
        // The counts come out in hash order: the summaries of one rule at
        // two severities are put in severity order, so the output is stable.
        extra.sort_by_key(|f| f.severity as u8);
        self.list.extend(extra);
        self.list
            .sort_by(|a, b| (a.offset, &a.rule).cmp(&(b.offset, &b.rule)));
        let verdict = if self.list.iter().any(|f| f.severity == Severity::Error) {
            Verdict::Invalid
        } else if self
            .list
            .iter()
            .any(|f| f.severity == Severity::Unspecified)
        {
            Verdict::Unspecified
        } else {
            Verdict::Valid
        };
        (self.list, verdict)
    }
}

/// Work budget of one read, proportional to the file's length, so that a
/// hostile file (many entries sharing one huge table, tables of
/// unallocated entries standing for terabytes of zeros) cannot make the
/// reader run for long.
pub(crate) struct Budget {
    table_entries: u64,
    content_bytes: u64,
}

impl Budget {
    pub(crate) fn for_file(len: u64) -> Budget {
        Budget {
            table_entries: (len / 8).saturating_mul(4).saturating_add(1 << 20),
            content_bytes: len.saturating_mul(8).saturating_add(256 << 20),
        }
    }

    pub(crate) fn take_entries(&mut self, n: u64) -> bool {
        if n > self.table_entries {
            return false;
        }
        self.table_entries -= n;
        true
    }

    pub(crate) fn take_bytes(&mut self, n: u64) -> bool {
        if n > self.content_bytes {
            return false;
        }
        self.content_bytes -= n;
        true
    }
}

/// The fields of `table` that `raw` holds, at `base`.
pub(crate) fn values(base: u64, table: &[crate::fields::Field], raw: &[u8]) -> Vec<DraftField> {
    table
        .iter()
        .filter(|f| f.end() <= raw.len())
        .map(|f| DraftField {
            name: f.name,
            offset: base.saturating_add(f.offset as u64),
            size: f.size,
            value: f.get(raw),
        })
        .collect()
}

/// A name for reports: lossy UTF-8, plus hex when it is not UTF-8.
pub(crate) fn name_of(raw: &[u8]) -> (String, Option<String>) {
    let utf8 = std::str::from_utf8(raw).is_ok();
    (
        String::from_utf8_lossy(raw).into_owned(),
        (!utf8).then(|| hex::encode(raw)),
    )
}

/// What one table entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Zeros,
    Ones,
    Data(u64),
    /// A broken entry (reserved bits, misaligned, outside the file); the
    /// raw value is kept for the dump.
    Invalid(u64),
}

/// Folds table slots into runs.
pub(crate) fn runs(slots: &[Slot], cluster_size: u64) -> Vec<DraftRun> {
    let mut out: Vec<DraftRun> = Vec::new();
    for (j, s) in slots.iter().enumerate() {
        let j = j as u64;
        let (kind, off) = match *s {
            Slot::Zeros => ("zeros", None),
            Slot::Ones => ("ones", None),
            Slot::Data(h) => ("data", Some(h)),
            Slot::Invalid(v) => ("invalid", Some(v)),
        };
        if let Some(prev) = out.last_mut() {
            let contiguous = match (prev.host_offset, off) {
                (Some(p), Some(o)) => {
                    kind == "data"
                        && (j - prev.first)
                            .checked_mul(cluster_size)
                            .and_then(|d| p.checked_add(d))
                            == Some(o)
                }
                (None, None) => true,
                _ => false,
            };
            if prev.kind == kind && prev.last + 1 == j && contiguous {
                prev.last = j;
                continue;
            }
        }
        out.push(DraftRun {
            first: j,
            last: j,
            kind,
            host_offset: off,
        });
    }
    out
}

/// Sizes of one bitmap, in u128 so that no field value can overflow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geo {
    /// Bytes covered.
    pub size: u128,
    /// Granularity in bytes, at least 1.
    pub granularity: u128,
    pub cluster_bits: u32,
}

impl Geo {
    pub(crate) fn nbits(&self) -> u128 {
        self.size.div_ceil(self.granularity.max(1))
    }
    pub(crate) fn nbytes(&self) -> u128 {
        self.nbits().div_ceil(8)
    }
    pub(crate) fn needed(&self) -> u128 {
        self.nbytes().div_ceil(1u128 << self.cluster_bits.min(126))
    }
}

/// SHA-256 and set-bit count of the data bytes that `slots` describe.
/// `slots` must hold `geo.needed()` valid entries whose data clusters are
/// inside the file, and `geo.nbytes()` must fit the budget already taken.
pub(crate) fn digest<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geo,
    slots: &[Slot],
) -> Result<Option<(String, u64)>, CheckError> {
    const FILL: usize = 64 * 1024;
    let nbits = geo.nbits();
    let nbytes = geo.nbytes();
    if nbytes > u128::from(MAX_CONTENT_BYTES) || geo.cluster_bits > 62 {
        return Ok(None);
    }
    let (nbits, nbytes) = (nbits as u64, nbytes as u64);
    let cs = 1u64 << geo.cluster_bits;
    let tail_mask: Option<u8> = match nbits % 8 {
        0 => None,
        r => Some(((1u16 << r) - 1) as u8),
    };
    let mut hash = Sha256::new();
    let mut set = 0u64;
    let zeros = vec![0u8; FILL];
    let ones = vec![0xffu8; FILL];
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0u64;
    let mut j = 0usize;
    while pos < nbytes {
        let len = cs.min(nbytes - pos);
        let is_last = pos + len == nbytes;
        let Some(&slot) = slots.get(j) else {
            return Ok(None);
        };
        match slot {
            Slot::Zeros | Slot::Ones => {
                let all_ones = slot == Slot::Ones;
                let fill = if all_ones { &ones } else { &zeros };
                // A masked last byte is fed separately.
                let body = if is_last && tail_mask.is_some() {
                    len - 1
                } else {
                    len
                };
                let mut b = body;
                while b > 0 {
                    let k = b.min(FILL as u64) as usize;
                    hash.update(&fill[..k]);
                    b -= k as u64;
                }
                if all_ones {
                    set += body * 8;
                }
                if body < len {
                    let last = if all_ones { 0xff } else { 0 } & tail_mask.unwrap_or(0xff);
                    hash.update([last]);
                    set += u64::from(last.count_ones());
                }
            }
            Slot::Data(host) => {
                if !img.contains(host, len) {
                    return Ok(None);
                }
                buf.resize(len as usize, 0);
                img.read_into(host, &mut buf)?;
                if let (true, Some(mask), Some(last)) = (is_last, tail_mask, buf.last_mut()) {
                    *last &= mask;
                }
                hash.update(&buf);
                set += buf.iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
            }
            Slot::Invalid(_) => return Ok(None),
        }
        pos += len;
        j += 1;
    }
    Ok(Some((hex::encode(hash.finalize()), set)))
}

/// True when a bit past `nbits` is set in the last needed data cluster
/// (read up to the cluster's end, clipped to the file).
pub(crate) fn tail_bits_set<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geo,
    slots: &[Slot],
) -> Result<Option<u64>, CheckError> {
    let needed = geo.needed();
    if needed == 0 || geo.cluster_bits > 62 || needed > slots.len() as u128 {
        return Ok(None);
    }
    let cs = 1u128 << geo.cluster_bits;
    let last = (needed - 1) as usize;
    let Slot::Data(host) = slots[last] else {
        return Ok(None);
    };
    // First byte offset (within the cluster) that holds a bit past nbits.
    let used_bits = geo.nbits() - (needed - 1) * cs * 8;
    let first_byte = (used_bits / 8) as u64;
    let partial = (used_bits % 8) as u32;
    let Some(at) = host.checked_add(first_byte) else {
        return Ok(None);
    };
    let len = (cs as u64).saturating_sub(first_byte);
    let bytes = img.read_clipped(at, len)?;
    for (k, &b) in bytes.iter().enumerate() {
        let b = if k == 0 && partial > 0 {
            b & !(((1u16 << partial) - 1) as u8)
        } else {
            b
        };
        if b != 0 {
            return Ok(Some(at + k as u64));
        }
    }
    Ok(None)
}

/// File areas the draft's structures occupy, checked for sharing a cluster.
pub(crate) struct Extents {
    cluster_bits: u32,
    list: Vec<(u64, u64, Owner)>,
}

/// What an extent holds, for overlap messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner {
    Header,
    Directory,
    Table(usize),
    Data(usize, u64),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Header => write!(f, "the header cluster"),
            Owner::Directory => write!(f, "the directory"),
            Owner::Table(i) => write!(f, "the table of bitmap {i}"),
            Owner::Data(i, j) => write!(f, "data cluster {j} of bitmap {i}"),
        }
    }
}

impl Extents {
    pub(crate) fn new(cluster_bits: u32) -> Extents {
        Extents {
            cluster_bits: cluster_bits.min(63),
            list: Vec::new(),
        }
    }

    /// Records `[offset, offset + len)` (len > 0) as held by `owner`.
    pub(crate) fn add(&mut self, offset: u64, len: u64, owner: Owner) {
        if len == 0 {
            return;
        }
        let last = offset.saturating_add(len - 1);
        self.list.push((
            offset >> self.cluster_bits,
            last >> self.cluster_bits,
            owner,
        ));
    }

    /// Reports every extent that shares a cluster with an earlier one.
    pub(crate) fn report(mut self, out: &mut Out) {
        self.list.sort_by_key(|e| (e.0, e.1));
        let mut reach: Option<(u64, Owner)> = None;
        for &(first, last, owner) in &self.list {
            if let Some((end, other)) = reach {
                if first <= end {
                    out.error(
                        "overlap",
                        first << self.cluster_bits,
                        format!("{owner} shares cluster {first} with {other}"),
                    );
                }
                if last > end {
                    reach = Some((last, owner));
                }
            } else {
                reach = Some((last, owner));
            }
        }
    }
}

/// The qcow2 header fields the qcow2-based drafts need.
pub(crate) struct Qcow2Base {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub header_length: u64,
    pub autoclear: u64,
    /// Where header extensions start.
    pub ext_start: u64,
    /// The header bytes (up to header_length, clipped to the file).
    pub raw: Vec<u8>,
    pub fields: Vec<DraftField>,
}

/// Reads the qcow2 header of a qcow2-based draft. `None` (with an error
/// finding `qcow2-header`) when the file is not a qcow2 image the draft
/// could apply to.
pub(crate) fn qcow2_base<R: Read + Seek>(
    img: &mut Image<R>,
    out: &mut Out,
) -> Result<Option<Qcow2Base>, CheckError> {
    use crate::fields::header as f;
    let head = img.read_clipped(0, f::V3_MIN_LENGTH as u64)?;
    if head.len() < 8 || f::MAGIC.get(&head) != 0x5146_49fb {
        out.error(
            "qcow2-header",
            0,
            "not a qcow2 image (magic is not QFI\\xfb), so it cannot hold this draft's bitmaps",
        );
        return Ok(None);
    }
    let version = f::VERSION.get(&head) as u32;
    let fixed = match version {
        2 => f::V2_LENGTH,
        3 => f::V3_MIN_LENGTH,
        _ => {
            out.error(
                "qcow2-header",
                f::VERSION.offset as u64,
                format!("qcow2 version {version}, expected 2 or 3"),
            );
            return Ok(None);
        }
    };
    if head.len() < fixed {
        out.error(
            "qcow2-header",
            0,
            format!("the file ends inside the {fixed}-byte version {version} header"),
        );
        return Ok(None);
    }
    let cluster_bits = f::CLUSTER_BITS.get(&head);
    if !(9..=62).contains(&cluster_bits) {
        out.error(
            "qcow2-header",
            f::CLUSTER_BITS.offset as u64,
            format!("cluster_bits is {cluster_bits}, expected 9-62"),
        );
        return Ok(None);
    }
    let cluster_bits = cluster_bits as u32;
    let (header_length, autoclear, ext_start) = if version == 3 {
        let hl = f::HEADER_LENGTH.get(&head);
        (hl, f::AUTOCLEAR_FEATURES.get(&head), hl.max(fixed as u64))
    } else {
        (fixed as u64, 0, fixed as u64)
    };
    let cs = 1u64 << cluster_bits;
    let raw = img.read_clipped(0, header_length.max(fixed as u64).min(cs))?;
    let mut table: Vec<crate::fields::Field> = f::V2.to_vec();
    if version == 3 {
        table.extend_from_slice(f::V3);
    }
    Ok(Some(Qcow2Base {
        version,
        cluster_bits,
        size: f::SIZE.get(&head),
        header_length,
        autoclear,
        ext_start,
        fields: values(0, &table, &raw),
        raw,
    }))
}

/// One header extension as a draft reader finds it.
pub(crate) struct RawExt {
    pub offset: u64,
    pub ext_type: u32,
    pub length: u32,
    pub data: Vec<u8>,
}

/// Walks the header extensions from `start` to the end of the first
/// cluster (or the file), reporting `ext.bounds`. Extensions past a broken
/// one are not read.
pub(crate) fn walk_extensions<R: Read + Seek>(
    img: &mut Image<R>,
    start: u64,
    cluster_size: u64,
    out: &mut Out,
) -> Result<Vec<RawExt>, CheckError> {
    use crate::fields::extension as f;
    let limit = cluster_size.min(img.len());
    let mut pos = start;
    let mut list = Vec::new();
    while pos < cluster_size {
        let prefix_end = pos + f::PREFIX_LENGTH as u64;
        if prefix_end > limit {
            out.error(
                "ext.bounds",
                pos,
                format!(
                    "extension header at {pos:#x} runs past {limit:#x} (first cluster or file end)"
                ),
            );
            break;
        }
        let prefix = img
            .read_checked(pos, f::PREFIX_LENGTH as u64)?
            .unwrap_or_default();
        let ext_type = f::TYPE.get(&prefix) as u32;
        let length = f::LENGTH.get(&prefix) as u32;
        if ext_type == f::END {
            break;
        }
        let padded = u64::from(length).div_ceil(8) * 8;
        if prefix_end + padded > limit {
            out.error(
                "ext.bounds",
                pos,
                format!(
                    "extension {ext_type:#010x} of length {length} at {pos:#x} runs past {limit:#x} (first cluster or file end)"
                ),
            );
            break;
        }
        let data = img
            .read_checked(prefix_end, u64::from(length))?
            .unwrap_or_default();
        list.push(RawExt {
            offset: pos,
            ext_type,
            length,
            data,
        });
        pos = prefix_end + padded;
    }
    Ok(list)
}

/// Computes `b`'s contents from `slots` when the work budget allows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn content<R: Read + Seek>(
    img: &mut Image<R>,
    out: &mut Out,
    budget: &mut Budget,
    idx: usize,
    at: u64,
    geo: Geo,
    slots: &[Slot],
    b: &mut DraftBitmap,
) -> Result<(), CheckError> {
    let nbytes = geo.nbytes();
    if nbytes > u128::from(MAX_CONTENT_BYTES) || !budget.take_bytes(nbytes as u64) {
        out.add(
            "work-limit",
            Severity::Limit,
            at,
            format!("bitmap {idx}: {nbytes} data bytes, contents not computed (work limit)"),
        );
        return Ok(());
    }
    if let Some((sha, set)) = digest(img, geo, slots)? {
        b.set_bits = Some(set);
        b.content_sha256 = Some(sha);
    }
    Ok(())
}
