//! A failing sequence as a finding: its deduplication key, its
//! minimisation (the sequence's shrinker, kept while the same key fails),
//! and what is saved for it: the original and minimised sequences, the
//! problems, the QMP transcript and a shell reproducer.

use super::gen::Sequence;
use super::run::SeqResult;
use crate::campaign::shrink::Shrink;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::Path;

/// A failure's deduplication key: the first problem (or harness error)
/// with numbers, quoted names and hashes taken out, as a short slug plus
/// a digest.
pub fn key(r: &SeqResult) -> String {
    let first = r
        .error
        .clone()
        .or_else(|| r.problems.first().cloned())
        .unwrap_or_default();
    let mut unquoted = String::new();
    let mut in_quote = false;
    for c in first.chars() {
        if c == '"' {
            in_quote = !in_quote;
            if !in_quote {
                unquoted.push('N');
            }
        } else if !in_quote {
            unquoted.push(c);
        }
    }
    let norm = unquoted
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let slug: String = norm
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
        .collect::<String>()
        .split_whitespace()
        .take(6)
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase();
    let digest = hex::encode(Sha256::digest(norm.as_bytes()));
    format!("seq-{slug}-{}", &digest[..10])
}

/// A saved finding (`finding.json`, and a regression file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeqFinding {
    pub key: String,
    pub seed: u64,
    pub index: u64,
    /// The first problems found (or the harness error).
    pub problems: Vec<String>,
    pub original: Sequence,
    pub minimised: Sequence,
    /// `qemu-storage-daemon --version`'s first line where it was found: a
    /// replay on that version must fail the same way.
    #[serde(default)]
    pub qemu: Option<String>,
    /// Found through QEMU's offline tools (`--impl qemu`), not the
    /// daemon: replayed, and reproduced by `repro.sh`, the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
}

/// The `state.json` outcome that counts findings whose saved sequence,
/// replayed, did not fail the same way (kept under `OUT/not-reproduced/`).
pub const NOT_REPRODUCED: &str = "not-reproduced";

/// Shrinks `seq` while it still fails with `key`, within `budget` runs of
/// `run`; returns the smallest failing sequence and its result. Passes:
/// cut everything after the failing step, drop each step in turn (from
/// the end), then try each simplification of the steps left; repeated
/// while a pass shrinks something ([`Shrink`], shared with the chains).
pub fn minimise(
    seq: &Sequence,
    first: SeqResult,
    budget: usize,
    mut run: impl FnMut(&Sequence) -> Option<SeqResult>,
) -> (Sequence, SeqResult) {
    let want = key(&first);
    let same = |r: &SeqResult| r.failed() && key(r) == want;
    let mut s = Shrink::new(seq.clone(), first, budget);
    loop {
        let mut changed = false;
        if let Some(at) = s.best.1.at_step {
            if at + 1 < s.best.0.steps.len() {
                let cut = Sequence {
                    steps: s.best.0.steps[..=at].to_vec(),
                    ..s.best.0.clone()
                };
                changed |= s.try_one(cut, &mut run, &same);
            }
        }
        let mut i = s.best.0.steps.len();
        while i > 0 {
            i -= 1;
            if i >= s.best.0.steps.len() {
                continue;
            }
            let mut cand = s.best.0.clone();
            cand.steps.remove(i);
            changed |= s.try_one(cand, &mut run, &same);
        }
        let n = s.best.0.steps.len();
        for cand in s.best.0.shrunk() {
            if cand.steps.len() == n && s.try_one(cand, &mut run, &same) {
                changed = true;
                break;
            }
        }
        if !changed || s.exhausted() {
            return s.best;
        }
    }
}

/// The shell reproducer of a finding: offline ones replay with QEMU's
/// offline tools; live ones through the binary (`qcow2-conform campaign
/// --replay .` beside `finding.json`), which prints each step against the
/// model, so nothing else (no QMP shell, no socat) is needed.
pub fn reproducer(seq: &Sequence, f: &SeqFinding) -> String {
    let mut s = String::new();
    let how = if f.offline {
        "--impl qemu --sequences (offline)"
    } else {
        "--impl qemu-live --sequences"
    };
    let _ = writeln!(
        s,
        "#!/bin/sh\n# qcow2-conform campaign {how}: finding {}\n# seed {}, sequence {}; problems found:",
        f.key, f.seed, f.index
    );
    for p in &f.problems {
        let _ = writeln!(s, "#   {}", p.replace('\n', " "));
    }
    if f.offline {
        s.push_str(&super::offline::reproducer_body(seq));
    } else {
        s.push_str(&replay_body());
    }
    s
}

/// The body of a script that replays the finding beside it through the
/// binary (`QCOW2_CONFORM`, else `qcow2-conform` on PATH; the daemon is
/// `QSD_PROG`, else PATH's), passing its arguments on (`--json`).
fn replay_body() -> String {
    concat!(
        "# Replays the saved sequence step by step against the model with\n",
        "# qemu-storage-daemon (QSD_PROG, else PATH); exit 2: it still fails.\n",
        "cd \"$(dirname \"$0\")\" || exit 1\n",
        "exec \"${QCOW2_CONFORM:-qcow2-conform}\" campaign --replay . \"$@\"\n"
    )
    .to_owned()
}

/// Writes `dir/repro.sh`: a replay of the finding in `dir` through the
/// binary, headed by `what`.
pub fn write_replay_script(dir: &Path, what: &str) -> std::io::Result<()> {
    let repro = dir.join("repro.sh");
    std::fs::write(
        &repro,
        format!("#!/bin/sh\n# qcow2-conform: {what}\n{}", replay_body()),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&repro, std::fs::Permissions::from_mode(0o755))
}

/// Saves `f` under `OUT/findings/KEY/` only if it reproduces: it is
/// written to `OUT/pending/KEY/` first, its `finding.json` is read back
/// and its minimised sequence run again by `replay` on a fresh image;
/// when that fails with the same key the directory becomes
/// `OUT/findings/KEY/` (true), otherwise `OUT/not-reproduced/KEY/`, with
/// the replay's result and transcript beside the first run's (false).
pub fn save_if_reproduced(
    out: &Path,
    f: &SeqFinding,
    result: &SeqResult,
    mut replay: impl FnMut(&Sequence) -> anyhow::Result<SeqResult>,
) -> anyhow::Result<bool> {
    let pending = out.join("pending");
    let staged = pending.join(&f.key);
    if staged.exists() {
        std::fs::remove_dir_all(&staged)?;
    }
    save(&pending, f, result)?;
    let text = std::fs::read_to_string(staged.join("finding.json"))?;
    let saved: SeqFinding = serde_json::from_str(&text)?;
    let again = replay(&saved.minimised)?;
    let reproduced = again.failed() && key(&again) == saved.key;
    let to = if reproduced {
        out.join("findings").join(&f.key)
    } else {
        std::fs::write(
            staged.join("replay.json"),
            serde_json::to_string_pretty(&again)? + "\n",
        )?;
        std::fs::write(
            staged.join("replay-transcript.qmp"),
            again.transcript.join("\n") + "\n",
        )?;
        out.join("not-reproduced").join(&f.key)
    };
    crate::campaign::findings::settle(&staged, &to)?;
    Ok(reproduced)
}

/// Saves a finding under `dir/KEY/` (once per key): `finding.json`, the
/// QMP transcript (the tools' command lines offline), and `repro.sh`.
pub fn save(dir: &Path, f: &SeqFinding, result: &SeqResult) -> std::io::Result<()> {
    let d = dir.join(&f.key);
    if d.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&d)?;
    std::fs::write(
        d.join("finding.json"),
        serde_json::to_string_pretty(f).map_err(std::io::Error::other)? + "\n",
    )?;
    std::fs::write(
        d.join("transcript.qmp"),
        result.transcript.join("\n") + "\n",
    )?;
    let repro = d.join("repro.sh");
    std::fs::write(&repro, reproducer(&f.minimised, f))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&repro, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_numbers_and_names() {
        let r = |m: &str| SeqResult {
            problems: vec![m.to_owned()],
            ..SeqResult::default()
        };
        assert_eq!(
            key(&r(
                "bitmap \"a\": QEMU's debug hash 12ab, the model predicts 99"
            )),
            key(&r(
                "bitmap \"b\": QEMU's debug hash 77, the model predicts 3"
            ))
        );
        assert_ne!(
            key(&r("bitmap \"a\" is missing")),
            key(&r("bitmap \"a\" appeared"))
        );
        assert!(key(&r("bitmap \"a\" is missing")).starts_with("seq-bitmap-n-is-missing-"));
    }
}
