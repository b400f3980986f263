//! The human form of a draft dump (`qcow2-conform dump --revision R`),
//! line for line in the manner of the final dump's (`crate::dump::render`).

use super::DraftDump;
use crate::bitmaps::ExtensionState;
use crate::dump::{extension_lines, field_lines, table_lines};
use std::fmt::Write as _;

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
    field_lines(&mut o, "  ", &d.header);
    if !d.extensions.is_empty() {
        let _ = writeln!(o, "\nheader extensions: {}", d.extensions.len());
        for x in &d.extensions {
            extension_lines(&mut o, x);
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
        field_lines(&mut o, "    ", &b.fields);
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
        table_lines(&mut o, &b.table);
        let _ = writeln!(
            o,
            "    set bits {}, sha256 {}",
            opt(&b.contents.set_bits),
            opt(&b.contents.content_sha256)
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
