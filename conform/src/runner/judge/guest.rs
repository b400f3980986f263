//! The guest disk: `guest.virtual-size` (the disk has exactly `size`
//! bytes, for every implementation that reports a size, read-only or after
//! a write) and `guest.read-as-mapped` (the guest data an implementation
//! read equals the model's).

use super::context::Context;
use crate::runner::judge::cause::Check;
use crate::runner::judge::outcome::Reasons;
use crate::runner::observation::{GuestCheck, Observation};
use spec_model::Obligation;

/// The virtual size the implementation presents, if it reports one.
pub fn reported_size(obs: &Observation) -> Option<u64> {
    obs.virtual_size
        .or_else(|| obs.guest.as_ref().and_then(|g| g.size_reported))
}

/// The header's virtual size, from the image's facts or the guest check.
fn header_size(cx: &Context, obs: &Observation) -> Option<u64> {
    cx.facts
        .map(|f| f.size)
        .or_else(|| obs.guest.as_ref().and_then(|g| g.size_header))
}

/// `guest.virtual-size`: a reported size other than the header's is a
/// mismatch (Header, `size`: the virtual disk size in bytes, any number),
/// and so is a `size` a read-write open rewrote.
pub fn virtual_size(cx: &Context, obs: &Observation, r: &mut Reasons) {
    if let (Some(got), Some(want)) = (reported_size(obs), header_size(cx, obs)) {
        if got != want {
            let how = if got < want && want - got < 512 && got % 512 == 0 {
                format!(
                    " (rounded down to a multiple of 512: the last {} bytes cannot be read)",
                    want - got
                )
            } else {
                String::new()
            };
            r.mismatch.push_for(
                Some(Obligation::GuestVirtualSize),
                Check::VirtualSize,
                None,
                format!("presents a virtual disk of {got} bytes; the header's size is {want} (Header, size: the virtual disk size in bytes){how}"),
            );
        }
    }
    for rw in obs.write.iter().flat_map(|w| &w.rewrites) {
        let o = if rw.starts_with("size ") {
            Obligation::GuestVirtualSize
        } else {
            Obligation::KeepUnknownAsIs
        };
        r.mismatch.push_for(
            Some(o),
            Check::HeaderRewrite,
            None,
            format!("the read-write open for the write check rewrote the header: {rw}"),
        );
    }
}

/// The obligation a guest difference or read error breaks: one past the
/// end of a short backing file `guest.short-backing-zeros` (Cluster
/// mapping: those bytes read as zeros), any other `guest.read-as-mapped`.
fn obligation_of(text: &str) -> Obligation {
    if GuestCheck::past_backing(text) {
        Obligation::GuestShortBackingZeros
    } else {
        Obligation::GuestReadAsMapped
    }
}

/// The guest data a bitmaps-unaware implementation read from an image:
/// every difference from the model a mismatch (`guest.read-as-mapped`, or
/// `guest.short-backing-zeros` past a short backing file), read errors
/// strict unless a limit excuses them (`limits`).
pub fn compared(g: &GuestCheck, limits: &[&str], r: &mut Reasons) {
    for d in &g.mismatches {
        r.mismatch
            .push_for(Some(obligation_of(d)), Check::GuestData, None, d.clone());
    }
    if g.mismatch_count > g.mismatches.len() {
        r.mismatch.push(
            Check::GuestData,
            format!(
                "(and {} more differing range(s))",
                g.mismatch_count - g.mismatches.len()
            ),
        );
    }
    if g.read_error_count > 0 {
        let mut errs = g.read_errors.clone();
        if g.read_error_count > errs.len() {
            errs.push(format!("(and {} more)", g.read_error_count - errs.len()));
        }
        for m in errs {
            if limits.is_empty() {
                let o = Some(obligation_of(&m));
                r.strict.push_for(o, Check::GuestRead, Some(&m), m.clone());
            } else {
                let t = format!("{m} (allowed: limits {})", limits.join(", "));
                r.pass.push_msg(Check::GuestRead, Some(&m), t);
            }
        }
    }
    if g.mismatch_count == 0 && g.read_error_count == 0 {
        r.pass.push(Check::Allowed, read_as_model(g));
    }
}

/// The pass text of a guest check without differences.
pub fn read_as_model(g: &GuestCheck) -> String {
    format!(
        "read {} of {} sample range(s) ({} bytes) as the model does",
        g.ranges_compared, g.ranges, g.bytes_compared
    )
}

/// Whether the data read differs from the model's (sizes aside: those are
/// [`virtual_size`]'s).
pub fn data_differs(g: &GuestCheck) -> bool {
    g.mismatch_count > 0
}

/// The data differences in words (sizes aside).
pub fn data_differences(g: &GuestCheck) -> Vec<String> {
    let mut d = g.mismatches.clone();
    if g.mismatch_count > g.mismatches.len() {
        d.push(format!(
            "(and {} more differing range(s))",
            g.mismatch_count - g.mismatches.len()
        ));
    }
    d
}
