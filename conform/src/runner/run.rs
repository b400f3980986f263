//! Running a corpus: every case under every adapter, each on private
//! copies in a fresh scratch directory (the observation, the write check,
//! the bitmap-operations check), judged against the manifest, the corpus
//! hashed before and after.

use super::adapter::Adapter;
use super::checks::CheckFindings;
use super::observation::Observation;
use super::process::Limits;
use super::report::{CaseResult, CaseRun, RunReport};
use super::text::command_line;
use super::{corpus, judge, writes};
use generator::ManifestCase;
use std::path::Path;

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
}

/// Runs one case under one adapter: a private copy in a fresh temporary
/// directory, the observation, the write check (on a second copy), the
/// judgement.
pub fn run_case(
    adapter: &dyn Adapter,
    case: &ManifestCase,
    image: &Path,
    opts: &RunOptions,
) -> CaseResult {
    let mut obs = match tempfile::Builder::new()
        .prefix("qcow2-conform-run")
        .tempdir()
    {
        Ok(work) => observe_in(adapter, case, image, work.path(), opts),
        Err(e) => Observation {
            error: Some(format!("runner: cannot create a temporary directory: {e}")),
            protocol_error: Some(format!("runner: cannot create a temporary directory: {e}")),
            ..Observation::default()
        },
    };
    obs.commands.retain(|c| !c.is_empty());
    let outcome = judge::judge_image(&case.expected, &obs, image, adapter.capabilities());
    CaseResult {
        implementation: adapter.name().to_owned(),
        outcome,
        observation: obs,
    }
}

fn observe_in(
    adapter: &dyn Adapter,
    case: &ManifestCase,
    image: &Path,
    work: &Path,
    opts: &RunOptions,
) -> Observation {
    let copy = work.join("image.qcow2");
    if let Err(e) = corpus::sparse_copy(image, &copy) {
        return Observation {
            protocol_error: Some(format!("runner: cannot copy {}: {e}", image.display())),
            ..Observation::default()
        };
    }
    let setup = format!(
        "WORK=$(mktemp -d) && cp --sparse=always {} \"$WORK\"/image.qcow2",
        command_line(&std::process::Command::new(image))
    );
    let mut obs = adapter.observe(&copy, &opts.limits);
    obs.commands.insert(0, setup.clone());
    // The checks that change a copy: only on valid images, and only while
    // nothing has crashed or hung.
    let may_change = |obs: &Observation| {
        opts.writes && writes::eligible(&case.expected) && !obs.timed_out && obs.signal.is_none()
    };
    if adapter.capabilities().write_guest_data && may_change(&obs) {
        if let Some(copy) = fresh_copy(image, work, "write.qcow2", "write check", &mut obs) {
            let w = writes::run(adapter, &copy, &opts.limits);
            add_check(&mut obs, image, "write.qcow2", &w.found);
            obs.write = Some(w);
        }
    }
    if adapter.checks_bitmap_ops() && may_change(&obs) {
        if let Some(copy) = fresh_copy(image, work, "ops.qcow2", "bitmap operations", &mut obs) {
            if let Some(o) = adapter.bitmap_ops(&copy, work, &opts.limits) {
                add_check(&mut obs, image, "ops.qcow2", &o.found);
                obs.ops = Some(o);
            }
        }
    }
    let work_s = work.to_string_lossy().into_owned();
    for c in &mut obs.commands {
        *c = with_work_var(c, &work_s);
    }
    obs
}

/// A fresh copy of `image` as `work/NAME`, or `None` with a note that
/// `what` was skipped.
fn fresh_copy(
    image: &Path,
    work: &Path,
    name: &str,
    what: &str,
    obs: &mut Observation,
) -> Option<std::path::PathBuf> {
    let copy = work.join(name);
    match corpus::sparse_copy(image, &copy) {
        Ok(()) => Some(copy),
        Err(e) => {
            obs.notes.push(format!("{what} skipped: cannot copy: {e}"));
            None
        }
    }
}

/// Adds a check that ran on the copy `$WORK/NAME` of `image` to the
/// observation: the copy command, the check's own commands, and the end of
/// a program of it that crashed.
fn add_check(obs: &mut Observation, image: &Path, name: &str, found: &CheckFindings) {
    obs.commands.push(format!(
        "cp --sparse=always {} \"$WORK\"/{name}",
        command_line(&std::process::Command::new(image))
    ));
    obs.commands.extend(found.commands.iter().cloned());
    if let Some(p) = &found.process {
        obs.absorb(p);
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
    use anyhow::Context;
    use rayon::prelude::*;
    let start = std::time::Instant::now();
    let manifest = corpus::load(dir)?;
    let before = corpus::hash_tree(dir)?;
    let total = (manifest.cases.len() * adapters.len()) as u64;
    let bar = if opts.progress && total >= 20 {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_prefix("run");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .build()
        .context("cannot start the worker threads")?;
    let cases: Vec<CaseRun> = pool.install(|| {
        manifest
            .cases
            .par_iter()
            .map(|case| {
                let image = dir.join(&case.file);
                let results = adapters
                    .iter()
                    .map(|a| {
                        let r = run_case(a.as_ref(), case, &image, opts);
                        bar.inc(1);
                        r
                    })
                    .collect();
                CaseRun {
                    id: case.id.clone(),
                    file: case.file.clone(),
                    description: case.description.clone(),
                    expected: case.expected.clone(),
                    results,
                }
            })
            .collect()
    });
    bar.finish_and_clear();
    let after = corpus::hash_tree(dir)?;
    let changes = corpus::differences(&before, &after);
    Ok(RunReport::new(
        dir.display().to_string(),
        adapters.iter().map(|a| a.name().to_owned()).collect(),
        cases,
        changes,
        start.elapsed().as_millis() as u64,
    ))
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
