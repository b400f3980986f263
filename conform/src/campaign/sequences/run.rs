//! One sequence against a fresh image in a real daemon, the semantic
//! model as the oracle: after every operation the daemon's bitmaps must be
//! what the model predicts, after every restart or crash the file must be
//! what the model requires (judged by the format model) and the reopened
//! daemon must load it as the model says.

use super::gen::{Sequence, Shape, Step};
use crate::runner::adapters::qemu::Tool;
use crate::runner::adapters::qemu_live::daemon::DaemonError;
use crate::runner::adapters::qemu_live::daemon::NodeOptions;
use crate::runner::adapters::qemu_live::oracle::Contents;
use crate::runner::adapters::qemu_live::session::{Predict, Session, SessionError};
use crate::runner::process::{self, Limits};
use serde::Serialize;
use spec_model::semantics::{Disk, Expect, NodeOp, Op};
use std::path::Path;

/// What running one sequence found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeqResult {
    /// The problems of the first step that had any (empty: QEMU did all
    /// the model requires).
    pub problems: Vec<String>,
    /// The index of that step (`steps.len()` for the final shutdown).
    pub at_step: Option<usize>,
    /// Operations carried out.
    pub operations: u64,
    /// The harness could not go on (the daemon died, did not answer, or
    /// the image could not be created): a finding too.
    pub error: Option<String>,
    /// QMP transcript (`>` sent, `<` received, `#` markers).
    pub transcript: Vec<String>,
    /// The daemon did not listen within the limit, on the first try and
    /// on the retry: the harness failed (a loaded machine), so the
    /// sequence is an `error`, never a finding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unstarted: bool,
}

impl SeqResult {
    /// Whether the sequence found something (a daemon that never
    /// started is not a finding).
    pub fn failed(&self) -> bool {
        !self.unstarted && (!self.problems.is_empty() || self.error.is_some())
    }
}

/// Why a sequence could not even start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Tool(String),
    #[error("qemu-img create failed: {0}")]
    Create(String),
    #[error("cannot run qemu-img: {0}")]
    Io(#[from] std::io::Error),
}

/// Creates the sequence's fresh image at `image`.
pub fn create_image(image: &Path, size: u64, limits: &Limits) -> Result<(), SetupError> {
    create_shaped(image, size, Shape::default(), limits)
}

/// Creates a fresh image of `shape` (cluster size, version) at `image`.
pub fn create_shaped(
    image: &Path,
    size: u64,
    shape: Shape,
    limits: &Limits,
) -> Result<(), SetupError> {
    let _ = std::fs::remove_file(image);
    if shape.preload && !shape.v2 {
        return preloaded(image, size, shape);
    }
    let img = Tool::Img
        .locate()
        .map_err(|e| SetupError::Tool(e.to_string()))?;
    let mut args: Vec<std::ffi::OsString> =
        vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into()];
    let mut o = Vec::new();
    if let Some(c) = shape.cluster_bits {
        o.push(format!("cluster_size={}", 1u64 << c.min(30)));
    }
    if shape.v2 {
        o.push("compat=0.10".to_owned());
    }
    if !o.is_empty() {
        args.push("-o".into());
        args.push(o.join(",").into());
    }
    args.push(image.as_os_str().to_owned());
    args.push(size.to_string().into());
    let p = process::run(
        process::command(img.as_os_str(), &args, limits),
        limits.timeout,
    )?;
    if !p.success() {
        return Err(SetupError::Create(
            p.first_error_line().unwrap_or_else(|| p.describe_end()),
        ));
    }
    Ok(())
}

/// An image made by the generator holding bitmaps already (so that the
/// daemon loads them rather than starts with none): "a" with bits set,
/// "b" disabled, "c" `in_use`, at granularities below, at and above a
/// 64 KiB cluster.
fn preloaded(image: &Path, size: u64, shape: Shape) -> Result<(), SetupError> {
    use generator::contents::Contents;
    use generator::{BitmapSpec, ImageSpec};
    let mut spec = ImageSpec::empty(size);
    spec.cluster_bits = u32::from(shape.cluster_bits.unwrap_or(16));
    let bits = |gbits: u8| {
        let n = spec_model::semantics::granules::nbits(size, gbits);
        Contents::Ranges(vec![(0, 1.min(n)), (n / 2, (n / 2 + 3).min(n))])
    };
    let mut b = BitmapSpec::new("b", 12, bits(12));
    b.auto = false;
    let mut c = BitmapSpec::new("c", 18, bits(18));
    c.in_use = true;
    spec.bitmaps = vec![BitmapSpec::new("a", 16, bits(16)), b, c];
    let built = generator::build(&spec).map_err(|e| SetupError::Create(e.to_string()))?;
    std::fs::write(image, built.bytes)?;
    Ok(())
}

/// Whether `e` is a daemon that did not listen within the limit.
pub fn unstarted(e: &SessionError) -> bool {
    matches!(e, SessionError::Daemon(DaemonError::NotListening(_)))
}

/// Runs `seq` on a fresh image in `work` with the daemon `program`;
/// `predict` is the model's prediction step ([`Disk::apply`] but for
/// tests of the oracle itself). A daemon that does not listen within the
/// limit (at the start, a restart or a crash's reopen) makes the whole
/// sequence run once more; twice, and the result is `unstarted`.
pub fn run_sequence(
    program: &Path,
    seq: &Sequence,
    work: &Path,
    limits: &Limits,
    predict: Predict,
) -> Result<SeqResult, SetupError> {
    let r = run_once(program, seq, work, limits, predict)?;
    if !r.unstarted {
        return Ok(r);
    }
    run_once(program, seq, work, limits, predict)
}

fn run_once(
    program: &Path,
    seq: &Sequence,
    work: &Path,
    limits: &Limits,
    predict: Predict,
) -> Result<SeqResult, SetupError> {
    let image = work.join("seq.qcow2");
    let mut r = SeqResult::default();
    let mut s = match open_session(program, seq, &image, limits)? {
        Ok(s) => s,
        Err(e) => {
            r.unstarted = unstarted(&e);
            r.error = Some(e.to_string());
            return Ok(r);
        }
    };
    s.predict = predict;
    for (i, step) in seq.steps.iter().enumerate() {
        let got: Result<Vec<String>, SessionError> = match step {
            Step::Op { op } => {
                r.operations += 1;
                s.step(op)
            }
            Step::Nodes { op } => {
                r.operations += 1;
                s.step_nodes(op)
            }
            Step::Restart => s.restart(),
            Step::Terminate => s.terminate(),
            Step::Crash => s.crash(),
        };
        match got {
            Ok(p) if p.is_empty() => {}
            Ok(p) => {
                r.problems = p;
                r.at_step = Some(i);
                r.transcript = s.full_transcript();
                return Ok(r);
            }
            Err(e) => {
                r.unstarted = unstarted(&e);
                r.error = Some(step_error(&mut s, step, &e));
                r.at_step = Some(i);
                r.transcript = s.full_transcript();
                return Ok(r);
            }
        }
    }
    match s.finish() {
        Ok((p, t)) => {
            if !p.is_empty() {
                r.at_step = Some(seq.steps.len());
            }
            r.problems = p;
            r.transcript = t;
        }
        Err(e) => {
            r.error = Some(e.to_string());
            r.at_step = Some(seq.steps.len());
        }
    }
    Ok(r)
}

/// What a step that failed with `e` is recorded as: the daemon's death and
/// the step's first word (a transaction also names the member the model
/// expects may fail, so that different failing members make different
/// keys), or the session's error. The campaign and `campaign --replay`
/// share it, so that a replay finds the saved key.
pub fn step_error(s: &mut Session, step: &Step, e: &SessionError) -> String {
    let what = match step {
        Step::Op { op }
        | Step::Nodes {
            op: NodeOp::On { op, .. },
        } => format!("{op:?}"),
        Step::Nodes { op } => format!("{op:?}"),
        other => format!("{other:?}"),
    };
    let expect = match step {
        Step::Nodes { op } => s.nodes().expect(op),
        _ => s.model.expect(step_op(step)),
    };
    let why = match (step, expect) {
        (
            Step::Op {
                op: Op::Transaction { .. },
            }
            | Step::Nodes {
                op: NodeOp::Transaction { .. },
            },
            Expect::Refuse(w) | Expect::Either(w),
        ) => format!(" ({w})"),
        _ => String::new(),
    };
    match s.death() {
        Some(death) => format!(
            "{death} after {}{why}",
            what.split([' ', '{']).next().unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// Sets up a sequence's image as its shape says and opens the daemon on
/// it, contents compared by both the debug hash and NBD extents.
pub fn open_session(
    program: &Path,
    seq: &Sequence,
    image: &Path,
    limits: &Limits,
) -> Result<Result<Session, SessionError>, SetupError> {
    create_shaped(image, seq.size, seq.shape, limits)?;
    let others = second_image(seq, image, limits)?;
    Ok(
        Session::open_nodes(program, image, limits, node_options(seq.shape), &others).map(
            |mut s| {
                // Contents after every step by both QEMU's debug hash and the
                // dirty extents a backup client reads over NBD.
                s.contents = Contents::HashAndNbd;
                s
            },
        ),
    )
}

/// The second node's image of `seq`, made beside `image` (`seq1.qcow2`
/// next to it), with how it is opened; none for a sequence of one node.
pub fn second_image(
    seq: &Sequence,
    image: &Path,
    limits: &Limits,
) -> Result<Vec<(std::path::PathBuf, NodeOptions)>, SetupError> {
    let Some(second) = seq.second else {
        return Ok(Vec::new());
    };
    let path = image.with_file_name("seq1.qcow2");
    create_shaped(&path, second.size, second.shape, limits)?;
    Ok(vec![(path, node_options(second.shape))])
}

/// The operation of a step (a restart or crash: an empty transaction).
fn step_op(step: &Step) -> &Op {
    const NONE: &Op = &Op::Transaction {
        actions: Vec::new(),
    };
    match step {
        Step::Op { op } => op,
        _ => NONE,
    }
}

/// How the daemon opens a sequence's image.
pub fn node_options(shape: Shape) -> NodeOptions {
    NodeOptions {
        read_only: shape.read_only,
        discard: shape.discard,
    }
}

/// The model's prediction step, for callers that take a [`Predict`].
pub const MODEL: Predict = Disk::apply;

/// Runs `seq` on a fresh image with no oracle at all: the same QMP and
/// NBD operations, restarts and crashes, nothing predicted, compared or
/// judged (the baseline of the oracle's cost, `bench/live_sequences.sh`).
/// Returns the operations carried out (a sequence stops where the daemon
/// dies).
pub fn run_bare(
    program: &Path,
    seq: &Sequence,
    work: &Path,
    limits: &Limits,
) -> Result<u64, SetupError> {
    use crate::runner::adapters::qemu_live::daemon::Daemon;
    use crate::runner::adapters::qemu_live::oracle;
    let image = work.join("seq.qcow2");
    create_shaped(&image, seq.size, seq.shape, limits)?;
    let others = second_image(seq, &image, limits)?;
    let images: Vec<(&Path, NodeOptions)> =
        std::iter::once((image.as_path(), node_options(seq.shape)))
            .chain(others.iter().map(|(p, o)| (p.as_path(), *o)))
            .collect();
    let mut ops = 0;
    let Ok(mut d) = Daemon::start_nodes(program, &images, limits) else {
        return Ok(0);
    };
    let mut guests: Vec<Option<_>> = images.iter().map(|_| None).collect();
    for step in &seq.steps {
        match step {
            Step::Op { op } => {
                ops += 1;
                if oracle::execute(&mut d, &mut guests[0], op).is_err() {
                    return Ok(ops);
                }
            }
            Step::Nodes { op } => {
                ops += 1;
                if oracle::execute_nodes(&mut d, &mut guests, op).is_err() {
                    return Ok(ops);
                }
            }
            Step::Restart | Step::Crash | Step::Terminate => {
                for g in guests.iter_mut().filter_map(Option::take) {
                    g.disconnect();
                }
                let _ = match step {
                    Step::Crash => d.kill(),
                    Step::Terminate => d.terminate(),
                    _ => d.quit(),
                };
                d = match Daemon::start_nodes(program, &images, limits) {
                    Ok(d) => d,
                    Err(_) => return Ok(ops),
                };
            }
        }
    }
    for g in guests.iter_mut().filter_map(Option::take) {
        g.disconnect();
    }
    d.quit();
    Ok(ops)
}
