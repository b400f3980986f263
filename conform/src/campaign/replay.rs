//! `campaign --replay PATH`: one saved sequence or backup chain run again
//! against the real daemon, step by step, with what QEMU answered and what
//! the model expected beside each step. PATH is a finding directory (of
//! the sequence campaign: `finding.json`; of the backup-chain campaign:
//! `chain.json`), one of those files, a regression file, or a bare
//! sequence (`{"size": .., "steps": [..]}`).

use super::backup::chain::{run_chain, Chain, ChainOptions, ChainResult};
use super::sequences::{self, key, SeqFinding, Sequence, Step};
use crate::runner::adapters::qemu_live::oracle::{node_qmp_command, qmp_command};
use crate::runner::adapters::qemu_live::session::SessionError;
use crate::runner::process::Limits;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use spec_model::semantics::Expect;
use std::path::{Path, PathBuf};

/// What a PATH holds.
pub enum Replayable {
    /// A saved sequence finding (its minimised sequence is replayed).
    Finding(Box<SeqFinding>),
    Sequence(Sequence),
    Chain(Box<Chain>),
}

/// Reads what `path` (a directory or a file) holds.
pub fn load(path: &Path) -> Result<(Replayable, PathBuf)> {
    let file = if path.is_dir() {
        ["finding.json", "chain.json", "sequence.json"]
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{} holds no finding.json, chain.json or sequence.json",
                    path.display()
                )
            })?
    } else {
        path.to_owned()
    };
    let bytes = crate::runner::corpus::input::read_capped(&file, 64 << 20, "replayed sequence")
        .with_context(|| format!("cannot read {}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| file.display().to_string())?;
    let what = if v.get("minimised").is_some() {
        Replayable::Finding(Box::new(serde_json::from_value(v)?))
    } else if v.get("mode").is_some() {
        Replayable::Chain(Box::new(serde_json::from_value(v)?))
    } else if v.get("steps").is_some() {
        Replayable::Sequence(serde_json::from_value(v)?)
    } else {
        bail!(
            "{} is neither a sequence finding, a backup chain nor a sequence",
            file.display()
        );
    };
    Ok((what, file))
}

/// One step as replayed.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    /// The operation (or `restart`, `crash`, `shutdown`, a backup point).
    pub op: String,
    /// What QEMU answered.
    pub qemu: String,
    /// What the model expected.
    pub model: String,
    pub agree: bool,
    /// Every way QEMU differed from the model at this step.
    pub problems: Vec<String>,
}

/// A whole replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// `sequence` or `backup-chain`.
    pub kind: &'static str,
    pub file: PathBuf,
    pub steps: Vec<StepReport>,
    /// Whether some step disagreed (or the daemon failed).
    pub failed: bool,
    /// The harness could not go on (the daemon died, never listened).
    pub error: Option<String>,
    /// The failure's key, and the key the finding was saved under.
    pub key: Option<String>,
    pub saved_key: Option<String>,
    /// Whether the replay failed with the saved key.
    pub reproduced: Option<bool>,
}

/// Replays what `path` holds with the daemon `program`.
pub fn replay(program: &Path, path: &Path, limits: &Limits) -> Result<ReplayReport> {
    let (what, file) = load(path)?;
    let work = crate::runner::process::temp_dirs::scratch("replay")?;
    let _w = crate::runner::process::sandbox::writable(work.path());
    let mut report = match &what {
        Replayable::Chain(c) => {
            let r = run_chain(
                program,
                c,
                work.path(),
                ChainOptions {
                    limits: *limits,
                    tamper: None,
                    bare: false,
                },
            )?;
            chain_report(&r, file)
        }
        Replayable::Finding(f) if f.offline => {
            let r = sequences::offline::run_offline(&f.minimised, work.path(), limits)?;
            let failed = r.failed();
            ReplayReport {
                kind: "sequence",
                file,
                steps: vec![StepReport {
                    step: r.at_step.unwrap_or(f.minimised.steps.len()),
                    op: "the whole sequence, through qemu-img and qemu-io".into(),
                    qemu: if failed { "differs" } else { "as the model" }.into(),
                    model: "the model's state".into(),
                    agree: !failed,
                    problems: r.problems.clone(),
                }],
                failed,
                error: r.error.clone(),
                key: failed.then(|| key(&r)),
                saved_key: None,
                reproduced: None,
            }
        }
        Replayable::Finding(f) => {
            sequence_report(program, &f.minimised, work.path(), limits, file)?
        }
        Replayable::Sequence(s) => sequence_report(program, s, work.path(), limits, file)?,
    };
    if let Replayable::Finding(f) = &what {
        report.saved_key = Some(f.key.clone());
        report.reproduced = Some(report.key.as_deref() == Some(f.key.as_str()));
    }
    if let Replayable::Chain(_) = &what {
        if let Some(dir) = report.file.parent() {
            let saved = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(k) = saved.filter(|k| k.starts_with("chain-")) {
                report.reproduced = Some(report.key.as_deref() == Some(k.as_str()));
                report.saved_key = Some(k);
            }
        }
    }
    Ok(report)
}

fn chain_report(r: &ChainResult, file: PathBuf) -> ReplayReport {
    let mut steps: Vec<StepReport> = r
        .points
        .iter()
        .map(|p| StepReport {
            step: p.index,
            op: if p.index == 0 {
                "full backup".into()
            } else {
                format!("incremental backup {}", p.index)
            },
            qemu: format!(
                "held {} byte(s); restored chain {} the disk",
                p.held,
                if p.restored_equal {
                    "equals"
                } else {
                    "differs from"
                }
            ),
            model: format!("at least {} dirty byte(s)", p.required),
            agree: p.problems.is_empty(),
            problems: p.problems.clone(),
        })
        .collect();
    let reported = r.points.last().is_some_and(|p| !p.problems.is_empty());
    if r.failed() && !reported {
        steps.push(StepReport {
            step: r.at_point.unwrap_or(0),
            op: "backup point".into(),
            qemu: r.error.clone().unwrap_or_else(|| "differs".into()),
            model: "as the model".into(),
            agree: false,
            problems: r.problems.clone(),
        });
    }
    ReplayReport {
        kind: "backup-chain",
        file,
        steps,
        failed: r.failed(),
        error: r.error.clone().or(r.unstarted.clone()),
        key: r.failed().then(|| super::backup::chain_key(r)),
        saved_key: None,
        reproduced: None,
    }
}

fn expectation(e: &Expect) -> String {
    match e {
        Expect::Succeed => "must succeed".into(),
        Expect::Refuse(why) => format!("must be refused ({why})"),
        Expect::Either(why) => format!("may succeed or be refused ({why})"),
    }
}

/// QEMU's answer to a step whose QMP command is `cmd` (`None`: guest
/// I/O over NBD) among the transcript lines it added.
fn answer(cmd: Option<&str>, new: &[String], problems: &[String]) -> String {
    if let Some(p) = problems.iter().find(|p| p.starts_with("QEMU refused")) {
        return format!("refused: {p}");
    }
    let Some(cmd) = cmd else {
        return "done (NBD)".into();
    };
    let sent = format!("\"execute\":\"{cmd}\"");
    let at = new
        .iter()
        .position(|l| l.starts_with('>') && l.contains(&sent));
    at.and_then(|i| new[i + 1..].iter().find(|l| l.starts_with('<')))
        .map_or_else(
            || "no answer".into(),
            |l| l.trim_start_matches("< ").to_owned(),
        )
}

fn sequence_report(
    program: &Path,
    seq: &Sequence,
    work: &Path,
    limits: &Limits,
    file: PathBuf,
) -> Result<ReplayReport> {
    let image = work.join("seq.qcow2");
    let mut report = ReplayReport {
        kind: "sequence",
        file,
        steps: Vec::new(),
        failed: false,
        error: None,
        key: None,
        saved_key: None,
        reproduced: None,
    };
    let mut result = sequences::SeqResult::default();
    let mut s = match sequences::run::open_session(program, seq, &image, limits)? {
        Ok(s) => s,
        Err(e) => {
            result.unstarted = sequences::run::unstarted(&e);
            result.error = Some(e.to_string());
            report.error = result.error.clone();
            report.failed = result.failed();
            report.key = report.failed.then(|| key(&result));
            return Ok(report);
        }
    };
    for (i, step) in seq.steps.iter().enumerate() {
        let before = s.full_transcript().len();
        let (op, model, got) = match step {
            Step::Op { op } => (
                format!("{op:?}"),
                expectation(&s.model.expect(op)),
                s.step(op),
            ),
            Step::Nodes { op } => (
                format!("{op:?}"),
                expectation(&s.nodes().expect(op)),
                s.step_nodes(op),
            ),
            Step::Restart => (
                "restart (QMP quit, started again)".into(),
                "the file as the model stores it".into(),
                s.restart(),
            ),
            Step::Crash => (
                "crash (kill -9, started again)".into(),
                "the file with loaded bitmaps in_use".into(),
                s.crash(),
            ),
            Step::Terminate => (
                "terminate (SIGTERM, started again)".into(),
                "the file as the model stores it".into(),
                s.terminate(),
            ),
        };
        let new = s
            .full_transcript()
            .split_off(before.min(s.full_transcript().len()));
        match got {
            Ok(p) => {
                let qemu = match step {
                    Step::Op { op } => answer(qmp_command(op).map(|c| c.0), &new, &p),
                    Step::Nodes { op } => answer(node_qmp_command(op).map(|c| c.0), &new, &p),
                    Step::Restart => "quit and reopened".into(),
                    Step::Crash => "killed and reopened".into(),
                    Step::Terminate => "terminated and reopened".into(),
                };
                let agree = p.is_empty();
                report.steps.push(StepReport {
                    step: i,
                    op,
                    qemu,
                    model,
                    agree,
                    problems: p.clone(),
                });
                if !agree {
                    result.problems = p;
                    result.at_step = Some(i);
                    break;
                }
            }
            Err(e) => {
                let error = sequences::run::step_error(&mut s, step, &e);
                report.steps.push(StepReport {
                    step: i,
                    op,
                    qemu: error.clone(),
                    model,
                    agree: false,
                    problems: Vec::new(),
                });
                result.unstarted = sequences::run::unstarted(&e);
                result.error = Some(error);
                result.at_step = Some(i);
                break;
            }
        }
    }
    if result.at_step.is_none() {
        let got: Result<(Vec<String>, Vec<String>), SessionError> = s.finish();
        let (qemu, p) = match got {
            Ok((p, _)) => ("quit".to_owned(), p),
            Err(e) => (e.to_string(), vec![e.to_string()]),
        };
        report.steps.push(StepReport {
            step: seq.steps.len(),
            op: "shutdown (QMP quit)".into(),
            qemu,
            model: "the file as the model stores it".into(),
            agree: p.is_empty(),
            problems: p.clone(),
        });
        result.problems = p;
    }
    report.failed = result.failed();
    report.error = result.error.clone();
    report.key = report.failed.then(|| key(&result));
    Ok(report)
}

/// The replay as text: one line per step, then the verdict.
pub fn render(r: &ReplayReport) -> String {
    use crate::runner::report::sanitise::one_line;
    let mut o = format!(
        "replay of {} ({})\n",
        one_line(&r.file.to_string_lossy()),
        r.kind
    );
    for s in &r.steps {
        o.push_str(&format!(
            "{:>4} {:<9} {}\n       qemu:  {}\n       model: {}\n",
            s.step,
            if s.agree { "agree" } else { "DISAGREE" },
            one_line(&s.op),
            one_line(&s.qemu),
            one_line(&s.model)
        ));
        for p in &s.problems {
            o.push_str(&format!("       - {}\n", one_line(p)));
        }
    }
    if let Some(e) = &r.error {
        o.push_str(&format!("error: {}\n", one_line(e)));
    }
    o.push_str(&match (&r.key, &r.saved_key, r.reproduced) {
        (Some(k), _, Some(true)) => format!("reproduced: fails as saved ({k})\n"),
        (Some(k), Some(s), _) => format!("fails differently: {k} (saved as {s})\n"),
        (Some(k), None, _) => format!("fails: {k}\n"),
        (None, Some(s), _) => format!("not reproduced: every step agrees (saved as {s})\n"),
        (None, None, _) => "every step agrees with the model\n".into(),
    });
    o
}
