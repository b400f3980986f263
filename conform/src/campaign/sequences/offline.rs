//! The same sequences through QEMU's offline tools (`campaign --impl qemu
//! --sequences`): `qemu-io` for guest I/O, `qemu-img bitmap` for the
//! bitmap operations, `qemu-img resize`; each tool opens and closes the
//! image, so after every step the format model judges the file against
//! the semantic model's clean close. Steps with no offline form are
//! adapted or skipped: every bitmap is persistent, a merge of several
//! sources is one `--merge` per source, a merge of none and a crash are
//! skipped, a restart is a no-op.

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

/// One offline operation: the tool runs it needs (program, arguments).
fn commands(
    img: &Path,
    io: &Path,
    image: &Path,
    op: &Op,
    shrink: bool,
) -> Vec<(std::path::PathBuf, Vec<OsString>)> {
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
    match op {
        Op::Write { offset, len } => vec![qio(format!(
            "write -P {:#04x} {offset} {len}",
            fill_byte(*offset)
        ))],
        Op::WriteZeroes { offset, len } => vec![qio(format!("write -z {offset} {len}"))],
        Op::Discard { offset, len } => vec![qio(format!("discard {offset} {len}"))],
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
            vec![bitmap(&a, name)]
        }
        Op::Remove { name } => vec![bitmap(&["--remove"], name)],
        Op::Clear { name } => vec![bitmap(&["--clear"], name)],
        Op::Enable { name } => vec![bitmap(&["--enable"], name)],
        Op::Disable { name } => vec![bitmap(&["--disable"], name)],
        Op::Merge { target, sources } => sources
            .iter()
            .map(|s| bitmap(&["--merge", s], target))
            .collect(),
        Op::Resize { size } => {
            let mut a: Vec<OsString> =
                vec!["resize".into(), "-q".into(), "-f".into(), "qcow2".into()];
            if shrink {
                a.push("--shrink".into());
            }
            a.push(im());
            a.push(size.to_string().into());
            vec![(img.to_owned(), a)]
        }
    }
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
        let Step::Op { op } = step else { continue };
        let op = match op {
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
            Op::Merge { sources, .. } if sources.is_empty() => continue,
            other => other.clone(),
        };
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
        let shrink = matches!(op, Op::Resize { size } if size < model.size);
        let mut ok = true;
        r.operations += 1;
        for (program, args) in commands(&img, &io, &image, &op, shrink) {
            let p = process::run(
                process::command(program.as_os_str(), &args, limits),
                limits.timeout,
            )?;
            r.transcript.push(format!("$ {}", p.command));
            if p.timed_out || p.signal.is_some() {
                r.error = Some(format!("{} died: {}", program.display(), p.describe_end()));
                r.at_step = Some(i);
                return Ok(r);
            }
            // qemu-io reports a failed command with exit status 0.
            if !p.success() || p.stdout.contains("failed") || p.stderr.contains("failed") {
                ok = false;
                break;
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
