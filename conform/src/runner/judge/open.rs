//! Opening an image: `open.unknown-incompatible` (refuse an image with an
//! incompatible bit the implementation does not support; opening one is
//! lenient, refusing one is the refusal the spec requires) and
//! `open.conforming` (a refusal of a conforming image is strict unless a
//! documented limit excuses it; a limit on bitmaps excuses only an
//! implementation that reads bitmaps).

use super::context::Context;
use crate::runner::judge::cause::{describe_incompatible, Check};
use crate::runner::judge::outcome::Reasons;
use generator::Expected;
use spec_model::{Obligation, Rule, Severity};

fn severities(id: &str) -> &'static [Severity] {
    Rule::from_id(id).map(|r| r.severities()).unwrap_or(&[])
}

/// The expected rules that are documented limits and may excuse this
/// implementation's refusal: every one for an implementation that reads
/// bitmaps; for one that does not, only those outside the bitmaps
/// extension (a limit on bitmaps is about reading bitmaps, which it does
/// not do).
pub fn limit_rules(e: &Expected, bitmaps_aware: bool) -> Vec<&str> {
    e.rules
        .iter()
        .filter(|r| severities(r).contains(&Severity::Limit))
        .filter(|r| bitmaps_aware || !r.starts_with("bitmaps."))
        .map(String::as_str)
        .collect()
}

/// The bitmaps limit rules an implementation that does not read bitmaps
/// cannot invoke, for the reason text.
fn bitmap_limits_not_invoked(e: &Expected, bitmaps_aware: bool) -> Vec<&str> {
    if bitmaps_aware {
        return Vec::new();
    }
    e.rules
        .iter()
        .filter(|r| r.starts_with("bitmaps.") && severities(r).contains(&Severity::Limit))
        .map(String::as_str)
        .collect()
}

/// When a refusal is one the spec requires, because the image sets
/// incompatible feature bits the implementation does not support (Header,
/// `incompatible_features`: an implementation must fail to open an image
/// with an unknown bit), the reason. Without the adapter's word on what it
/// supports, a message naming "incompatible" counts as that refusal.
pub fn required_refusal(cx: &Context, error: &str) -> Option<String> {
    let bits = cx.facts?.incompatible;
    let unsupported = match cx.supported_incompatible {
        Some(s) => bits & !s,
        None if error.to_ascii_lowercase().contains("incompatible") => bits,
        None => 0,
    };
    if unsupported == 0 {
        return None;
    }
    let plural = if unsupported.count_ones() > 1 {
        "s"
    } else {
        ""
    };
    Some(format!(
        "refused: incompatible feature{plural} {}, which it does not support; the spec requires that refusal: {error}",
        describe_incompatible(unsupported)
    ))
}

/// A refusal to open a conforming image: a pass when the spec requires it
/// or a documented limit allows it, else strict.
pub fn refused_valid(cx: &Context, e: &Expected, bitmaps_aware: bool, err: &str, r: &mut Reasons) {
    let limits = limit_rules(e, bitmaps_aware);
    if let Some(why) = required_refusal(cx, err) {
        r.pass.push_msg(Check::UnsupportedFeature, Some(err), why);
    } else if limits.is_empty() {
        let flag = if cx.facts.is_some_and(|f| f.bitmap_over_512mib) {
            " (a bitmap's data is larger than 512 MiB: QEMU's in-memory cap per bitmap, not a limit the spec documents)"
        } else if cx.facts.is_some_and(|f| f.extra_data_compatible) {
            " (a bitmap has extra data with extra_data_compatible, flag bit 2, set: a reader may ignore that extra data)"
        } else {
            ""
        };
        let not_invoked = bitmap_limits_not_invoked(e, bitmaps_aware);
        let limits_note = if not_invoked.is_empty() {
            String::new()
        } else {
            format!(
                " (the limits {} are on bitmaps, which it does not read: they excuse nothing)",
                not_invoked.join(", ")
            )
        };
        r.strict.push_msg(
            Check::Open,
            Some(err),
            format!("refused to open a conforming image{flag}{limits_note}: {err}"),
        );
    } else {
        r.pass.push_msg(
            Check::Open,
            Some(err),
            format!(
                "refused to open a conforming image beyond documented limits ({}): {err}",
                limits.join(", ")
            ),
        );
    }
}

/// A refusal of an invalid image breaking `rules`: always allowed.
pub fn refused_invalid(rules: &str, err: &str, r: &mut Reasons) {
    r.pass.push_msg(
        Check::Open,
        Some(err),
        format!("refused the invalid image ({rules}): {err}"),
    );
}

/// An implementation that opened an image with incompatible bits it does
/// not support: lenient, whatever the image's verdict (the spec says it
/// must fail to open it).
pub fn opened_unsupported(cx: &Context, opened: bool, r: &mut Reasons) {
    let bits = cx.unsupported_incompatible();
    if !opened || bits == 0 {
        return;
    }
    let plural = if bits.count_ones() > 1 { "s" } else { "" };
    r.lenient.push_for(
        Some(Obligation::OpenUnknownIncompatible),
        Check::OpenedUnsupported,
        None,
        format!(
            "opened an image with incompatible feature{plural} {}, which it does not support (Header, incompatible_features: an implementation must fail to open an image with an unknown bit set)",
            describe_incompatible(bits)
        ),
    );
}
