//! `dump`: every structure field by field, read through the same field
//! tables as the parser, plus table runs and a cluster-usage summary.

use crate::bitmaps::DirEntry;
use crate::check::Analysis;
use crate::fields::{self, bitmap_table_entry as table_entry, extension as ext, Field};
use crate::mapping::MappingStats;
use crate::refcount::RefcountStats;
use crate::report::Report;
use serde::Serialize;
use std::fmt::Write as _;

/// One field with its absolute file offset and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldValue {
    pub name: &'static str,
    pub offset: u64,
    pub size: usize,
    pub value: u64,
}

/// The fields of `table` that `raw` (the structure's bytes, read at file
/// offset `base`) holds in full. Also the draft readers' field lister.
pub(crate) fn values(base: u64, table: &[Field], raw: &[u8]) -> Vec<FieldValue> {
    table
        .iter()
        .filter(|f| f.end() <= raw.len())
        .map(|f| FieldValue {
            name: f.name,
            offset: base.saturating_add(f.offset as u64),
            size: f.size,
            value: f.get(raw),
        })
        .collect()
}

/// A header extension (also as a draft reader finds it, with no text or
/// features).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionDump {
    pub offset: u64,
    #[serde(rename = "type")]
    pub ext_type: String,
    pub type_name: &'static str,
    pub length: u32,
    /// Decoded data fields, for extensions with a field table.
    pub fields: Vec<FieldValue>,
    /// Text, for the backing format and external data file names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Feature name table rows: (type, bit, name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<(u8, u8, String)>,
}

/// A run of consecutive bitmap table entries of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRun {
    pub first: u64,
    pub last: u64,
    /// `zeros`, `ones` or `data` (contiguous data clusters), `invalid`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_offset: Option<u64>,
}

/// A bitmap directory entry with its table.
#[derive(Debug, Serialize)]
pub struct EntryDump {
    pub offset: u64,
    pub name: String,
    pub fields: Vec<FieldValue>,
    pub flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub extra_data_hex: String,
    pub table: Vec<TableRun>,
}

/// A snapshot table entry.
#[derive(Debug, Serialize)]
pub struct SnapshotDump {
    pub offset: u64,
    pub id: String,
    pub name: String,
    pub fields: Vec<FieldValue>,
    pub disk_size: Option<u64>,
}

/// Everything `dump` prints.
#[derive(Debug, Serialize)]
pub struct Dump {
    pub file_length: u64,
    pub header: Vec<FieldValue>,
    pub extensions: Vec<ExtensionDump>,
    pub bitmap_directory: Vec<EntryDump>,
    pub snapshots: Vec<SnapshotDump>,
    pub mapping: MappingStats,
    pub refcounts: RefcountStats,
    pub cluster_usage: Vec<(String, u64)>,
    pub check: Report,
}

/// Folds a bitmap table into runs.
pub fn table_runs(table: &[u64], cluster_size: u64) -> Vec<TableRun> {
    fold_runs(
        table.iter().map(|&e| {
            let host = e & table_entry::OFFSET_MASK;
            if e & table_entry::RESERVED_MASK != 0 || (host != 0 && e & table_entry::ALL_ONES != 0)
            {
                ("invalid", Some(e))
            } else if host != 0 {
                ("data", Some(host))
            } else if e & table_entry::ALL_ONES != 0 {
                ("ones", None)
            } else {
                ("zeros", None)
            }
        }),
        cluster_size,
    )
}

/// Folds table entries, each classified as a kind (`zeros`, `ones`,
/// `data` with its host offset, `invalid` with its raw value), into runs
/// of one kind; a `data` run holds contiguous clusters. Also the draft
/// readers' (whose entries are classified by each draft's rules).
pub(crate) fn fold_runs(
    entries: impl Iterator<Item = (&'static str, Option<u64>)>,
    cluster_size: u64,
) -> Vec<TableRun> {
    let mut runs: Vec<TableRun> = Vec::new();
    for (j, (kind, off)) in entries.enumerate() {
        let j = j as u64;
        if let Some(prev) = runs.last_mut() {
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
        runs.push(TableRun {
            first: j,
            last: j,
            kind,
            host_offset: off,
        });
    }
    runs
}

fn entry_dump(e: &DirEntry, cluster_size: u64) -> EntryDump {
    let mut flags = Vec::new();
    if e.in_use() {
        flags.push("in_use");
    }
    if e.auto() {
        flags.push("auto");
    }
    if e.extra_data_compatible() {
        flags.push("extra_data_compatible");
    }
    EntryDump {
        offset: e.offset,
        name: String::from_utf8_lossy(&e.name).into_owned(),
        fields: values(e.offset, fields::bitmap_entry::FIELDS, &e.raw_fixed),
        flags,
        extra_data_hex: hex::encode(&e.extra_data),
        table: e
            .table
            .as_deref()
            .map(|tb| table_runs(tb, cluster_size))
            .unwrap_or_default(),
    }
}

fn extension_dump(x: &crate::extensions::Extension) -> ExtensionDump {
    let table: &[Field] = match x.ext_type {
        ext::BITMAPS => fields::bitmaps_ext::FIELDS,
        ext::ENCRYPTION => fields::encryption::FIELDS,
        _ => &[],
    };
    let text = matches!(x.ext_type, ext::BACKING_FORMAT | ext::EXTERNAL_DATA_FILE)
        .then(|| String::from_utf8_lossy(&x.data).into_owned());
    let features = if x.ext_type == ext::FEATURE_NAME_TABLE {
        x.data
            .chunks_exact(48)
            .map(|row| {
                let name = &row[2..];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                (
                    row[0],
                    row[1],
                    String::from_utf8_lossy(&name[..end]).into_owned(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    ExtensionDump {
        text,
        features,
        ..ExtensionDump::new(x, table)
    }
}

impl ExtensionDump {
    /// Extension `x` with its data decoded through `table` (no text, no
    /// features): the draft readers' form, which the final dump extends.
    pub(crate) fn new(x: &crate::extensions::Extension, table: &[Field]) -> ExtensionDump {
        ExtensionDump {
            offset: x.offset,
            ext_type: format!("{:#010x}", x.ext_type),
            type_name: x.type_name,
            length: x.length,
            fields: values(x.data_offset(), table, &x.data),
            text: None,
            features: Vec::new(),
        }
    }
}

/// Writes an extension's heading line, its fields, text and features.
pub(crate) fn extension_lines(out: &mut String, x: &ExtensionDump) {
    let _ = writeln!(
        out,
        "  @{:#x} type {} ({}), length {}",
        x.offset, x.ext_type, x.type_name, x.length
    );
    field_lines(out, "    ", &x.fields);
    if let Some(t) = &x.text {
        let _ = writeln!(out, "    text: {t:?}");
    }
    for (ty, bit, name) in &x.features {
        let _ = writeln!(out, "    feature type {ty} bit {bit}: {name}");
    }
}

/// Builds the dump of an analysis.
pub fn dump(a: &Analysis) -> Dump {
    let cs = a.header.as_ref().map(|h| h.cluster_size()).unwrap_or(512);
    let header = a
        .header
        .as_ref()
        .map(|h| {
            let mut table: Vec<Field> = fields::header::V2.to_vec();
            if h.version == 3 {
                table.extend_from_slice(fields::header::V3);
                if h.header_length as usize > fields::header::COMPRESSION_TYPE.offset {
                    table.push(fields::header::COMPRESSION_TYPE);
                }
            }
            values(0, &table, &h.raw)
        })
        .unwrap_or_default();
    Dump {
        file_length: a.file_len,
        header,
        extensions: a.extensions.iter().map(extension_dump).collect(),
        bitmap_directory: a.entries.iter().map(|e| entry_dump(e, cs)).collect(),
        snapshots: a
            .snapshots
            .iter()
            .map(|s| SnapshotDump {
                offset: s.offset,
                id: s.id.clone(),
                name: s.name.clone(),
                fields: values(s.offset, fields::snapshot::FIELDS, &s.raw_fixed),
                disk_size: s.disk_size,
            })
            .collect(),
        mapping: a.mapping.clone(),
        refcounts: a.refcounts.clone(),
        cluster_usage: a
            .usage
            .iter()
            .map(|(o, n)| (o.name().to_string(), *n))
            .collect(),
        check: a.report.clone(),
    }
}

/// Writes one line per field: name, offset, width and value.
pub(crate) fn field_lines(out: &mut String, indent: &str, fields: &[FieldValue]) {
    for f in fields {
        let _ = writeln!(
            out,
            "{indent}{:<26} @{:#08x} [{}] = {} ({:#x})",
            f.name, f.offset, f.size, f.value, f.value
        );
    }
}

/// Writes one line per run of bitmap table entries.
pub(crate) fn table_lines(out: &mut String, runs: &[TableRun]) {
    for r in runs {
        let span = if r.first == r.last {
            format!("entry {}", r.first)
        } else {
            format!("entries {}-{}", r.first, r.last)
        };
        let _ = match (r.kind, r.host_offset) {
            ("data", Some(h)) => writeln!(out, "    table {span}: data clusters from {h:#x}"),
            ("invalid", Some(v)) => writeln!(out, "    table {span}: invalid entry {v:#018x}"),
            (k, _) => writeln!(out, "    table {span}: all {k}"),
        };
    }
}

/// The human form of a dump.
pub fn render(d: &Dump) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "file length: {} bytes", d.file_length);
    let _ = writeln!(o, "\nheader:");
    field_lines(&mut o, "  ", &d.header);
    let _ = writeln!(o, "\nheader extensions: {}", d.extensions.len());
    for x in &d.extensions {
        extension_lines(&mut o, x);
    }
    let _ = writeln!(
        o,
        "\nbitmap directory: {} entries",
        d.bitmap_directory.len()
    );
    for e in &d.bitmap_directory {
        let _ = writeln!(
            o,
            "  @{:#x} bitmap {:?} flags [{}]",
            e.offset,
            e.name,
            e.flags.join(", ")
        );
        field_lines(&mut o, "    ", &e.fields);
        if !e.extra_data_hex.is_empty() {
            let _ = writeln!(o, "    extra data: {}", e.extra_data_hex);
        }
        table_lines(&mut o, &e.table);
    }
    if !d.snapshots.is_empty() {
        let _ = writeln!(o, "\nsnapshots: {}", d.snapshots.len());
        for s in &d.snapshots {
            let _ = writeln!(o, "  @{:#x} id {:?} name {:?}", s.offset, s.id, s.name);
            field_lines(&mut o, "    ", &s.fields);
        }
    }
    let m = &d.mapping;
    let _ = writeln!(
        o,
        "\nmapping: {} L1 entries used, {} L2 tables, {} data clusters, {} zero clusters, {} compressed clusters",
        m.l1_entries_used, m.l2_tables, m.data_clusters, m.zero_clusters, m.compressed_clusters
    );
    let r = &d.refcounts;
    let _ = writeln!(
        o,
        "refcounts: {} blocks, {} clusters in file, {} referenced, {} leaked, {} unallocated, {} under-counted",
        r.refcount_blocks, r.clusters_in_file, r.clusters_referenced, r.leaked_clusters, r.unallocated_clusters, r.undercounted_clusters
    );
    let _ = writeln!(o, "cluster usage:");
    for (owner, n) in &d.cluster_usage {
        let _ = writeln!(o, "  {owner:<24} {n}");
    }
    let _ = writeln!(o, "\nverdict: {}", d.check.verdict.as_str());
    o
}
