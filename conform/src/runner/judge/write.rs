//! The checks that change a copy: the write check (`corrupting` when it
//! found a problem; each problem names the obligation it breaks,
//! [`crate::runner::judge::write_check::obligation_of`]: `write.clear-unknown-autoclear`,
//! `write.leaves-valid`, `bitmaps.mark-written`) and QEMU's
//! bitmap-operations check (`bitmaps.ops-as-modelled`).

use super::context::Context;
use crate::runner::judge::cause::Check;
use crate::runner::judge::outcome::{Outcome, OutcomeKind};
use crate::runner::judge::write_check;
use crate::runner::observation::Observation;
use spec_model::Obligation;

/// The `corrupting` outcome of a write or bitmap-operations check that
/// found problems, if one did.
pub fn corrupting(obs: &Observation, cx: &Context) -> Option<Outcome> {
    if let Some(w) = &obs.write {
        if let Some(first) = w.found.problems.first() {
            let mut d = vec![format!(
                "after writing {} bytes at {} (written: {}):",
                w.len, w.offset, w.written
            )];
            d.extend(w.found.problems.iter().cloned());
            let cause = cx
                .cause(Check::Write, Some(first))
                .with_obligation(Some(write_check::obligation_of(first)));
            return Some(Outcome::new(OutcomeKind::Corrupting, d, cause));
        }
    }
    if let Some(o) = &obs.ops {
        if let Some(first) = o.found.problems.first() {
            let mut d = vec![format!(
                "QEMU's bitmap operations ({} step(s)) left the image wrong:",
                o.steps.len()
            )];
            d.extend(o.found.problems.iter().cloned());
            let cause = cx
                .cause(Check::BitmapOps, Some(first))
                .with_obligation(Some(Obligation::BitmapsOpsAsModelled));
            return Some(Outcome::new(OutcomeKind::Corrupting, d, cause));
        }
    }
    None
}
