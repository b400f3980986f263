//! Bitmaps, for implementations that read them: the listing
//! (`bitmaps.list-as-stored`: names, granularity, flags), the contents
//! (`bitmaps.read-contents`), conforming bitmaps used
//! (`bitmaps.use-conforming`, a documented limit excusing a refusal), and
//! bitmaps that must not be used (`bitmaps.never-use-in-use`,
//! `bitmaps.never-use-incompatible-extra-data`,
//! `bitmaps.ignore-inconsistent`, `bitmaps.never-use-invalid`).

use super::context::{cut_at_nul, find_name, name_cut, Context};
use crate::runner::judge::cause::Check;
use crate::runner::judge::outcome::{Bucket, Reasons};
use crate::runner::observation::{Observation, ObservedBitmap};
use crate::runner::text::short;
use generator::expected::ExpectedBitmap;
use generator::Expected;
use spec_model::{Rule, Severity};

fn severities(id: &str) -> &'static [Severity] {
    Rule::from_id(id).map(|r| r.severities()).unwrap_or(&[])
}

/// Whether an invalid image's expected rules make its bitmaps extension
/// unusable: a bitmaps rule that is an error or makes the extension
/// inconsistent.
fn extension_unusable(e: &Expected) -> bool {
    e.bitmaps_extension == spec_model::ExtensionState::Inconsistent
        || e.rules.iter().any(|r| {
            r.starts_with("bitmaps.")
                && severities(r)
                    .iter()
                    .any(|s| matches!(s, Severity::Error | Severity::Inconsistent))
        })
}

/// The names of `bitmaps`, shortened, joined.
pub fn names(bitmaps: &[ObservedBitmap]) -> String {
    bitmaps
        .iter()
        .map(|b| short(&b.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn why_unusable(e: &ExpectedBitmap) -> &'static str {
    if e.flags.in_use {
        "it is in_use"
    } else {
        "it has extra data without extra_data_compatible"
    }
}

/// [`why_unusable`] as a cause token ([`crate::runner::judge::cause::ModelBitmap::why_unusable`]).
fn why_token(e: &ExpectedBitmap) -> &'static str {
    if e.flags.in_use {
        "in_use"
    } else {
        "extra-data"
    }
}

/// The first bitmaps rule among an invalid image's expected rules in
/// catalogue order, as a cause token (`bitmaps` when none is named).
fn bitmap_rules_token(e: &Expected) -> String {
    e.rules
        .iter()
        .filter(|r| r.starts_with("bitmaps."))
        .filter_map(|r| Rule::from_id(r))
        .min()
        .map_or_else(|| "bitmaps".to_owned(), |r| r.id().to_owned())
}

/// What the spec says about a bitmap unusable for the model's reason
/// `why`, where the reason alone does not say it.
fn spec_word(why: &str) -> &'static str {
    match why {
        "refcount.unallocated" | "bitmaps.table.bounds" | "bitmaps.data.bounds" => {
            " (a cluster of its directory, table or data is past the end of the file or has refcount 0; Host cluster management: a refcount of 0 means the cluster is free, and a free cluster may be reused for anything)"
        }
        "in_use" => " (Bitmap directory: an in_use bitmap may be inconsistent or outdated)",
        _ => "",
    }
}

/// The bitmaps of a valid image whose extension is inconsistent: none may
/// be used (`bitmaps.ignore-inconsistent`).
pub fn inconsistent(obs: &Observation, cx: &Context, r: &mut Reasons) {
    for b in &obs.bitmaps {
        if b.used() {
            let v2 = cx.facts.is_some_and(|f| f.version == 2);
            let fallback = if v2 { "v2-image" } else { "autoclear-clear" };
            r.lenient.push_unusable(&cx.why_unusable(&b.name, fallback), format!(
                "used bitmap {} of an inconsistent bitmaps extension (autoclear bit 0 clear or a version 2 image)",
                short(&b.name)
            ));
        } else {
            r.pass.push(
                Check::Allowed,
                format!(
                    "listed bitmap {} of the inconsistent extension without using it",
                    short(&b.name)
                ),
            );
        }
    }
}

/// Expected and observed bitmaps side by side, matched by name (a name
/// listed cut at its NUL byte matches, as a mismatch).
pub fn compare_bitmaps(
    e: &Expected,
    obs: &Observation,
    cx: &Context,
    limits: &[&str],
    r: &mut Reasons,
) {
    let expected = e.bitmaps.as_deref().unwrap_or(&[]);
    let mut matched = vec![false; obs.bitmaps.len()];
    for want in expected {
        let free = || {
            obs.bitmaps
                .iter()
                .enumerate()
                .filter(|(i, _)| !matched[*i])
                .map(|(i, o)| (i, o.name.as_str()))
        };
        let exact = free().find(|(_, n)| *n == want.name).map(|(i, _)| i);
        let cut = cut_at_nul(&want.name)
            .and_then(|c| free().find(|(_, n)| *n == c))
            .map(|(i, _)| i);
        let Some(i) = exact.or(cut) else {
            if want.usable && !limits.is_empty() {
                r.pass.push(
                    Check::MissingBitmap,
                    format!(
                        "did not list bitmap {} (allowed: limits {})",
                        short(&want.name),
                        limits.join(", ")
                    ),
                );
            } else if want.usable {
                r.strict.push(
                    Check::MissingBitmap,
                    format!("did not list the conforming bitmap {}", short(&want.name)),
                );
            } else {
                r.mismatch.push(
                    Check::MissingBitmap,
                    format!(
                        "did not list bitmap {}, which is present (though unusable: {})",
                        short(&want.name),
                        why_unusable(want)
                    ),
                );
            }
            continue;
        };
        matched[i] = true;
        let got = &obs.bitmaps[i];
        if exact.is_none() {
            r.mismatch
                .push(Check::NameCut, name_cut(&got.name, &want.name));
        }
        if got.granularity_bits != Some(want.granularity_bits) {
            r.mismatch.push(
                Check::Granularity,
                format!(
                    "bitmap {}: granularity {} instead of 2^{}",
                    short(&want.name),
                    got.granularity_bits
                        .map(|g| format!("2^{g}"))
                        .unwrap_or_else(|| "not a power of two".into()),
                    want.granularity_bits
                ),
            );
        }
        if got.flags.in_use != want.flags.in_use || got.flags.auto != want.flags.auto {
            r.mismatch.push(
                Check::Flags,
                format!(
                    "bitmap {}: flags in_use={} auto={} instead of in_use={} auto={}",
                    want.name, got.flags.in_use, got.flags.auto, want.flags.in_use, want.flags.auto
                ),
            );
        }
        if want.usable {
            if got.used() {
                match (&want.content_sha256, &got.content_sha256) {
                    (Some(w), Some(g)) if w != g => r.mismatch.push(Check::Contents, format!(
                        "bitmap {}: contents differ (sha256 {g}, {} bits set; expected {w}, {} bits set)",
                        short(&want.name),
                        got.set_bits.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                        want.set_bits.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    )),
                    (Some(_), None) => r.pass.push(Check::Allowed, format!(
                        "bitmap {}: usable, contents not reported",
                        short(&want.name)
                    )),
                    _ => {}
                }
            } else {
                let err = got.error.as_deref().unwrap_or("no message");
                let (bucket, text): (&mut Bucket, String) = if !limits.is_empty() {
                    (
                        &mut r.pass,
                        format!(
                            "refused bitmap {} (allowed: limits {}): {err}",
                            short(&want.name),
                            limits.join(", ")
                        ),
                    )
                } else {
                    (
                        &mut r.strict,
                        format!(
                            "refused to use the conforming bitmap {}: {err}",
                            short(&want.name)
                        ),
                    )
                };
                bucket.push_msg(Check::BitmapRefused, Some(err), text);
            }
        } else if got.used() {
            r.lenient.push_unusable(
                &cx.why_unusable(&want.name, why_token(want)),
                format!(
                    "used bitmap {}, which must not be used: {}",
                    short(&want.name),
                    why_unusable(want)
                ),
            );
        }
    }
    let extra: Vec<ObservedBitmap> = obs
        .bitmaps
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(b, _)| b.clone())
        .collect();
    if !extra.is_empty() {
        r.mismatch.push(
            Check::ExtraBitmap,
            format!("lists bitmaps the image does not have: {}", names(&extra)),
        );
    }
}

/// What an implementation that reads bitmaps did with an invalid image:
/// its own checker's words, a refusal (allowed), the bitmaps it used.
pub fn invalid(e: &Expected, obs: &Observation, cx: &Context, r: &mut Reasons) {
    let rules = if e.rules.is_empty() {
        "no rule named".to_owned()
    } else {
        e.rules.join(", ")
    };
    if let Some(c) = &obs.integrity {
        if c.flags_corrupt() && obs.opened {
            r.pass.push(Check::Allowed, format!(
                "its checker reports {} corruption(s) and {} check error(s), yet it opens the image and lists {} bitmap(s)",
                c.corruptions,
                c.check_errors,
                obs.bitmaps.len()
            ));
        } else if c.ran && !c.flags_corrupt() {
            r.pass.push(
                Check::Allowed,
                format!("its checker finds no corruption ({} leak(s))", c.leaks),
            );
        }
    }
    if let Some(err) = obs.refusal() {
        super::open::refused_invalid(&rules, err, r);
        return;
    }
    let used: Vec<&ObservedBitmap> = obs.bitmaps.iter().filter(|b| b.used()).collect();
    // Per-bitmap usability: the manifest's, else the model's.
    let usability: Option<Vec<(&str, bool)>> = match (&e.bitmaps, cx.model) {
        (Some(x), _) => Some(x.iter().map(|w| (w.name.as_str(), w.usable)).collect()),
        (None, Some(m)) => Some(m.iter().map(|b| (b.name.as_str(), b.usable)).collect()),
        (None, None) => None,
    };
    if let Some(list) = &usability {
        let which = if e.bitmaps.is_some() {
            ""
        } else {
            "the model says "
        };
        for b in &used {
            let found = find_name(list.iter().map(|(n, _)| *n).enumerate(), &b.name);
            if let Some((i, true)) = found {
                r.mismatch
                    .push(Check::NameCut, name_cut(&b.name, list[i].0));
            }
            if found.is_none_or(|(i, _)| !list[i].1) {
                let why = match found {
                    Some((i, _)) => cx.why_unusable(list[i].0, &bitmap_rules_token(e)),
                    None => "not-in-image".to_owned(),
                };
                r.lenient.push_unusable(
                    &why,
                    format!(
                        "used bitmap {} of an invalid image ({rules}), which {which}must not be used{}",
                        short(&b.name),
                        spec_word(&why)
                    ),
                );
            }
        }
        if e.bitmaps.is_none() && r.lenient.is_empty() && !used.is_empty() {
            r.pass.push(Check::Allowed, format!(
                "used {} bitmap(s) that stay usable despite {rules} (the error is outside the bitmaps extension)",
                used.len()
            ));
        }
    } else if extension_unusable(e) {
        for b in &used {
            r.lenient.push_unusable(
                &cx.why_unusable(&b.name, &bitmap_rules_token(e)),
                format!(
                    "used bitmap {} although the bitmaps extension is invalid ({rules})",
                    short(&b.name)
                ),
            );
        }
    } else if !used.is_empty() {
        r.pass.push(Check::Allowed, format!(
            "used {} bitmap(s) of an image that breaks {rules}, outside the bitmaps extension (not judged)",
            used.len()
        ));
    }
    if r.lenient.is_empty() {
        r.pass.push(Check::Allowed, format!(
            "opened the invalid image ({rules}), listed {} bitmap(s), used none that must not be used",
            obs.bitmaps.len()
        ));
    }
}
