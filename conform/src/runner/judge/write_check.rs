//! The write check: an implementation writes guest data into a private
//! copy, then the model judges the result. It runs on every image an
//! implementation can write, whatever the image's verdict or the state of
//! its bitmaps extension ([`eligible`]), and checks three obligations
//! (`spec_model::obligations`):
//! - `write.clear-unknown-autoclear`: after a write, no auto-clear bit the
//!   writer does not know is left set: bits 2-63 for every writer, bit 0
//!   for one that does not read bitmaps (it cannot maintain them), bit 1
//!   for one without external data file support ([`unknown_autoclear`]);
//! - `write.leaves-valid`: an image that conformed (or about which the spec
//!   is silent) must not break a rule after the write;
//! - `bitmaps.mark-written`: while the bitmaps extension stays consistent
//!   (autoclear bit 0 set) every `auto` bitmap must have gained exactly the
//!   written range, rounded out to its granularity, and every disabled one
//!   must be unchanged.
//!
//! Any problem makes the case `corrupting`; [`obligation_of`] says which
//! obligation a problem breaks. On an image that was already invalid only
//! the auto-clear bits are judged: the model's reading of the rest (and an
//! adapter's read-back through it) has no authority there, so those
//! findings are notes.
//!
//! Bitmaps are compared in bit space: granule indexes, each bitmap with
//! its own granularity and its own number of bits, never byte ranges
//! clipped to a disk size (which move when the size does).
//!
//! A header field the writer rewrote (QEMU rounds a `size` that is not a
//! multiple of 512 down on its first read-write open) is reported in
//! [`WriteCheck::rewrites`] and judged `mismatch`, not `corrupting`. The
//! reasoning, from the spec's header section: `size` is the virtual disk
//! size in bytes, any number, so cutting it changes the disk the guest
//! sees, which a write of guest data has no business doing (a mismatch
//! with the image). It does not by itself make the image non-conforming:
//! the bitmaps section sizes each bitmap from the virtual size (one bit
//! per granule up to the end of the disk), so while the number of granules
//! stays the same every bitmap table still fits, and when it changes
//! without the tables following, the model reports it and the verdict
//! check above makes the case `corrupting`. Bits past the smaller of the
//! two ends are not compared: they describe bytes that no longer exist.

use crate::runner::adapter::{Adapter, WriteRun};
use crate::runner::checks::{ModelAfter, WriteCheck};
use crate::runner::corpus::image_state::{self, ReadError};
use crate::runner::process::Limits;
use crate::runner::text::{command_line, short, show_ranges};
use generator::Expected;
use spec_model::semantics::{granules, Bitmap};
use spec_model::{ExtensionState, Obligation, Verdict};
use std::collections::BTreeMap;
use std::path::Path;

/// Whether a case takes the write check: every case, whatever its verdict
/// or extension state (an implementation that writes must honour the
/// auto-clear bits of any image it writes; a set-up that fails is the
/// runner's `error`, a model that cannot read the copy a note).
pub fn eligible(expected: &Expected) -> bool {
    let _ = expected;
    true
}

/// Whether a case takes QEMU's bitmap-operations check: a valid image
/// whose bitmaps extension is consistent.
pub fn ops_eligible(expected: &Expected) -> bool {
    expected.verdict == Verdict::Valid && expected.bitmaps_extension == ExtensionState::Consistent
}

/// The auto-clear bits a writer does not know: bits 2-63 (reserved) for
/// everyone, bit 0 (bitmaps extension) unless it reads bitmaps, bit 1
/// (raw external data) unless it supports external data files
/// (incompatible bit 2; unknown support counts as support).
pub fn unknown_autoclear(caps: &crate::runner::adapter::Capabilities) -> u64 {
    let mut bits = !0b11u64;
    if !caps.read_metadata {
        bits |= 1;
    }
    if caps
        .incompatible_features_supported
        .is_some_and(|s| s & (1 << 2) == 0)
    {
        bits |= 1 << 1;
    }
    bits
}

/// The obligation a problem of the write check breaks (every problem the
/// check writes starts so that this can tell: `autoclear ...`,
/// `bitmap ...`, anything else).
pub fn obligation_of(problem: &str) -> Obligation {
    if problem.starts_with("unknown ") {
        Obligation::KeepUnknownAsIs
    } else if problem.starts_with("plaintext ") {
        Obligation::CryptNoPlaintext
    } else if problem.starts_with("autoclear") {
        Obligation::WriteClearUnknownAutoclear
    } else if problem.starts_with("bitmap ") {
        Obligation::BitmapsMarkWritten
    } else {
        Obligation::WriteLeavesValid
    }
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

/// Per usable bitmap: (auto, granularity bits, set granule ranges), by
/// name.
type Contents = BTreeMap<String, (bool, u8, Vec<(u64, u64)>)>;

struct Snapshot {
    size: u64,
    autoclear: u64,
    header: Vec<(&'static str, u64)>,
    verdict: Verdict,
    extension: ExtensionState,
    error_rules: Vec<String>,
    names: Vec<String>,
    usable: Contents,
    unknown: Vec<(String, Vec<u8>)>,
    encrypted: bool,
}

fn snapshot(path: &Path) -> Result<Snapshot, ReadError> {
    let state = image_state::read(path)?;
    let mut usable = Contents::new();
    for ((name, b), bits) in state.bitmaps.iter().zip(&state.bits) {
        if let (true, Some(r)) = (b.usable, bits) {
            usable.insert(name.clone(), (b.auto, b.gbits, r.clone()));
        }
    }
    Ok(Snapshot {
        size: state.size,
        autoclear: state.autoclear,
        header: state.header,
        verdict: state.verdict,
        extension: state.extension,
        error_rules: state.error_rules,
        names: state.bitmaps.into_iter().map(|(n, _)| n).collect(),
        usable,
        unknown: state.unknown,
        encrypted: state.encrypted,
    })
}

fn ext_name(e: ExtensionState) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Granule ranges in messages, as the virtual byte ranges they cover on
/// a disk of `size` bytes: the first six.
fn show(bits: &[(u64, u64)], gbits: u8, size: u64) -> String {
    let g = 1u128 << gbits.min(63);
    let bytes: Vec<(u64, u64)> = bits
        .iter()
        .map(|&(a, b)| {
            let end = (b as u128 * g).min(size as u128);
            ((a as u128 * g).min(end) as u64, end as u64)
        })
        .collect();
    show_ranges(&bytes, 6)
}

/// What a bitmap's set bits must be after a write, as the semantic model
/// says: `before` (cut at `n` bits), plus, for an auto bitmap and a write
/// that happened, every granule the written range touches.
fn bits_after(
    before: &[(u64, u64)],
    auto: bool,
    write: Option<(u64, u64)>,
    gbits: u8,
    n: u64,
) -> Vec<(u64, u64)> {
    let mut model = Bitmap::loaded(gbits, auto, false, granules::clip(before, n));
    if let Some((offset, len)) = write {
        model.record_write(offset, len, n);
    }
    model.bits
}

/// Header fields that differ, as `name before -> after`.
fn rewritten(before: &[(&'static str, u64)], after: &[(&'static str, u64)]) -> Vec<String> {
    before
        .iter()
        .zip(after)
        .filter(|(a, b)| a.0 == b.0 && a.1 != b.1)
        .map(|(a, b)| format!("{} {} -> {}", a.0, a.1, b.1))
        .collect()
}

/// Why the written copy was not judged (a problem: the case is
/// `corrupting`).
#[derive(Debug, thiserror::Error)]
enum Unjudged {
    #[error("the image is gone after the write ({shown}: {source})")]
    Gone {
        shown: String,
        source: std::io::Error,
    },
    #[error("the write left {shown} {kind}, not a regular file: not judged")]
    NotRegular { shown: String, kind: &'static str },
    #[error("the model cannot read the image after the write: {0}")]
    Unreadable(ReadError),
    #[error("the model could not judge the image after the write within the time limit ({ms} ms; the file is {len} bytes)")]
    TooSlow { ms: u128, len: u64 },
}

/// The written copy as the model reads it, judged only when it is still a
/// regular file (not a FIFO, socket, device, directory or symbolic link
/// the writer left in its place) and only within `timeout` (the case's
/// time limit). A judgement past the limit is abandoned to its thread.
fn judge_written(copy: &Path, timeout: std::time::Duration) -> Result<Snapshot, Unjudged> {
    let shown = command_line(&std::process::Command::new(copy));
    let meta = match std::fs::symlink_metadata(copy) {
        Ok(m) => m,
        Err(source) => return Err(Unjudged::Gone { shown, source }),
    };
    if !meta.file_type().is_file() {
        let kind = crate::runner::corpus::input::kind(meta.file_type());
        return Err(Unjudged::NotRegular { shown, kind });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let path = copy.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(snapshot(&path));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Unjudged::Unreadable(e)),
        Err(_) => Err(Unjudged::TooSlow {
            ms: timeout.as_millis(),
            len: meta.len(),
        }),
    }
}

/// The set bits of `bits`, as `0, 2`.
fn show_bits(bits: u64) -> String {
    (0..64)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b: u32| b.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `keep.unknown-as-is` (spec "Header extensions" and "Bitmap directory",
/// `extra_data`): what the writer does not understand stays as it was. A
/// header extension of an unknown type must still be there with the same
/// bytes; a bitmap still in the directory keeps its extra data. A bitmap
/// the writer dropped is the bitmap checks' business, not this one's.
fn unknown_changed(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, bytes) in &before.unknown {
        match after.unknown.iter().find(|(w, _)| w == what) {
            Some((_, b)) if b == bytes => {}
            Some((_, b)) => problems.push(format!(
                "{what} changed by the write ({} bytes -> {}): what a writer does not understand it must keep as it is",
                bytes.len(),
                b.len()
            )),
            None if what.starts_with("unknown extra data of bitmap ") => {
                let gone = !after.names.iter().any(|n| what.ends_with(&short(n)));
                if !gone {
                    problems.push(format!(
                        "{what} dropped by the write: what a writer does not understand it must keep as it is"
                    ));
                }
            }
            None => problems.push(format!(
                "{what} ({} bytes) dropped by the write: what a writer does not understand it must keep as it is",
                bytes.len()
            )),
        }
    }
    problems
}

/// `crypt.no-plaintext` (spec "Data encryption": the payload is encrypted
/// on every write): after a writer holding the key wrote `data` (guest
/// bytes from `offset`), no 512-byte block of it, aligned in the guest,
/// lies in the file as it was written.
fn plaintext_found(copy: &Path, offset: u64, data: &[u8]) -> Option<String> {
    let first = offset.next_multiple_of(512);
    let at = usize::try_from(first - offset).ok()?;
    let block = data.get(at..at + 512)?;
    let found = image_state::find_block(copy, block)?;
    Some(format!(
        "plaintext of the write (guest offset {first:#x}) lies unencrypted at file offset {found:#x} of the encrypted image: with the key, every guest write must be encrypted (Data encryption)"
    ))
}

/// Runs the write check on `copy` (a private copy the adapter may write).
pub fn run(adapter: &dyn Adapter, copy: &Path, limits: &Limits) -> WriteCheck {
    let mut w = WriteCheck::default();
    let before = match snapshot(copy) {
        Ok(s) => s,
        Err(e) => {
            w.found.notes.push(format!("write check skipped: {e}"));
            return w;
        }
    };
    let (offset, len) = write_range(before.size);
    w.offset = offset;
    w.len = len;
    if len == 0 {
        w.found
            .notes
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
    let was_invalid = before.verdict == Verdict::Invalid;
    if was_invalid {
        // The model's read-back of an invalid image has no authority.
        w.found.notes.extend(
            problems
                .into_iter()
                .map(|p| format!("{p} (not judged: the image was invalid before the write)")),
        );
    } else {
        w.found.problems.extend(problems);
    }
    w.written = ok;
    w.error = error;
    w.found.commands = commands;
    w.found.commands.push(format!(
        "qcow2-conform check {}",
        command_line(&std::process::Command::new(copy))
    ));
    let holds_key =
        adapter.capabilities().uses_secret && crate::runner::process::case_env::current().is_some();
    if ok && before.encrypted && holds_key {
        match adapter.written_data(offset, len) {
            Some(data) => {
                w.plaintext_searched = true;
                w.found.problems.extend(plaintext_found(copy, offset, &data));
            }
            None => w.found.notes.push(
                "the adapter does not say what it wrote: the encrypted copy was not searched for plaintext".to_owned(),
            ),
        }
    }
    let crashed = process.as_ref().is_some_and(|p| p.ended_badly());
    w.found.process = process;
    if crashed {
        return w;
    }
    let after = match judge_written(copy, limits.timeout) {
        Ok(s) => s,
        Err(why) => {
            w.found.problems.push(why.to_string());
            return w;
        }
    };
    w.after = ModelAfter {
        verdict_after: Some(after.verdict.as_str().to_owned()),
        extension_after: Some(ext_name(after.extension)),
        error_rules_after: after.error_rules.clone(),
    };
    if !ok {
        w.found.notes.push(format!(
            "the write was refused: {}",
            w.error.clone().unwrap_or_default()
        ));
    }
    // The broken image first (its own bucket), then the auto-clear bits,
    // then the bitmaps (symptoms of a bit 0 left set).
    w.rewrites = rewritten(&before.header, &after.header);
    if after.verdict == Verdict::Invalid && !was_invalid {
        // A size the open rewrote is a cause of its own (bits of the old
        // disk become tail bits of the new one), told apart in the message.
        let size = w
            .rewrites
            .iter()
            .find(|r| r.starts_with("size "))
            .map(|r| format!(" (the header's {r}: the disk's size was rewritten)"))
            .unwrap_or_default();
        w.found.problems.push(format!(
            "the image no longer conforms after the write: {}{size}",
            after.error_rules.join(", ")
        ));
    }
    let unknown = before.autoclear & unknown_autoclear(&adapter.capabilities());
    let kept = after.autoclear & unknown;
    if ok && kept != 0 {
        w.found.problems.push(format!(
            "autoclear bit(s) {} still set after the write: the writer does not know them, so it must clear them before it writes (autoclear_features {:#x} -> {:#x})",
            show_bits(kept),
            before.autoclear,
            after.autoclear
        ));
    }
    if was_invalid {
        return w;
    }
    if ok {
        w.found.problems.extend(unknown_changed(&before, &after));
    }
    match after.extension {
        // An invalid extension makes every bitmap unusable: the finding
        // above says it all.
        ExtensionState::Consistent if after.verdict == Verdict::Invalid => {}
        ExtensionState::Consistent => {
            for (name, (auto, gbits, ranges)) in &before.usable {
                let Some((auto2, gbits2, got)) = after.usable.get(name) else {
                    if after.names.contains(name) {
                        w.found.problems.push(format!(
                            "bitmap {} is no longer usable after the write (in_use left set?) while autoclear bit 0 stays set",
                            short(name)
                        ));
                    } else {
                        w.found.problems.push(format!(
                            "bitmap {} is gone after the write while autoclear bit 0 stays set",
                            short(name)
                        ));
                    }
                    continue;
                };
                if auto != auto2 || gbits != gbits2 {
                    w.found.problems.push(format!(
                        "bitmap {} changed (auto {auto} -> {auto2}, granularity 2^{gbits} -> 2^{gbits2})",
                        short(name)
                    ));
                    continue;
                }
                let n =
                    granules::nbits(before.size, *gbits).min(granules::nbits(after.size, *gbits));
                let want = bits_after(ranges, *auto, ok.then_some((offset, len)), *gbits, n);
                let got = granules::clip(got, n);
                if got != want {
                    let what = if *auto {
                        format!(
                            "an auto bitmap must gain exactly the written range {offset}..{}",
                            offset + len
                        )
                    } else {
                        "a disabled bitmap must not change".to_owned()
                    };
                    w.found.problems.push(format!(
                        "bitmap {}: dirty ranges {} after the write, expected {} ({what}; autoclear bit 0 is still set)",
                        short(name),
                        show(&got, *gbits, after.size),
                        show(&want, *gbits, after.size)
                    ));
                }
            }
            for name in after.usable.keys() {
                if !before.usable.contains_key(name) && !before.names.contains(name) {
                    w.found
                        .notes
                        .push(format!("bitmap {} appeared after the write", short(name)));
                }
            }
        }
        other => {
            if before.extension == ExtensionState::Consistent {
                w.found.notes.push(format!(
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
    use crate::runner::judge::write_check::*;

    #[test]
    fn ranges() {
        assert_eq!(write_range(0), (0, 0));
        assert_eq!(write_range(1), (0, 1));
        let (o, l) = write_range(3 << 20);
        assert_eq!((o, l), ((1 << 20) + 1000, 70_000));
    }
}
