//! Stacks: one or more mutations applied to one given base spec (the
//! campaign's stacked cases, and its minimiser, which re-applies mutations
//! to shrunk specs), and [`prepare`], a mutation's spec step on its own.

use super::{by_id, expect, target, MutateError, Mutation, Skip, SPEC_BYTES};
use crate::expected::Expected;
use crate::spec::ImageSpec;
use arbitrary::Unstructured;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One or more mutations applied to one given base spec (see
/// [`apply_stack`]).
#[derive(Debug, Clone)]
pub struct Stacked {
    /// The mutated image.
    pub bytes: Vec<u8>,
    /// The base spec after every mutation's `prepare` (and the header
    /// fit): what the image was built from before the byte changes.
    pub spec: ImageSpec,
    /// The mutations whose byte changes were made, in order.
    pub applied: Vec<&'static str>,
    /// The mutations that did not apply to this image, with the reason.
    pub skipped: Vec<(&'static str, Skip)>,
    /// The expected verdict by construction, when exactly one mutation was
    /// applied (as for [`make`](super::make)). Several mutations may mask or undo each
    /// other, so a stack's verdict is the reference model's to give.
    pub expected: Option<Expected>,
}

/// The randomness of mutation `id` within a stack: FNV-1a of the id, so
/// that a mutation makes the same choices whichever other mutations share
/// the stack (dropping one while minimising leaves the others' alone).
fn stack_stream(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs only the preparation of `m` on `spec`, with the randomness
/// [`apply_stack`] gives it for `seed`: what the stack needs of the spec
/// for `m` (a bitmap, a snapshot, a guest write), without its byte change.
/// `apply_stack(&[m], base)` and `apply_stack(&[m], prepared)` start from
/// the same spec when the preparation is idempotent.
pub fn prepare(m: &Mutation, spec: &mut ImageSpec, seed: u64) -> Result<(), MutateError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stack_stream(m.id));
    rng.set_stream(2);
    let mut raw = vec![0u8; SPEC_BYTES];
    rng.fill_bytes(&mut raw);
    (m.prepare)(spec, &mut Unstructured::new(&raw))?;
    Ok(())
}

/// Applies the mutations `ms`, in order, to one image built from `base`.
///
/// Every mutation's `prepare` runs on (a copy of) `base` in turn, each
/// with its own seeded randomness; the header is fitted and the spec built
/// once; then every mutation's `apply` edits that same image in turn.
/// Deterministic in `(ms, base, seed)`, and a mutation's choices depend
/// only on its id, `seed` and what the spec and image look like when its
/// turn comes. Unlike [`make`](super::make), no fresh base spec is tried.
///
/// Semantics of conflicts: a later `prepare` may undo what an earlier one
/// arranged, and a later `apply` may overwrite or undo an earlier change
/// (re-encoding the directory, say); nothing checks that every targeted
/// rule ends up broken. A mutation whose `apply` does not fit the image
/// as it then is (no such structure, or the file was truncated by an
/// earlier mutation) is skipped and listed in [`Stacked::skipped`], its
/// partial edits discarded. It is an error only when no mutation applies,
/// or the prepared spec does not build.
pub fn apply_stack(ms: &[&Mutation], base: &ImageSpec, seed: u64) -> Result<Stacked, MutateError> {
    let mut spec = base.clone();
    for m in ms {
        prepare(m, &mut spec, seed)?;
    }
    // The `rng` of the target is replaced per mutation below.
    let mut t = target(&mut spec, ChaCha8Rng::seed_from_u64(seed))?;
    let built_len = t.bytes.len();
    let (mut applied, mut skipped) = (Vec::new(), Vec::new());
    for m in ms {
        if t.bytes.len() < built_len {
            skipped.push((m.id, "an earlier mutation truncated the file"));
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stack_stream(m.id));
        rng.set_stream(3);
        t.rng = rng;
        let (bytes, tspec) = (t.bytes.clone(), t.spec.clone());
        match (m.apply)(&mut t) {
            Ok(()) => applied.push(m.id),
            Err(reason) => {
                t.bytes = bytes;
                t.spec = tspec;
                skipped.push((m.id, reason));
            }
        }
    }
    if applied.is_empty() {
        return Err(MutateError::NoneApplied(
            skipped
                .iter()
                .map(|(id, r)| format!("{id}: {r}"))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    // By construction only for a stack of one: another mutation's
    // `prepare` may have undone what this one's arranged.
    let expected = match ms {
        [m] => Some(expect(m, &t.spec)),
        _ => None,
    };
    Ok(Stacked {
        bytes: t.bytes,
        spec,
        applied,
        skipped,
        expected,
    })
}

/// [`apply_stack`] for mutation ids.
pub fn apply_stack_by_id(
    ids: &[&str],
    base: &ImageSpec,
    seed: u64,
) -> Result<Stacked, MutateError> {
    let ms = ids
        .iter()
        .map(|id| by_id(id).ok_or_else(|| MutateError::Unknown(id.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    apply_stack(&ms, base, seed)
}
