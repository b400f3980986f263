//! One sequence against a fresh image in a real daemon, the semantic
//! model as the oracle: after every operation the daemon's bitmaps must be
//! what the model predicts, after every restart or crash the file must be
//! what the model requires (judged by the format model) and the reopened
//! daemon must load it as the model says.

use super::gen::{Sequence, Step};
use crate::runner::adapters::qemu::Tool;
use crate::runner::adapters::qemu_live::daemon::DaemonError;
use crate::runner::adapters::qemu_live::session::{Predict, Session, SessionError};
use crate::runner::process::{self, Limits};
use serde::Serialize;
use spec_model::semantics::Disk;
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
    let img = Tool::Img
        .locate()
        .map_err(|e| SetupError::Tool(e.to_string()))?;
    let _ = std::fs::remove_file(image);
    let args = [
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        image.as_os_str().to_owned(),
        size.to_string().into(),
    ];
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
    create_image(&image, seq.size, limits)?;
    let mut r = SeqResult::default();
    let mut s = match Session::open(program, &image, limits) {
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
            Step::Restart => s.restart(),
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
                let what = match step {
                    Step::Op { op } => format!("{op:?}"),
                    other => format!("{other:?}"),
                };
                r.error = Some(match s.death() {
                    Some(death) => format!(
                        "{death} after {}",
                        what.split([' ', '{']).next().unwrap_or_default()
                    ),
                    None => e.to_string(),
                });
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
    create_image(&image, seq.size, limits)?;
    let mut ops = 0;
    let Ok(mut d) = Daemon::start(program, &image, limits) else {
        return Ok(0);
    };
    let mut guest = None;
    for step in &seq.steps {
        match step {
            Step::Op { op } => {
                ops += 1;
                if oracle::execute(&mut d, &mut guest, op).is_err() {
                    return Ok(ops);
                }
            }
            Step::Restart | Step::Crash => {
                if let Some(g) = guest.take() {
                    g.disconnect();
                }
                let _ = if matches!(step, Step::Crash) {
                    d.kill()
                } else {
                    d.quit()
                };
                d = match Daemon::start(program, &image, limits) {
                    Ok(d) => d,
                    Err(_) => return Ok(ops),
                };
            }
        }
    }
    if let Some(g) = guest.take() {
        g.disconnect();
    }
    d.quit();
    Ok(ops)
}
