//! The same sequences through QEMU's offline tools (`campaign --impl qemu
//! --sequences`): `qemu-io` for guest I/O, `qemu-img bitmap` for the
//! bitmap operations, `qemu-img resize`; each tool opens and closes the
//! image, so after every step the format model judges the file against
//! the semantic model's clean close. Steps with no offline form are
//! adapted or skipped: every bitmap is persistent, a merge of none and a
//! crash are skipped, a restart is a no-op.
//!
//! A merge of several sources is as atomic as QMP's (which merges all or
//! nothing): `qemu-img bitmap` applies its `--merge` options one by one
//! and stores what it did before a failing one, so the sources are first
//! merged into a staging bitmap ([`MERGE_STAGE`], the target's
//! granularity), which is merged into the target only when every source
//! merged, and is removed in either case. Through a bitmap of the
//! target's own granularity the target gains exactly the bits a direct
//! merge would set.

use super::gen::{Sequence, Step};
use super::run::{create_image, SeqResult, SetupError};
use crate::runner::adapters::qemu::Tool;
use crate::runner::adapters::qemu_live::oracle::fill_byte;
use crate::runner::adapters::qemu_live::session::read_file;
use crate::runner::process::{self, Limits};
use spec_model::semantics::Op;
use spec_model::semantics::{judge_file, Disk, Expect};
use std::ffi::OsString;
use std::path::Path;

/// The bitmap a merge of several sources is staged in (no sequence uses
/// this name).
pub const MERGE_STAGE: &str = "qcow2-conform-merge-stage";

/// What an offline operation needs of the image's state before it runs.
#[derive(Debug, Clone, Copy)]
struct Before {
    /// A resize that shrinks the disk (`--shrink`).
    shrink: bool,
    /// The granularity (bits) of a merge's target, if it exists.
    target_gbits: Option<u8>,
}

impl Before {
    fn of(model: &Disk, op: &Op) -> Before {
        Before {
            shrink: matches!(op, Op::Resize { size } if *size < model.size),
            target_gbits: match op {
                Op::Merge { target, .. } => model.bitmaps.get(target).map(|b| b.gbits),
                _ => None,
            },
        }
    }
}

/// One offline operation: the tool runs it needs (program, arguments),
/// and the runs that must follow it whether or not those succeed (the
/// staging bitmap's removal).
fn commands(
    img: &Path,
    io: &Path,
    image: &Path,
    op: &Op,
    before: Before,
) -> (Vec<Invocation>, Vec<Invocation>) {
    let im = || image.as_os_str().to_owned();
    let qio = |cmd: String| {
        (
            io.to_owned(),
            vec![
                "-f".into(),
                "qcow2".into(),
                "-d".into(),
                "unmap".into(),
                "-c".into(),
                cmd.into(),
                im(),
            ],
        )
    };
    let bitmap = |args: &[&str], name: &str| {
        let mut a: Vec<OsString> = vec!["bitmap".into(), "-f".into(), "qcow2".into()];
        a.extend(args.iter().map(OsString::from));
        a.push(im());
        a.push(name.into());
        (img.to_owned(), a)
    };
    let run = |v: Vec<Invocation>| (v, Vec::new());
    match op {
        Op::Write { offset, len } => run(vec![qio(format!(
            "write -P {:#04x} {offset} {len}",
            fill_byte(*offset)
        ))]),
        Op::WriteZeroes { offset, len } => run(vec![qio(format!("write -z {offset} {len}"))]),
        Op::Discard { offset, len } => run(vec![qio(format!("discard {offset} {len}"))]),
        Op::Add {
            name,
            gbits,
            disabled,
            ..
        } => {
            let g = (1u64 << (*gbits).min(63)).to_string();
            let mut a = vec!["--add", "-g", g.as_str()];
            if *disabled {
                a.push("--disable");
            }
            run(vec![bitmap(&a, name)])
        }
        Op::Remove { name } => run(vec![bitmap(&["--remove"], name)]),
        Op::Clear { name } => run(vec![bitmap(&["--clear"], name)]),
        Op::Enable { name } => run(vec![bitmap(&["--enable"], name)]),
        Op::Disable { name } => run(vec![bitmap(&["--disable"], name)]),
        Op::Merge { target, sources } if sources.len() == 1 => {
            run(vec![bitmap(&["--merge", &sources[0]], target)])
        }
        Op::Merge { target, sources } => {
            // A missing target has no granularity: the stage's does not
            // matter then, the final merge fails.
            let g = (1u64 << before.target_gbits.unwrap_or(16).min(63)).to_string();
            let mut a = vec!["--add", "-g", g.as_str(), "--disable"];
            for s in sources {
                a.extend(["--merge", s.as_str()]);
            }
            (
                vec![
                    bitmap(&a, MERGE_STAGE),
                    bitmap(&["--merge", MERGE_STAGE], target),
                ],
                vec![bitmap(&["--remove"], MERGE_STAGE)],
            )
        }
        Op::Resize { size } => {
            let mut a: Vec<OsString> =
                vec!["resize".into(), "-q".into(), "-f".into(), "qcow2".into()];
            if before.shrink {
                a.push("--shrink".into());
            }
            a.push(im());
            a.push(size.to_string().into());
            run(vec![(img.to_owned(), a)])
        }
        // Live only: never reaches here (see `offline_op`).
        spec_model::node_only_op!() => run(Vec::new()),
    }
}

/// One run of a tool: program and arguments.
type Invocation = (std::path::PathBuf, Vec<OsString>);

/// The operation a sequence step runs offline (`None`: skipped): every
/// bitmap persistent; a merge of no source, and what only a running node
/// does, skipped.
fn offline_op(step: &Step) -> Option<Op> {
    let Step::Op { op } = step else { return None };
    if format!("{op:?}").contains("\\0") {
        // No command line carries a NUL byte.
        return None;
    }
    Some(match op {
        Op::Add {
            name,
            gbits,
            disabled,
            ..
        } => Op::Add {
            name: name.clone(),
            gbits: *gbits,
            persistent: true,
            disabled: *disabled,
        },
        Op::Merge { sources, .. } if sources.is_empty() => return None,
        // What only a running node does.
        spec_model::node_only_op!() => return None,
        other => other.clone(),
    })
}

/// Runs one tool invocation, its command line added to `r`'s transcript:
/// whether it succeeded, or `None` when it died or timed out (`r.error`
/// says how).
fn run_tool(
    (program, args): &Invocation,
    limits: &Limits,
    r: &mut SeqResult,
) -> Result<Option<bool>, SetupError> {
    let p = process::run(
        process::command(program.as_os_str(), args, limits),
        limits.timeout,
    )?;
    r.transcript.push(format!("$ {}", p.command));
    if p.timed_out || p.signal.is_some() {
        r.error = Some(format!("{} died: {}", program.display(), p.describe_end()));
        return Ok(None);
    }
    // qemu-io reports a failed command with exit status 0.
    Ok(Some(
        p.success() && !p.stdout.contains("failed") && !p.stderr.contains("failed"),
    ))
}

/// Runs `seq` offline on a fresh image in `work`.
pub fn run_offline(seq: &Sequence, work: &Path, limits: &Limits) -> Result<SeqResult, SetupError> {
    let img = Tool::Img
        .locate()
        .map_err(|e| SetupError::Tool(e.to_string()))?;
    let io = Tool::Io
        .locate()
        .map_err(|e| SetupError::Tool(e.to_string()))?;
    let image = work.join("seq.qcow2");
    create_image(&image, seq.size, limits)?;
    let mut r = SeqResult::default();
    for (i, step) in seq.steps.iter().enumerate() {
        let Some(op) = offline_op(step) else { continue };
        let file = match read_file(&image) {
            Ok(f) => f,
            Err(e) => {
                r.error = Some(e.to_string());
                r.at_step = Some(i);
                return Ok(r);
            }
        };
        let mut model = Disk::reopened(&file);
        let expect = model.expect(&op);
        let (runs, after) = commands(&img, &io, &image, &op, Before::of(&model, &op));
        r.operations += 1;
        let mut ok = true;
        for inv in &runs {
            match run_tool(inv, limits, &mut r)? {
                None => {
                    r.at_step = Some(i);
                    return Ok(r);
                }
                Some(true) => {}
                Some(false) => {
                    ok = false;
                    break;
                }
            }
        }
        // Clean-up runs whatever happened; if it fails, what it leaves
        // behind (a staging bitmap) shows in the judgement of the file.
        for inv in &after {
            if run_tool(inv, limits, &mut r)?.is_none() {
                r.at_step = Some(i);
                return Ok(r);
            }
        }
        let mut problems = Vec::new();
        match (&expect, ok) {
            (Expect::Succeed, false) => {
                problems.push(format!("QEMU refused {op:?}, which must succeed"))
            }
            (Expect::Refuse(why), true) => problems.push(format!(
                "QEMU carried out {op:?}, which must be refused: {why}"
            )),
            (_, true) => model.apply(&op),
            (_, false) => {}
        }
        if problems.is_empty() {
            match read_file(&image) {
                Ok(after) => problems = judge_file(&model.close(), &after),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            r.problems = problems;
            r.at_step = Some(i);
            return Ok(r);
        }
    }
    Ok(r)
}

/// The body of a POSIX shell script that replays `seq` offline with the
/// same tool runs as [`run_offline`] (`qemu-img`, `qemu-io`; `QEMU_IMG`,
/// `QEMU_IO` override them), printing the image's bitmaps after every
/// step and the model's verdict at the end (the finding's header comes
/// first, from `findings::reproducer`). The state a step's command line
/// depends on (a shrinking resize, a merge target's granularity) is
/// tracked with the semantic model, as the campaign does.
pub fn reproducer_body(seq: &Sequence) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    s.push_str(
        "set -u\nD=$(mktemp -d)\ntrap 'rm -rf \"$D\"' EXIT\nCHECK=${QCOW2_CONFORM:-qcow2-conform}\n",
    );
    let img = Path::new("${QEMU_IMG:-qemu-img}");
    let io = Path::new("${QEMU_IO:-qemu-io}");
    let image = Path::new("$D/seq.qcow2");
    let _ = writeln!(
        s,
        "{} create -q -f qcow2 \"$D/seq.qcow2\" {}",
        img.display(),
        seq.size
    );
    let mut model = Disk::new(seq.size);
    let quote = |a: &OsString| {
        let a = a.to_string_lossy();
        if a.starts_with("$D/") || a.starts_with("${") {
            format!("\"{a}\"")
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    for step in &seq.steps {
        let Some(op) = offline_op(step) else { continue };
        let (runs, after) = commands(img, io, image, &op, Before::of(&model, &op));
        let line = |(program, args): &Invocation| {
            let args: Vec<String> = args.iter().map(quote).collect();
            format!("{} {}", program.display(), args.join(" "))
        };
        let main: Vec<String> = runs.iter().map(line).collect();
        let _ = writeln!(s, "# {op:?}");
        let _ = writeln!(s, "{}", main.join(" && "));
        for a in &after {
            let _ = writeln!(s, "{}", line(a));
        }
        let _ = writeln!(
            s,
            "{} info --output=json -f qcow2 \"$D/seq.qcow2\" | grep -A3 '\"name\"'",
            img.display()
        );
        if !matches!(model.expect(&op), Expect::Refuse(_)) {
            model.apply(&op);
        }
    }
    s.push_str("$CHECK check \"$D/seq.qcow2\"\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offline_reproducer_stages_merges_and_parses() {
        let add = |name: &str, gbits| Step::Op {
            op: Op::Add {
                name: name.into(),
                gbits,
                persistent: false,
                disabled: false,
            },
        };
        let seq = Sequence {
            size: 1 << 20,
            second: None,
            shape: Default::default(),
            steps: vec![
                add("a", 16),
                add("b", 12),
                Step::Restart,
                Step::Op {
                    op: Op::Merge {
                        target: "b".into(),
                        sources: vec!["a".into(), "c".into()],
                    },
                },
                Step::Op {
                    op: Op::Resize { size: 4096 },
                },
            ],
        };
        let s = reproducer_body(&seq);
        // The stage takes the target's granularity (b: 2^12).
        assert!(
            s.contains("'--add' '-g' '4096' '--disable' '--merge' 'a' '--merge' 'c'"),
            "{s}"
        );
        assert!(s.contains(&format!("'--merge' '{MERGE_STAGE}'")), "{s}");
        assert!(
            s.contains(&format!("'--remove' \"$D/seq.qcow2\" '{MERGE_STAGE}'")),
            "{s}"
        );
        assert!(s.contains("'--shrink'"), "{s}");
        assert!(!s.contains("socat"), "{s}");
        let sh = std::process::Command::new("sh")
            .args(["-n", "-c", &s])
            .output()
            .unwrap();
        assert!(
            sh.status.success(),
            "{}",
            String::from_utf8_lossy(&sh.stderr)
        );
    }
}
