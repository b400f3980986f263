//! Saving a minimised disagreement: `OUT/findings/KEY/` with the image,
//! both verdicts, the original and minimised recipes, and a reproducer;
//! saved only when the saved image, judged again, disagrees the same way
//! (otherwise it goes to `OUT/not-reproduced/KEY/` with the replay).

use super::judging::judge_bytes;
use super::minimise::Minimised;
use crate::runner::judge::cause::Cause;
use crate::runner::{adapters::Adapter, RunOptions};
use anyhow::Result;
use generator::expected::Expected;
use generator::ImageSpec;
use serde::Serialize;
use std::path::Path;

/// A saved, minimised disagreement (`OUT/findings/KEY/finding.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub key: String,
    pub implementation: String,
    pub case_index: u64,
    pub origin: String,
    pub outcome: String,
    pub detail: Vec<String>,
    /// The cause signature the key is made from, readable.
    pub signature: String,
    pub cause: Cause,
    /// What the reference model says of the minimised image.
    pub expected: Expected,
    /// The case's catalogue mutations (empty for a valid spec), and how
    /// many random byte edits it had.
    pub mutations: Vec<String>,
    pub byte_edits: usize,
    /// What minimising kept of them.
    pub minimised_mutations: Vec<String>,
    pub minimised_byte_edits: usize,
    /// The seed the mutations make their choices with.
    pub recipe_seed: u64,
    /// The (shrunk) base spec of the minimised recipe: the minimised
    /// mutations applied to it (with `recipe_seed`) and the remaining byte
    /// edits give the image the byte-level reduction started from.
    pub minimised_spec: ImageSpec,
    /// File length and non-zero bytes before and after minimising.
    pub original_bytes: u64,
    pub original_nonzero_bytes: u64,
    pub minimised_bytes: u64,
    pub minimised_nonzero_bytes: u64,
    /// Judge calls spent minimising.
    pub minimise_trials: u32,
    pub reproduce: Vec<String>,
}

/// The number of non-zero bytes of `b`.
pub(super) fn nonzero_bytes(b: &[u8]) -> u64 {
    b.iter().filter(|&&x| x != 0).count() as u64
}

/// What a case was before minimising.
pub(super) struct Original {
    pub index: u64,
    pub origin: String,
    pub bytes: u64,
    pub nonzero_bytes: u64,
    pub mutations: Vec<String>,
    pub byte_edits: usize,
}

/// The `state.json` outcome that counts disagreements whose saved image,
/// judged again, did not disagree the same way.
pub const NOT_REPRODUCED: &str = "not-reproduced";

/// Saves `m` under `OUT/findings/KEY/` if it reproduces: it is written to
/// `OUT/pending/KEY/` first, then the saved image is judged again under
/// `adapter` with the expectation saved beside it (read back from
/// `finding.json`), on a fresh copy in a fresh directory. The same key
/// again: the directory becomes `OUT/findings/KEY/` (true). Anything
/// else: `OUT/not-reproduced/KEY/`, with the replay's result in
/// `replay.json` (false).
pub(super) fn save_if_reproduced(
    adapter: &dyn Adapter,
    out: &Path,
    scratch: &Path,
    key: &str,
    original: Original,
    m: Minimised,
    opts: &RunOptions,
) -> Result<bool> {
    let pending = out.join("pending");
    let staged = pending.join(key);
    if staged.exists() {
        std::fs::remove_dir_all(&staged)?;
    }
    save(&pending, scratch, key, original, m, adapter.name())?;
    let bytes = std::fs::read(staged.join("image.qcow2"))?;
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(staged.join("finding.json"))?)?;
    let expected: Expected = serde_json::from_value(saved["expected"].clone())?;
    let fresh = crate::runner::process::temp_dirs::scratch("replay")?;
    let again = judge_bytes(
        adapter,
        fresh.path(),
        "replay.qcow2",
        &bytes,
        &expected,
        opts,
    )?;
    let reproduced = again.outcome.key() == key;
    let to = if reproduced {
        out.join("findings").join(key)
    } else {
        std::fs::write(
            staged.join("replay.json"),
            serde_json::to_string_pretty(&again)? + "\n",
        )?;
        out.join("not-reproduced").join(key)
    };
    settle(&staged, &to)?;
    Ok(reproduced)
}

/// Moves a staged finding directory to `to` (replacing what is there).
pub(super) fn settle(staged: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::rename(staged, to)
}

/// Saves `m` under `DIR/KEY/` (`DIR` is `OUT/pending` until it
/// reproduces).
pub(super) fn save(
    out: &Path,
    scratch: &Path,
    key: &str,
    original: Original,
    m: Minimised,
    implementation: &str,
) -> Result<()> {
    let dir = out.join(key);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("image.qcow2"), &m.bytes)?;
    let mut reproduce = vec![format!(
        "qcow2-conform check findings/{key}/image.qcow2   # the model's verdict"
    )];
    reproduce.extend(m.last.observation.commands.iter().map(|c| {
        c.replace(
            &format!("{}/minimised.qcow2", scratch.display()),
            &format!("findings/{key}/image.qcow2"),
        )
    }));
    let f = Finding {
        key: key.to_string(),
        implementation: implementation.to_string(),
        case_index: original.index,
        origin: original.origin,
        outcome: m.last.outcome.kind.as_str().to_string(),
        detail: m.last.outcome.detail.clone(),
        signature: m.last.outcome.signature(),
        cause: m.last.outcome.cause.clone(),
        expected: m.expected,
        mutations: original.mutations,
        byte_edits: original.byte_edits,
        minimised_mutations: m.recipe.mutations.clone(),
        minimised_byte_edits: m.recipe.edits.len(),
        recipe_seed: m.recipe.seed,
        minimised_spec: m.recipe.base,
        original_bytes: original.bytes,
        original_nonzero_bytes: original.nonzero_bytes,
        minimised_bytes: m.bytes.len() as u64,
        minimised_nonzero_bytes: nonzero_bytes(&m.bytes),
        minimise_trials: m.trials,
        reproduce,
    };
    std::fs::write(
        dir.join("finding.json"),
        serde_json::to_string_pretty(&f)? + "\n",
    )?;
    Ok(())
}
