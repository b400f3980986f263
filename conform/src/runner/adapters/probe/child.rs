//! The child side: what `qcow2-conform adapter-probe` does inside the
//! probe process. It opens the image through one implementation, reads the
//! sample ranges and compares them with the model ([`super::expectation`]),
//! or writes the pattern and has the model read it back, every call into
//! the implementation under the panic guard ([`super::guard`]).

use super::disk::GuestDisk;
use super::expectation::{describe_difference, expectation, Expectation};
use super::guard::{guarded, install_panic_hook};
use super::kind::ProbeKind;
use super::report::{ProbeReport, WriteOutcome};
use super::sampling::{pattern, pattern_byte};
use crate::runner::corpus::image_layers::{self, LayersError};
use crate::runner::observation::GuestCheck;
use std::fmt::Display;
use std::path::Path;

/// Mismatch and error descriptions kept per observation.
const MAX_DESCRIBED: usize = 8;

/// What `qcow2-conform adapter-probe` does: probe `image` with `kind`,
/// reading (and, with `write`, writing) through the implementation.
pub fn probe(kind: ProbeKind, image: &Path, write: Option<(u64, u64)>) -> ProbeReport {
    install_panic_hook();
    let mut report = ProbeReport {
        implementation: kind.name().to_owned(),
        ..ProbeReport::default()
    };
    let expect = expectation(image);
    report.notes.extend(expect.notes.iter().cloned());
    match write {
        None => observe_guest(kind, image, &expect, &mut report),
        Some((offset, len)) => write_guest(kind, image, &expect, offset, len, &mut report),
    }
    report
}

fn open_guarded(
    kind: ProbeKind,
    image: &Path,
    writable: bool,
    report: &mut ProbeReport,
) -> Option<Box<dyn GuestDisk>> {
    match guarded(|| kind.open(image, writable)) {
        Err(p) => {
            report.panic = Some(p.0);
            None
        }
        Ok(Err(e)) => {
            report.error = Some(e.to_string());
            None
        }
        Ok(Ok(d)) => {
            report.opened = true;
            Some(d)
        }
    }
}

fn observe_guest(kind: ProbeKind, image: &Path, expect: &Expectation, report: &mut ProbeReport) {
    let Some(mut disk) = open_guarded(kind, image, false, report) else {
        return;
    };
    let mut g = GuestCheck {
        size_header: expect.size,
        ranges: expect.ranges.len(),
        backing_end: expect.backing_end,
        ..GuestCheck::default()
    };
    match guarded(|| disk.size()) {
        Ok(s) => g.size_reported = Some(s),
        Err(p) => {
            report.panic = Some(p.0);
            report.guest = Some(g);
            return;
        }
    }
    for (i, (&(o, l), want)) in expect.ranges.iter().zip(&expect.data).enumerate() {
        let want = match want {
            Ok(w) => w,
            Err(e) => {
                if g.not_compared.len() < MAX_DESCRIBED {
                    g.not_compared.push(format!("{o:#x}+{l:#x}: {e}"));
                }
                continue;
            }
        };
        let past = expect.past_backing.get(i).copied().unwrap_or(false);
        let mut got = vec![0u8; l as usize];
        match guarded(|| disk.read(o, &mut got)) {
            Err(p) => {
                report.panic = Some(p.0);
                break;
            }
            Ok(Err(e)) => {
                g.read_failed(
                    past,
                    format!(
                        "cannot read {l} bytes at virtual offset {o} ({o:#x}), which the model reads: {e}"
                    ),
                );
                if let Some(sig) = disk.helper_signal() {
                    report.signal = Some(sig);
                    break;
                }
            }
            Ok(Ok(())) => {
                g.read_compared(past, l, describe_difference(o, &got, want, kind.name()));
            }
        }
    }
    report.signal = report.signal.or(disk.helper_signal());
    report.guest = Some(g);
    if report.panic.is_none() {
        match guarded(|| disk.close()) {
            Err(p) => report.panic = Some(p.0),
            Ok(Err(e)) => report.notes.push(format!("closing failed: {e}")),
            Ok(Ok(())) => {}
        }
    }
}

fn write_guest(
    kind: ProbeKind,
    image: &Path,
    expect: &Expectation,
    offset: u64,
    len: u64,
    report: &mut ProbeReport,
) {
    let mut w = WriteOutcome::default();
    let data = pattern(offset, len);
    if let Some(mut disk) = open_guarded(kind, image, true, report) {
        let step = match guarded(|| disk.write(offset, &data)) {
            Err(p) => Err(Some(p)),
            Ok(Err(e)) => {
                w.error = Some(format!("write: {e}"));
                Err(None)
            }
            Ok(Ok(())) => Ok(()),
        };
        match step {
            Err(Some(p)) => report.panic = Some(p.0),
            Err(None) => {
                // Refused: still close, so that whatever it did reaches the file.
                let _ = guarded(|| disk.close());
            }
            Ok(()) => match guarded(|| disk.close()) {
                Err(p) => report.panic = Some(p.0),
                Ok(Err(e)) => w.error = Some(format!("flush/close: {e}")),
                Ok(Ok(())) => w.ok = true,
            },
        }
    } else {
        w.error = report.error.clone();
    }
    if report.panic.is_none() && w.ok {
        w.problems = read_back(image, expect, offset, len, kind.name());
    }
    report.write = Some(w);
}

/// After a write of the pattern at `offset..offset+len`: the model must read
/// the pattern there, and unchanged data at every sample range outside it.
fn read_back(image: &Path, expect: &Expectation, offset: u64, len: u64, who: &str) -> Vec<String> {
    let cannot_open = |e: &dyn Display| {
        vec![format!(
            "the model cannot open the image after the write: {e}"
        )]
    };
    let mut model = match image_layers::open(image) {
        Err(LayersError::Open { source, .. }) => return cannot_open(&source),
        Err(e) => return cannot_open(&e),
        Ok(m) => m,
    };
    let encrypted = model
        .model
        .analysis()
        .header
        .as_ref()
        .is_some_and(|h| h.crypt_method != 0);
    if encrypted {
        return encrypted_write(image, offset, len, who);
    }
    let mut problems = Vec::new();
    let mut got = vec![0u8; len as usize];
    match model.read(offset, &mut got) {
        Err(e) => problems.push(format!("the model cannot read the written range back: {e}")),
        Ok(()) => {
            if let Some(d) = describe_difference(offset, &got, &pattern(offset, len), "the model") {
                problems.push(format!(
                    "the data {who} wrote did not land: {}",
                    d.replace("the model reads", "the pattern is")
                ));
            }
        }
    }
    let end = offset + len;
    for (&(o, l), before) in expect.ranges.iter().zip(&expect.data) {
        let Ok(before) = before else { continue };
        let mut now = vec![0u8; l as usize];
        if model.read(o, &mut now).is_err() {
            problems.push(format!(
                "the model can no longer read {l} bytes at virtual offset {o} after the write"
            ));
            continue;
        }
        // Only the part outside the written range must be unchanged.
        let mut want = before.clone();
        for (i, b) in want.iter_mut().enumerate() {
            let v = o + i as u64;
            if v >= offset && v < end {
                *b = pattern_byte(v);
            }
        }
        if let Some(d) = describe_difference(o, &now, &want, "the model now") {
            problems.push(format!(
                "the write changed data outside {offset}..{end}: {}",
                d.replace("where the model reads", "where it read before")
            ));
            if problems.len() >= MAX_DESCRIBED {
                break;
            }
        }
    }
    problems
}

/// The read-back of a write into an encrypted image (`crypt_method` 1 or
/// 2), whose guest data the model cannot decrypt. The spec (qcow2.rst,
/// header field `crypt_method`, "LUKS encryption header") says every data
/// cluster of such an image holds ciphertext: a conforming reader
/// decrypts whatever the cluster holds, so plaintext stored there reads
/// back as garbage and the guest data is lost. A writer that stores the
/// written bytes verbatim in the file therefore corrupts the image, just
/// as a lost write would: one such block of the pattern found in the file
/// is a problem (the case becomes `corrupting`). Whether ciphertext it
/// wrote is right the model cannot judge; that part is only noted.
fn encrypted_write(image: &Path, offset: u64, len: u64, who: &str) -> Vec<String> {
    let written = pattern(offset, len);
    // A 512-byte block of the pattern, aligned in the guest, as a
    // plaintext writer would store it at some 512-aligned file offset.
    let first = offset.next_multiple_of(512);
    if first + 512 > offset + len {
        return Vec::new();
    }
    let at = (first - offset) as usize;
    let block = &written[at..at + 512];
    match crate::runner::corpus::image_state::find_block(image, block) {
        Some(i) => vec![format!(
            "{who} wrote plaintext into an encrypted image: the written pattern (guest offset {first:#x}) \
             lies unencrypted at file offset {:#x}; a conforming reader decrypts it into garbage \
             (qcow2.rst: crypt_method, every data cluster is encrypted)",
            i
        )],
        None => Vec::new(),
    }
}
