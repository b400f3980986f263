//! Minimising a disagreement: fewer mutations and byte edits, a smaller
//! base spec ([`generator::shrink`]), then fewer non-zero bytes, while the
//! implementation keeps disagreeing the same way.

use super::candidates::{expected_from_model, Candidate, ImageRecipe, Realised};
use super::judging::{judge_bytes, key};
use crate::runner::judge::cause::Check;
use crate::runner::{
    adapters::Adapter,
    judge::{Outcome, OutcomeKind},
    CaseResult, RunOptions,
};
use anyhow::Result;
use generator::expected::Expected;
use generator::mutate;
use generator::shrink::smaller_specs;
use std::path::Path;

/// Budget of judge calls spent minimising one disagreement.
pub const MINIMISE_BUDGET: u32 = 300;

/// What minimising a disagreement produced.
pub struct Minimised {
    pub bytes: Vec<u8>,
    pub expected: Expected,
    /// The judgement of the minimised image.
    pub last: CaseResult,
    /// The recipe after dropping mutations and edits and shrinking the
    /// spec: it rebuilds the image the byte-level reduction started from.
    pub recipe: ImageRecipe,
    /// Judge calls spent.
    pub trials: u32,
}

/// Where a greedy descent takes the next recipes to try from.
type Next<'a> = &'a dyn Fn(&ImageRecipe) -> Vec<ImageRecipe>;

/// The recipes one drop away from `recipe`, in order: without one of its
/// byte edits (`edits`), or without one of its mutations, that drop
/// followed by the same drop with the mutation's preparation folded into
/// the base spec (when that changes the spec).
fn drops(recipe: &ImageRecipe, edits: bool) -> Vec<ImageRecipe> {
    let n = if edits {
        recipe.edits.len()
    } else {
        recipe.mutations.len()
    };
    let mut out = Vec::new();
    for i in 0..n {
        let mut r = recipe.clone();
        if edits {
            r.edits.remove(i);
            out.push(r);
            continue;
        }
        let id = r.mutations.remove(i);
        let mut folded = r.clone();
        out.push(r);
        if let Some(m) = mutate::by_id(&id) {
            if mutate::prepare(m, &mut folded.base, folded.seed).is_ok()
                && folded.base != recipe.base
            {
                out.push(folded);
            }
        }
    }
    out
}

/// `recipe` over each smaller base spec, the rest kept.
fn shrinks(recipe: &ImageRecipe) -> Vec<ImageRecipe> {
    smaller_specs(&recipe.base)
        .into_iter()
        .map(|base| ImageRecipe {
            base,
            ..recipe.clone()
        })
        .collect()
}

/// Shrinks a disagreeing case while the implementation keeps disagreeing
/// in the same way (same outcome kind, same deduplication key): (1) drop
/// mutations (or fold their preparation into the base spec), then byte
/// edits, one at a time; (2) shrink the base spec and
/// re-apply what is left; (3) zero 512-byte blocks and trim the tail.
/// `kind` is the outcome the case's own judgement gave; at most `budget`
/// judge calls are spent on trials.
pub fn minimise(
    adapter: &dyn Adapter,
    dir: &Path,
    c: Candidate,
    want: &Outcome,
    opts: &RunOptions,
    budget: u32,
) -> Result<Minimised> {
    let kind = want.kind;
    let from_write = kind == OutcomeKind::Corrupting || want.cause.check == Check::HeaderRewrite;
    let want = key(want);
    let total = budget;
    let mut budget = budget;
    // The write check only matters when the disagreement came from it (a
    // corruption, or a header field the write's open rewrote).
    let opts = &RunOptions {
        writes: opts.writes && from_write,
        ..opts.clone()
    };
    let still = |bytes: &[u8], expected: &Expected, budget: &mut u32| -> Result<bool> {
        if *budget == 0 {
            return Ok(false);
        }
        *budget -= 1;
        let r = judge_bytes(adapter, dir, "candidate.qcow2", bytes, expected, opts)?;
        Ok(key(&r.outcome) == want)
    };
    let try_recipe = |r: &ImageRecipe, budget: &mut u32| -> Result<Option<Realised>> {
        let Some(x) = r.realise() else {
            return Ok(None);
        };
        Ok((x.agrees && still(&x.bytes, &x.expected, budget)?).then_some(x))
    };
    // Greedy descent: take the first recipe `next` offers that keeps the
    // disagreement and start again from it, until none does or the budget
    // is spent. Returns the last one kept.
    let descend =
        |recipe: &mut ImageRecipe, next: Next, budget: &mut u32| -> Result<Option<Realised>> {
            let mut kept = None;
            'again: loop {
                for r in next(recipe) {
                    if let Some(x) = try_recipe(&r, budget)? {
                        *recipe = r;
                        kept = Some(x);
                        continue 'again;
                    }
                    if *budget == 0 {
                        break 'again;
                    }
                }
                break;
            }
            Ok(kept)
        };
    let (mut bytes, mut expected, mut recipe) = (c.bytes, c.expected, c.recipe);
    // 1. Delta debugging over the mutation set, then over the byte edits:
    //    drop one at a time until no single drop keeps the disagreement. A
    //    mutation that cannot go is tried once more with its preparation
    //    folded into the base spec: the disagreement may need only what it
    //    asked of the spec (a bitmap, a guest write), not its byte change.
    // 2. Shrink the base spec; the remaining mutations are re-applied to
    //    every smaller spec (their preparation may grow it back).
    let mutations = |r: &ImageRecipe| drops(r, false);
    let edits = |r: &ImageRecipe| drops(r, true);
    let stages: [Next; 3] = [&mutations, &edits, &shrinks];
    for next in stages {
        if let Some(x) = descend(&mut recipe, next, &mut budget)? {
            (bytes, expected) = (x.bytes, x.expected);
        }
    }
    // 3. Byte-level reduction: zero runs of the non-zero 512-byte blocks
    //    (never block 0, the header), halving the run length, each trial
    //    judged against the model's verdict of the trial image. A trial
    //    that breaks a rule the image did not break before is refused
    //    whatever its key: the key names only the first cause, and a
    //    reproducer keeps only the cause (no table cut off, no refcount
    //    broken on the way).
    let causes: std::collections::BTreeSet<String> = expected.rules.iter().cloned().collect();
    let only_the_cause = |e: &Expected| e.rules.iter().all(|r| causes.contains(r));
    let nonzero = |bytes: &[u8]| -> Vec<usize> {
        (1..bytes.len().div_ceil(512))
            .filter(|&b| {
                bytes[b * 512..((b + 1) * 512).min(bytes.len())]
                    .iter()
                    .any(|&x| x != 0)
            })
            .collect()
    };
    let mut run = (nonzero(&bytes).len() / 2).max(1);
    while budget > 0 {
        let blocks = nonzero(&bytes);
        let mut changed = false;
        for chunk in blocks.chunks(run) {
            let mut trial = bytes.clone();
            for &b in chunk {
                let end = ((b + 1) * 512).min(trial.len());
                trial[b * 512..end].fill(0);
            }
            let e = expected_from_model(&trial);
            if only_the_cause(&e) && still(&trial, &e, &mut budget)? {
                bytes = trial;
                expected = e;
                changed = true;
            }
            if budget == 0 {
                break;
            }
        }
        if !changed {
            if run == 1 {
                break;
            }
            run /= 2;
        }
    }
    // 4. Drop trailing zeros (whole 512-byte blocks) if that keeps the
    //    disagreement.
    let keep = nonzero(&bytes)
        .last()
        .map_or(512, |b| (b + 1) * 512)
        .min(bytes.len());
    if keep < bytes.len() && budget > 0 {
        let trial = bytes[..keep].to_vec();
        let e = expected_from_model(&trial);
        if only_the_cause(&e) && still(&trial, &e, &mut budget)? {
            bytes = trial;
            expected = e;
        }
    }
    let last = judge_bytes(adapter, dir, "minimised.qcow2", &bytes, &expected, opts)?;
    Ok(Minimised {
        bytes,
        expected,
        last,
        recipe,
        trials: total - budget,
    })
}
