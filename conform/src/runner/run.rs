//! Running a corpus: every case under every adapter, each on private
//! copies in a fresh scratch directory (the observation, the write check,
//! the bitmap-operations check), judged against the manifest, the corpus
//! hashed before and after.

use super::adapter::Adapter;
use super::corpus::{self, references};
use super::judge::cause::{Cause, Check};
use super::judge::{self, write_check};
use super::judge::{Outcome, OutcomeKind};
use super::observation::Observation;
use super::process::slots::Slots;
use super::process::Limits;
use super::process::{case_env, sandbox, signals, temp_dirs};
use super::report::{CaseResult, CaseRun, RunReport};
use super::schedule::Scheduling;
use super::text::{command_line, shell_quote};
use generator::ManifestCase;
use std::path::{Path, PathBuf};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub limits: Limits,
    /// Worker threads (0: one per core).
    pub jobs: usize,
    /// Run the write check where the adapter can write.
    pub writes: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// The order of the work and the programs that wait aside
    /// ([`Scheduling`]): never what runs or how it is judged.
    pub scheduling: Scheduling,
}

/// Runs one case under one adapter: a private copy in a fresh temporary
/// directory (with the case's companion files beside it), the
/// observation, the write check (on a second copy), the judgement. A
/// set-up failure of the runner (no scratch directory, a missing or
/// uncopyable companion, a failed image copy) is the outcome `error`,
/// never charged to the implementation; so is a case the runner was asked
/// to stop (SIGINT, SIGTERM) before it finished ([`signals`]).
pub fn run_case(
    adapter: &dyn Adapter,
    case: &ManifestCase,
    image: &Path,
    opts: &RunOptions,
) -> CaseResult {
    if let Some(why) = signals::interrupted() {
        return set_up_error(adapter, SetUpError::Interrupted(why));
    }
    if let Err(why) = references::check(case, image) {
        return set_up_error(adapter, SetUpError::Reference(why));
    }
    let _secret = case_env::scope(case.secret.as_deref());
    let observed = match temp_dirs::scratch("run") {
        Ok(work) => {
            // Every program of the case may write here, and nowhere else.
            let _w = sandbox::writable(work.path());
            let obs = observe_in(adapter, case, image, work.path(), opts);
            // A scratch directory that vanished (another process removed
            // it) leaves nothing to judge: the runner's failure.
            if work.intact() {
                obs
            } else {
                Err(SetUpError::ScratchVanished(work.path().to_owned()))
            }
        }
        Err(e) => Err(SetUpError::TempDir(e)),
    };
    let mut obs = match observed {
        Ok(obs) => obs,
        Err(why) => return set_up_error(adapter, why),
    };
    if let Some(why) = signals::interrupted() {
        return set_up_error(adapter, SetUpError::Interrupted(why));
    }
    obs.commands.retain(|c| !c.is_empty());
    let outcome = judge::judge_image(&case.expected, &obs, image, adapter.capabilities());
    obs.compact();
    CaseResult {
        implementation: adapter.name().to_owned(),
        outcome,
        observation: obs,
    }
}

/// Why the runner could not set a case up (its outcome is then `error`).
#[derive(Debug, thiserror::Error)]
pub enum SetUpError {
    #[error("not finished: the run was {0}")]
    Interrupted(String),
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy {}: {source}", path.display())]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("companion file {listed} (listed in the manifest) is missing: {} does not exist", path.display())]
    MissingCompanion { listed: String, path: PathBuf },
    #[error("companion file {listed} (listed in the manifest) is not a regular file: {}", path.display())]
    IrregularCompanion { listed: String, path: PathBuf },
    #[error(transparent)]
    Companion(#[from] generator::manifest::CompanionError),
    #[error(transparent)]
    Reference(#[from] crate::runner::corpus::references::RefusedReference),
    #[error("the scratch directory {} vanished while the case ran (removed by another process): nothing to judge", .0.display())]
    ScratchVanished(PathBuf),
}

fn create_dir(path: &Path) -> Result<(), SetUpError> {
    std::fs::create_dir_all(path).map_err(|source| SetUpError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// The result of a case the runner could not set up.
fn set_up_error(adapter: &dyn Adapter, why: SetUpError) -> CaseResult {
    let why = format!("runner: {why}");
    CaseResult {
        implementation: adapter.name().to_owned(),
        outcome: Outcome::new(
            OutcomeKind::Error,
            vec![
                why.clone(),
                "the runner could not set the case up: nothing was run or judged".into(),
            ],
            Cause::new(Check::SetUp, Some(&why)),
        ),
        observation: Observation {
            notes: vec![why],
            ..Observation::default()
        },
    }
}

/// Observes the case in the scratch directory `work`, then runs the checks
/// that change a copy; `Err` when the first private copy cannot be set up.
fn observe_in(
    adapter: &dyn Adapter,
    case: &ManifestCase,
    image: &Path,
    work: &Path,
    opts: &RunOptions,
) -> Result<Observation, SetUpError> {
    let (copy, setup) = private_copy(case, image, work, "image.qcow2")?;
    // Programs run in the copy's own directory (in the scratch directory),
    // where its companions are, so that a relative name resolves there and
    // never in the runner's working directory.
    let mut obs = {
        let _dir = case_env::in_dir(copy.parent());
        adapter.observe(&copy, &opts.limits)
    };
    obs.commands
        .insert(0, format!("WORK=$(mktemp -d) && {setup}"));
    // The checks that change a copy, only while nothing has crashed or
    // hung: the write check on every image (`write_check::eligible`), the
    // bitmap operations on valid ones (`write_check::ops_eligible`).
    let may_change = |obs: &Observation| opts.writes && !obs.timed_out && obs.signal.is_none();
    let writes_here = write_check::eligible(&case.expected);
    if adapter.capabilities().write_guest_data && writes_here && may_change(&obs) {
        if let Some(copy) = fresh_copy(case, image, work, "write.qcow2", "write check", &mut obs) {
            let _dir = case_env::in_dir(copy.parent());
            let w = write_check::run(adapter, &copy, &opts.limits);
            obs.commands.extend(w.found.commands.iter().cloned());
            if let Some(p) = &w.found.process {
                obs.absorb(p);
            }
            obs.write = Some(w);
        }
    }
    if adapter.checks_bitmap_ops() && write_check::ops_eligible(&case.expected) && may_change(&obs)
    {
        if case.secret.is_some() {
            obs.notes
                .push("bitmap operations skipped: the image is encrypted".into());
        } else if let Some(copy) = fresh_copy(
            case,
            image,
            work,
            "ops.qcow2",
            "bitmap operations",
            &mut obs,
        ) {
            let _dir = case_env::in_dir(copy.parent());
            if let Some(o) = adapter.bitmap_ops(&copy, work, &opts.limits) {
                obs.commands.extend(o.found.commands.iter().cloned());
                if let Some(p) = &o.found.process {
                    obs.absorb(p);
                }
                obs.ops = Some(o);
            }
        }
    }
    let work_s = work.to_string_lossy().into_owned();
    for c in &mut obs.commands {
        *c = with_work_var(c, &work_s);
    }
    Ok(obs)
}

/// A private copy of `image` with its companions, as the copy's path and
/// the shell commands that make it (`$WORK` is the scratch directory).
/// Without companions the copy is `work/NAME`, as it always was; with
/// them, every copy gets its own directory `work/STEM/` (`STEM` is NAME
/// without `.qcow2`), holding the image under its own file name and each
/// companion under its path relative to the image's directory, so the
/// image's relative backing and data-file names resolve and a write
/// through one copy never reaches another's data file. Every path stays
/// inside `work` ([`ManifestCase::companion_places`] refuses the others).
fn private_copy(
    case: &ManifestCase,
    image: &Path,
    work: &Path,
    name: &str,
) -> Result<(PathBuf, String), SetUpError> {
    let cp = |from: &Path, to: &str| {
        format!(
            "cp --sparse=always {} \"$WORK\"/{to}",
            command_line(&std::process::Command::new(from))
        )
    };
    let copy_file = |from: &Path, to: &Path| {
        corpus::sparse_copy(from, to).map_err(|source| SetUpError::Copy {
            path: from.to_owned(),
            source,
        })
    };
    if case.companions.is_empty() {
        let copy = work.join(name);
        copy_file(image, &copy)?;
        return Ok((copy, cp(image, name)));
    }
    let places = case.companion_places()?;
    let stem = name.strip_suffix(".qcow2").unwrap_or(name);
    let dir = work.join(stem);
    let image_name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned());
    let mut setup = vec![format!("mkdir -p \"$WORK\"/{stem}")];
    let copy = dir.join(&image_name);
    create_dir(&dir)?;
    copy_file(image, &copy)?;
    setup.push(cp(
        image,
        &format!("{stem}/{}", shell_quote(image_name.as_ref())),
    ));
    let image_dir = image.parent().unwrap_or(Path::new("."));
    for (listed, rel) in places {
        let from = image_dir.join(&rel);
        if !from.exists() {
            return Err(SetUpError::MissingCompanion { listed, path: from });
        }
        if !from.is_file() {
            // A FIFO, socket, device or directory: never opened (a FIFO
            // would block the copy).
            return Err(SetUpError::IrregularCompanion { listed, path: from });
        }
        let to = dir.join(&rel);
        if let Some(parent) = to.parent() {
            create_dir(parent)?;
        }
        copy_file(&from, &to)?;
        setup.push(cp(
            &from,
            &format!("{stem}/{}", shell_quote(rel.as_os_str())),
        ));
    }
    Ok((copy, setup.join(" && ")))
}

/// A fresh copy of `image` (with its companions) as `work/NAME`, or `None`
/// with a note that `what` was skipped; the copy commands go to the
/// observation.
fn fresh_copy(
    case: &ManifestCase,
    image: &Path,
    work: &Path,
    name: &str,
    what: &str,
    obs: &mut Observation,
) -> Option<PathBuf> {
    match private_copy(case, image, work, name) {
        Ok((copy, setup)) => {
            obs.commands.push(setup);
            Some(copy)
        }
        Err(e) => {
            obs.notes.push(format!("{what} skipped: {e}"));
            None
        }
    }
}

/// `command` (a shell command line as [`command_line`] quotes
/// it) with every occurrence of the scratch directory `work` replaced by
/// `$WORK`: `"$WORK"` outside single quotes, and `'"$WORK"'` (close the
/// quote, expand, reopen) inside them, so that the variable expands either
/// way.
pub fn with_work_var(command: &str, work: &str) -> String {
    if work.is_empty() {
        return command.to_owned();
    }
    let mut out = String::with_capacity(command.len());
    let mut quoted = false;
    let mut rest = command;
    while let Some(ch) = rest.chars().next() {
        if rest.starts_with(work) {
            out.push_str(if quoted { "'\"$WORK\"'" } else { "\"$WORK\"" });
            rest = &rest[work.len()..];
            continue;
        }
        if ch == '\\' && !quoted {
            // An escaped character outside quotes (`\'` in `'\''`).
            let n = rest[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&rest[..1 + n]);
            rest = &rest[1 + n..];
            continue;
        }
        if ch == '\'' {
            quoted = !quoted;
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

/// Runs every case of the corpus in `dir` under every adapter, in
/// parallel, and hashes the corpus before and after: a changed file makes
/// the report say so (`corpus_unchanged: false`).
pub fn run_corpus(
    dir: &Path,
    adapters: &[Box<dyn Adapter>],
    opts: &RunOptions,
) -> anyhow::Result<RunReport> {
    run_selected(dir, adapters, opts, &|_| true)
}

/// [`run_corpus`] on the cases `takes` accepts (`run --case`, `--rule`,
/// `--rerun`); the corpus is hashed whole all the same.
///
/// Each (case, implementation) pair is one piece of work, started in the
/// order [`Scheduling::order`] gives on whichever worker thread is free:
/// `jobs` of them work at once (one [`Slots`] slot each), and the threads
/// whose program waits aside ([`crate::runner::process::slots`]) come on
/// top. The report keeps corpus and `--impl` order.
pub fn run_selected(
    dir: &Path,
    adapters: &[Box<dyn Adapter>],
    opts: &RunOptions,
    takes: &(dyn Fn(&ManifestCase) -> bool + Sync),
) -> anyhow::Result<RunReport> {
    use anyhow::Context;
    signals::install();
    temp_dirs::sweep();
    let start = std::time::Instant::now();
    let mut manifest = corpus::load(dir)?;
    manifest.cases.retain(|c| takes(c));
    let before = corpus::hash_tree(dir)?;
    let total = (manifest.cases.len() * adapters.len()) as u64;
    let bar = if opts.progress && total >= 20 {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(crate::runner::report::terminal::progress_style(
            "{prefix} [{bar:30}] {pos}/{len} {rate} eta {eta} {msg}",
        ));
        b.set_prefix("run");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let jobs = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let sched = &opts.scheduling;
    let slots = Slots::new(jobs, sched.max_waiting, sched.grace, sched.stall);
    let ids: Vec<&str> = manifest.cases.iter().map(|c| c.id.as_str()).collect();
    let names: Vec<&str> = adapters.iter().map(|a| a.name()).collect();
    let order = sched.order(&ids, &names);
    let done: Vec<std::sync::Mutex<Option<CaseResult>>> =
        order.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || loop {
        let _slot = slots.hold();
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&(c, a)) = order.get(i) else {
            return;
        };
        let case = &manifest.cases[c];
        let r = run_case(adapters[a].as_ref(), case, &dir.join(&case.file), opts);
        *done[c * adapters.len() + a]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(r);
        bar.inc(1);
    };
    let work = &work;
    std::thread::scope(|s| -> anyhow::Result<()> {
        for n in 0..slots.threads().min(order.len()) {
            std::thread::Builder::new()
                .name(format!("run-worker-{n}"))
                .spawn_scoped(s, work)
                .context("cannot start the worker threads")?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let mut done = done
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()));
    let cases: Vec<CaseRun> = manifest
        .cases
        .iter()
        .map(|case| CaseRun {
            id: case.id.clone(),
            file: case.file.clone(),
            description: case.description.clone(),
            expected: case.expected.clone(),
            results: done.by_ref().take(adapters.len()).flatten().collect(),
        })
        .collect();
    let after = corpus::hash_tree(dir)?;
    let changes = corpus::differences(&before, &after);
    let mut report = RunReport::new(
        dir.display().to_string(),
        adapters.iter().map(|a| a.name().to_owned()).collect(),
        cases,
        changes,
        start.elapsed().as_millis() as u64,
    );
    report.interrupted = signals::interrupted();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::with_work_var;

    #[test]
    fn work_variable_expands_inside_and_outside_quotes() {
        assert_eq!(
            with_work_var("qemu-img info /tmp/w1/image.qcow2", "/tmp/w1"),
            "qemu-img info \"$WORK\"/image.qcow2"
        );
        assert_eq!(
            with_work_var("qemu-img map 'path=/tmp/w1/s.sock,b=é'", "/tmp/w1"),
            "qemu-img map 'path='\"$WORK\"'/s.sock,b=é'"
        );
        // An escaped quote ('\'') closes and reopens: state stays right.
        assert_eq!(
            with_work_var("x 'a'\\''b /tmp/w1' /tmp/w1", "/tmp/w1"),
            "x 'a'\\''b '\"$WORK\"'' \"$WORK\""
        );
    }
}
