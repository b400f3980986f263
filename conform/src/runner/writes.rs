//! The write check: an implementation writes guest data into a private
//! copy, then the model judges the result. The image must still conform,
//! and while the bitmaps extension stays consistent (autoclear bit 0 set)
//! every `auto` bitmap must have gained exactly the written range, rounded
//! out to its granularity, and every disabled one must be unchanged. A
//! writer that does not maintain bitmaps must clear autoclear bit 0 first;
//! one that leaves it set without setting the bits is caught by the same
//! rule. Any problem makes the case `corrupting`.

use super::adapters::{Adapter, WriteRun};
use super::process::Proc;
use super::Limits;
use generator::Expected;
use serde::Serialize;
use spec_model::{ExtensionState, Model, Verdict};
use std::collections::BTreeMap;
use std::path::Path;

/// What the write check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteCheck {
    /// Virtual offset and length written.
    pub offset: u64,
    pub len: u64,
    /// The implementation reported success.
    pub written: bool,
    pub error: Option<String>,
    /// The model's verdict on the image afterwards.
    pub verdict_after: Option<String>,
    pub extension_after: Option<String>,
    /// Rule IDs of error findings afterwards.
    pub error_rules_after: Vec<String>,
    /// Everything wrong with the result; non-empty means `corrupting`.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub commands: Vec<String>,
    #[serde(skip)]
    pub process: Option<Proc>,
}

/// Whether a case takes the write check: a valid image whose bitmaps
/// extension is consistent.
pub fn eligible(expected: &Expected) -> bool {
    expected.verdict == Verdict::Valid && expected.bitmaps_extension == ExtensionState::Consistent
}

/// The range the runner writes into a disk of `size` bytes: about a third
/// of the way in, deliberately not sector aligned, 70000 bytes long (so
/// that it straddles granularity boundaries), clipped to the disk.
pub fn write_range(size: u64) -> (u64, u64) {
    if size == 0 {
        return (0, 0);
    }
    let offset = ((size / 3) & !511).saturating_add(1000).min(size - 1);
    (offset, (size - offset).min(70_000))
}

/// Per usable bitmap: (auto, granularity bits, dirty ranges), by name.
type Contents = BTreeMap<String, (bool, u8, Vec<(u64, u64)>)>;

struct Snapshot {
    size: u64,
    verdict: Verdict,
    extension: ExtensionState,
    error_rules: Vec<String>,
    names: Vec<String>,
    usable: Contents,
}

fn snapshot(path: &Path) -> Result<Snapshot, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut model = Model::open(file).map_err(|e| format!("model: {e}"))?;
    let report = model.report().clone();
    let size = model
        .analysis()
        .header
        .as_ref()
        .map(|h| h.size)
        .unwrap_or(0);
    let mut usable = Contents::new();
    for (i, b) in report.bitmaps.iter().enumerate() {
        if b.usable {
            if let Some(r) = model.dirty_ranges(i).map_err(|e| format!("model: {e}"))? {
                usable.insert(b.name.clone(), (b.flags.auto, b.granularity_bits, r));
            }
        }
    }
    Ok(Snapshot {
        size,
        verdict: report.verdict,
        extension: report.bitmaps_extension,
        error_rules: report
            .rules_with(spec_model::Severity::Error)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        names: report.bitmaps.iter().map(|b| b.name.clone()).collect(),
        usable,
    })
}

fn ext_name(e: ExtensionState) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `ranges` plus `[offset, offset+len)` rounded out to `2^gbits`, clipped
/// to `size`, merged.
pub fn expected_after(
    ranges: &[(u64, u64)],
    offset: u64,
    len: u64,
    gbits: u8,
    size: u64,
) -> Vec<(u64, u64)> {
    let g = 1u128 << gbits.min(63);
    let a = ((offset as u128 / g) * g) as u64;
    let b = ((offset as u128 + len as u128).div_ceil(g) * g).min(size as u128) as u64;
    let mut v = ranges.to_vec();
    v.push((a, b));
    crate::qemu::merge_ranges(v)
}

/// A bitmap name cut to a readable length for messages.
pub fn short(name: &str) -> String {
    if name.chars().count() <= 40 {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(32).collect();
        format!("{head:?}... ({} chars)", name.chars().count())
    }
}

fn show(r: &[(u64, u64)]) -> String {
    let parts: Vec<String> = r.iter().take(6).map(|(a, b)| format!("{a}..{b}")).collect();
    let more = if r.len() > 6 {
        format!(" (+{} more)", r.len() - 6)
    } else {
        String::new()
    };
    format!("[{}]{more}", parts.join(", "))
}

/// Runs the write check on `copy` (a private copy the adapter may write).
pub fn run(adapter: &dyn Adapter, copy: &Path, limits: &Limits) -> WriteCheck {
    let mut w = WriteCheck::default();
    let before = match snapshot(copy) {
        Ok(s) => s,
        Err(e) => {
            w.notes.push(format!("write check skipped: {e}"));
            return w;
        }
    };
    let (offset, len) = write_range(before.size);
    w.offset = offset;
    w.len = len;
    if len == 0 {
        w.notes
            .push("write check skipped: the disk is empty".to_owned());
        return w;
    }
    let WriteRun {
        ok,
        error,
        process,
        commands,
        problems,
    } = adapter.write(copy, offset, len, limits);
    w.problems.extend(problems);
    w.written = ok;
    w.error = error;
    w.commands = commands;
    w.commands.push(format!(
        "qcow2-conform check {}",
        crate::qemu::command_line(&std::process::Command::new(copy))
    ));
    let crashed = process
        .as_ref()
        .is_some_and(|p| p.timed_out || p.signal.is_some());
    w.process = process;
    if crashed {
        return w;
    }
    let after = match snapshot(copy) {
        Ok(s) => s,
        Err(e) => {
            w.problems.push(format!(
                "the model cannot read the image after the write: {e}"
            ));
            return w;
        }
    };
    w.verdict_after = Some(after.verdict.as_str().to_owned());
    w.extension_after = Some(ext_name(after.extension));
    w.error_rules_after = after.error_rules.clone();
    if !ok {
        w.notes.push(format!(
            "the write was refused: {}",
            w.error.clone().unwrap_or_default()
        ));
    }
    if after.verdict == Verdict::Invalid && before.verdict != Verdict::Invalid {
        w.problems.push(format!(
            "the image no longer conforms after the write: {}",
            after.error_rules.join(", ")
        ));
    }
    if after.size != before.size {
        w.notes.push(format!(
            "virtual size changed from {} to {}",
            before.size, after.size
        ));
    }
    match after.extension {
        // An invalid extension makes every bitmap unusable: the finding
        // above says it all.
        ExtensionState::Consistent if after.verdict == Verdict::Invalid => {}
        ExtensionState::Consistent => {
            for (name, (auto, gbits, ranges)) in &before.usable {
                let Some((auto2, gbits2, got)) = after.usable.get(name) else {
                    if after.names.contains(name) {
                        w.problems.push(format!(
                            "bitmap {} is no longer usable after the write (in_use left set?) while autoclear bit 0 stays set",
                            short(name)
                        ));
                    } else {
                        w.problems.push(format!(
                            "bitmap {} is gone after the write while autoclear bit 0 stays set",
                            short(name)
                        ));
                    }
                    continue;
                };
                if auto != auto2 || gbits != gbits2 {
                    w.problems.push(format!(
                        "bitmap {} changed (auto {auto} -> {auto2}, granularity 2^{gbits} -> 2^{gbits2})",
                        short(name)
                    ));
                    continue;
                }
                let want = if *auto && ok {
                    expected_after(ranges, offset, len, *gbits, after.size)
                } else {
                    ranges.clone()
                };
                if *got != want {
                    let what = if *auto {
                        format!(
                            "an auto bitmap must gain exactly the written range {offset}..{}",
                            offset + len
                        )
                    } else {
                        "a disabled bitmap must not change".to_owned()
                    };
                    w.problems.push(format!(
                        "bitmap {}: dirty ranges {} after the write, expected {} ({what}; autoclear bit 0 is still set)",
                        short(name),
                        show(got),
                        show(&want)
                    ));
                }
            }
            for name in after.usable.keys() {
                if !before.usable.contains_key(name) && !before.names.contains(name) {
                    w.notes
                        .push(format!("bitmap {} appeared after the write", short(name)));
                }
            }
        }
        other => {
            if before.extension == ExtensionState::Consistent {
                w.notes.push(format!(
                    "the writer left the bitmaps extension {} (allowed: it gave the bitmaps up)",
                    ext_name(other)
                ));
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(write_range(0), (0, 0));
        assert_eq!(write_range(1), (0, 1));
        let (o, l) = write_range(3 << 20);
        assert_eq!((o, l), ((1 << 20) + 1000, 70_000));
        assert_eq!(
            expected_after(&[(0, 512)], 1000, 70_000, 16, 1 << 20),
            vec![(0, 131072)]
        );
        assert_eq!(expected_after(&[], 1000, 100, 9, 1100), vec![(512, 1100)]);
    }
}
