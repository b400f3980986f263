//! A failing sequence as a finding: its deduplication key, its
//! minimisation (the sequence's shrinker, kept while the same key fails),
//! and what is saved for it: the original and minimised sequences, the
//! problems, the QMP transcript and a shell reproducer.

use super::gen::{Sequence, Step};
use super::run::SeqResult;
use crate::runner::adapters::qemu_live::daemon::{self, NODE};
use crate::runner::adapters::qemu_live::oracle::{fill_byte, qmp_command};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spec_model::semantics::Op;
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
/// while a pass shrinks something.
pub fn minimise(
    seq: &Sequence,
    first: SeqResult,
    budget: usize,
    mut run: impl FnMut(&Sequence) -> Option<SeqResult>,
) -> (Sequence, SeqResult) {
    let want = key(&first);
    let mut best = (seq.clone(), first);
    let mut spent = 0;
    let mut try_one =
        |cand: Sequence, best: &mut (Sequence, SeqResult), spent: &mut usize| -> bool {
            if *spent >= budget {
                return false;
            }
            *spent += 1;
            match run(&cand) {
                Some(r) if r.failed() && key(&r) == want => {
                    *best = (cand, r);
                    true
                }
                _ => false,
            }
        };
    loop {
        let mut changed = false;
        if let Some(at) = best.1.at_step {
            if at + 1 < best.0.steps.len() {
                let cut = Sequence {
                    size: best.0.size,
                    shape: best.0.shape,
                    steps: best.0.steps[..=at].to_vec(),
                };
                changed |= try_one(cut, &mut best, &mut spent);
            }
        }
        let mut i = best.0.steps.len();
        while i > 0 {
            i -= 1;
            if i >= best.0.steps.len() {
                continue;
            }
            let mut cand = best.0.clone();
            cand.steps.remove(i);
            changed |= try_one(cand, &mut best, &mut spent);
        }
        let n = best.0.steps.len();
        for cand in best.0.shrunk() {
            if cand.steps.len() == n && try_one(cand, &mut best, &mut spent) {
                changed = true;
                break;
            }
        }
        if !changed || spent >= budget {
            return best;
        }
    }
}

/// A POSIX shell script that replays `seq` with QEMU's own tools
/// (`qemu-img`, `qemu-storage-daemon`, `socat` for QMP, `qemu-io` over
/// NBD for guest I/O), printing each bitmap's debug hash after every step.
pub fn reproducer(seq: &Sequence, f: &SeqFinding) -> String {
    if f.offline {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "#!/bin/sh\n# qcow2-conform campaign --impl qemu --sequences (offline): finding {}\n# seed {}, sequence {}; problems found:",
            f.key, f.seed, f.index
        );
        for p in &f.problems {
            let _ = writeln!(s, "#   {}", p.replace('\n', " "));
        }
        s.push_str(&super::offline::reproducer_body(seq));
        return s;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#!/bin/sh\n# qcow2-conform campaign --impl qemu-live --sequences: finding {}",
        f.key
    );
    let _ = writeln!(
        s,
        "# seed {}, sequence {}; problems found:",
        f.seed, f.index
    );
    for p in &f.problems {
        let _ = writeln!(s, "#   {}", p.replace('\n', " "));
    }
    s.push_str(
        r#"set -u
command -v socat >/dev/null || { echo "this reproducer needs socat (QMP over a Unix socket)" >&2; exit 1; }
QSD=${QSD_PROG:-qemu-storage-daemon}
D=$(mktemp -d)
PID=
qmp() { printf '%s\n%s\n' '{"execute":"qmp_capabilities"}' "$1" | socat -t 1 - "UNIX-CONNECT:$D/qmp.sock" | tail -n +3; }
trap '[ -n "$PID" ] && kill -9 $PID 2>/dev/null; rm -rf "$D"' EXIT
start() {
  rm -f "$D/qmp.sock" "$D/nbd.sock"
  "$QSD" --blockdev "driver=file,filename=$D/seq.qcow2,node-name=f0,discard=$DISCARD" \
    --blockdev "driver=qcow2,file=f0,node-name=q0,discard=$DISCARD" \
    --chardev "socket,id=m0,path=$D/qmp.sock,server=on,wait=off" --monitor chardev=m0 \
    --nbd-server "addr.type=unix,addr.path=$D/nbd.sock" &
  PID=$!
  while [ ! -S "$D/qmp.sock" ]; do sleep 0.05; done
  qmp '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"q0","name":"disk","writable":true}}'
}
io() { qemu-io -f raw "nbd+unix:///disk?socket=$D/nbd.sock" -c "$1"; }
alive() { sleep 0.1; kill -0 "$PID" 2>/dev/null || { wait "$PID"; echo "qemu-storage-daemon died: exit status $? (128+N: signal N)"; PID=; exit 1; }; }
CHECK=${QCOW2_CONFORM:-qcow2-conform}
"#,
    );
    let mut o = Vec::new();
    if let Some(c) = seq.shape.cluster_bits {
        o.push(format!("cluster_size={}", 1u64 << c.min(30)));
    }
    if seq.shape.v2 {
        o.push("compat=0.10".to_owned());
    }
    let o = if o.is_empty() {
        String::new()
    } else {
        format!("-o {} ", o.join(","))
    };
    let discard = match seq.shape.discard {
        spec_model::semantics::DiscardMode::Unmap => "unmap",
        spec_model::semantics::DiscardMode::Ignore => "ignore",
    };
    let _ = writeln!(
        s,
        "DISCARD={discard}\nqemu-img create -q -f qcow2 {o}\"$D/seq.qcow2\" {}\nstart",
        seq.size
    );
    for step in &seq.steps {
        match step {
            Step::Restart => s.push_str(
                "qmp '{\"execute\":\"quit\"}'; wait $PID; $CHECK check \"$D/seq.qcow2\"; start\n",
            ),
            Step::Crash => {
                s.push_str("kill -9 $PID; wait $PID; $CHECK check \"$D/seq.qcow2\"; start\n")
            }
            Step::Terminate => {
                s.push_str("kill -TERM $PID; wait $PID; $CHECK check \"$D/seq.qcow2\"; start\n")
            }
            Step::Op { op } => match op {
                Op::Write { offset, len } => {
                    let _ = writeln!(
                        s,
                        "io 'write -P {:#04x} {offset} {len}'",
                        fill_byte(*offset)
                    );
                }
                Op::Writes { writes } => {
                    // qemu-io's aio_write keeps the requests in flight
                    // together; aio_flush waits for them.
                    let cmds: Vec<String> = writes
                        .iter()
                        .map(|(o, l)| format!("-c 'aio_write -P {:#04x} {o} {l}'", fill_byte(*o)))
                        .collect();
                    let _ = writeln!(
                        s,
                        "qemu-io -f raw \"nbd+unix:///disk?socket=$D/nbd.sock\" {} -c aio_flush",
                        cmds.join(" ")
                    );
                }
                Op::WriteZeroes { offset, len } => {
                    let _ = writeln!(s, "io 'write -z {offset} {len}'");
                }
                Op::Discard { offset, len } => {
                    let _ = writeln!(s, "io 'discard {offset} {len}'");
                }
                other => {
                    if let Op::Resize { .. } | Op::SetActive { active: false } = other {
                        s.push_str("qmp '{\"execute\":\"block-export-del\",\"arguments\":{\"id\":\"e0\"}}'; sleep 0.2\n");
                    }
                    if let Some((cmd, args)) = qmp_command(other) {
                        let msg = serde_json::json!({"execute": cmd, "arguments": args});
                        let _ = writeln!(s, "qmp '{msg}'");
                    }
                    if let Op::Resize { .. } | Op::SetActive { active: true } = other {
                        s.push_str("qmp '{\"execute\":\"block-export-add\",\"arguments\":{\"type\":\"nbd\",\"id\":\"e0\",\"node-name\":\"q0\",\"name\":\"disk\",\"writable\":true}}'\n");
                    }
                }
            },
        }
        s.push_str("alive; qmp '{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}' | grep -o '\"dirty-bitmaps\": *\\[[^]]*\\]'\n");
    }
    let _ = writeln!(
        s,
        "for b in a b c d; do qmp '{{\"execute\":\"x-debug-block-dirty-bitmap-sha256\",\"arguments\":{{\"node\":\"{NODE}\",\"name\":\"'$b'\"}}}}'; done\nqmp '{{\"execute\":\"quit\"}}'; wait $PID; PID=\n$CHECK check \"$D/seq.qcow2\""
    );
    let _ = daemon::EXPORT;
    s
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
