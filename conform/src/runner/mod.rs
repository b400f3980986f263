//! The conformance runner: feeds every case of a corpus to real
//! implementations through [`Adapter`]s, each on a private copy, and judges
//! what they did against the manifest's expected verdict
//! ([`judge::judge`]).
//!
//! Data flow (see `DESIGN.md`):
//! copy of image --[`Adapter::observe`]--> [`Observation`];
//! (`Expected`, `Observation`) --[`judge::judge`]--> [`judge::Outcome`].

pub mod adapters;
pub mod corpus;
pub mod html;
pub mod judge;
pub mod ops;
pub mod process;
pub mod report;
pub mod writes;

use generator::{Expected, ManifestCase};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

pub use adapters::{adapter_from_spec, Adapter};
pub use judge::{judge, judge_with_model, Outcome, OutcomeKind};

/// Per-process limits for a program under test.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time of one process; the whole process group is killed
    /// when it runs out.
    pub timeout: Duration,
    /// Address-space limit (`RLIMIT_AS`, set through util-linux `prlimit`);
    /// `None` for no limit.
    pub memory_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: None,
        }
    }
}

/// What an adapter can do with an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Open an image and list its bitmaps (names, granularity, flags).
    pub read_metadata: bool,
    /// Read a bitmap's contents.
    pub read_bitmap_contents: bool,
    /// Read guest data.
    pub read_guest_data: bool,
    /// Write guest data (enables the write check, see [`writes`]).
    pub write_guest_data: bool,
    /// Add, remove, clear, enable, disable or merge bitmaps.
    pub bitmap_operations: bool,
}

/// A bitmap's flags as an implementation reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ObservedFlags {
    #[serde(default)]
    pub in_use: bool,
    #[serde(default)]
    pub auto: bool,
}

/// One bitmap as an implementation saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObservedBitmap {
    pub name: String,
    /// `None` when the implementation reports a granularity that is not a
    /// power of two (or none at all).
    pub granularity_bits: Option<u8>,
    pub flags: ObservedFlags,
    /// The implementation would use the bitmap (QEMU: it exported it).
    pub usable: bool,
    /// SHA-256 of the bitmap's data bytes as `spec/DIGEST.md` defines it,
    /// when the implementation's view of the contents was read.
    pub content_sha256: Option<String>,
    /// Number of set bits, when known.
    pub set_bits: Option<u64>,
    /// Dirty virtual byte ranges (half-open, merged), when the
    /// implementation reports contents that way.
    pub dirty_ranges: Option<Vec<(u64, u64)>>,
    /// Why the implementation refused to use it, if it did.
    pub error: Option<String>,
}

impl ObservedBitmap {
    /// The implementation used the bitmap: it claimed it usable or handed
    /// out its contents.
    pub fn used(&self) -> bool {
        self.usable || self.content_sha256.is_some() || self.dirty_ranges.is_some()
    }
}

/// What an integrity checker of the implementation (QEMU: `qemu-img check`)
/// said, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IntegrityCheck {
    /// It could run on the image at all.
    pub ran: bool,
    pub corruptions: u64,
    pub leaks: u64,
    pub check_errors: u64,
    /// The checker's own words (first error line), if it failed.
    pub error: Option<String>,
}

impl IntegrityCheck {
    /// It ran and found corruptions or check errors.
    pub fn flags_corrupt(&self) -> bool {
        self.ran && (self.corruptions > 0 || self.check_errors > 0)
    }
}

/// Everything the runner saw an implementation do with one image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observation {
    /// The implementation opened the image.
    pub opened: bool,
    /// Its error message when it did not (or any other error it printed).
    pub error: Option<String>,
    pub bitmaps: Vec<ObservedBitmap>,
    /// Exit status of the program that failed or last ran.
    pub exit_status: Option<i32>,
    /// A signal that ended one of its programs (not the runner's own kill).
    pub signal: Option<i32>,
    /// One of its programs ran out of time.
    pub timed_out: bool,
    /// A sanitizer report line from its standard error.
    pub sanitizer: Option<String>,
    /// The program broke the adapter's protocol (no or bad output).
    pub protocol_error: Option<String>,
    /// Wall-clock time of the whole observation.
    pub duration_ms: u64,
    /// The tail of the standard error of the program that failed (or of
    /// the last one).
    pub stderr_excerpt: String,
    /// Exact commands that reproduce the observation, in order (`$WORK` is
    /// a scratch directory holding the copy as `image.qcow2`).
    pub commands: Vec<String>,
    /// What the implementation's own checker said, when it has one.
    pub integrity: Option<IntegrityCheck>,
    /// The result of the write check, when it ran.
    pub write: Option<writes::WriteCheck>,
    /// Facts worth reporting that the judge does not use.
    pub notes: Vec<String>,
    /// The implementation does not know the bitmaps extension: the judge
    /// leaves bitmap expectations aside and judges the guest data it read
    /// ([`Observation::guest`]), refusals, crashes and writes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bitmaps_unaware: bool,
    /// Guest data the implementation read, compared with the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<adapters::probe::GuestCheck>,
    /// The result of the bitmap-operations check, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<ops::OpsCheck>,
    #[serde(skip)]
    bad_recorded: bool,
}

impl Observation {
    /// Folds one program run into the observation: crash, timeout,
    /// sanitizer output, exit status, command line.
    pub fn record(&mut self, p: &process::Proc) {
        self.commands.push(p.command.clone());
        self.absorb(p);
    }

    /// As [`Observation::record`] without adding the command line.
    pub fn absorb(&mut self, p: &process::Proc) {
        let sanitizer = p.sanitizer();
        let bad = p.timed_out || p.signal.is_some() || sanitizer.is_some();
        if p.timed_out {
            self.timed_out = true;
        }
        if self.signal.is_none() {
            self.signal = p.signal;
        }
        if self.sanitizer.is_none() {
            self.sanitizer = sanitizer;
        }
        // Keep the first bad program's status and stderr; otherwise the
        // latest program's.
        if !self.bad_recorded {
            self.exit_status = p.status;
            if bad || !p.stderr.trim().is_empty() {
                self.stderr_excerpt = excerpt(&p.stderr);
            }
            self.bad_recorded = bad;
        }
    }
}

/// The last [`process::STDERR_EXCERPT`] bytes of `s` (at a char boundary).
pub fn excerpt(s: &str) -> String {
    let s = s.trim_end();
    if s.len() <= process::STDERR_EXCERPT {
        return s.to_owned();
    }
    let mut start = s.len() - process::STDERR_EXCERPT;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// The result of one case under one implementation.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub implementation: String,
    pub outcome: Outcome,
    pub observation: Observation,
}

/// Everything about one case of the run.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRun {
    pub id: String,
    pub file: String,
    pub description: String,
    pub expected: Expected,
    pub results: Vec<CaseResult>,
}

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
    let model = (case.expected.verdict == spec_model::Verdict::Invalid
        && case.expected.bitmaps.is_none())
    .then(|| model_usability(image))
    .flatten();
    let outcome = judge::judge_with_model(&case.expected, &obs, model.as_deref());
    CaseResult {
        implementation: adapter.name().to_owned(),
        outcome,
        observation: obs,
    }
}

/// The reference model's (name, usable) for every bitmap of `image`.
fn model_usability(image: &Path) -> Option<Vec<(String, bool)>> {
    let r = spec_model::check_path(image).ok()?;
    Some(r.bitmaps.into_iter().map(|b| (b.name, b.usable)).collect())
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
        crate::qemu::command_line(&std::process::Command::new(image))
    );
    let mut obs = adapter.observe(&copy, &opts.limits);
    obs.commands.insert(0, setup.clone());
    if opts.writes
        && adapter.capabilities().write_guest_data
        && writes::eligible(&case.expected)
        && !obs.timed_out
        && obs.signal.is_none()
    {
        let copy2 = work.join("write.qcow2");
        match corpus::sparse_copy(image, &copy2) {
            Ok(()) => {
                let w = writes::run(adapter, &copy2, &opts.limits);
                obs.commands.push(format!(
                    "cp --sparse=always {} \"$WORK\"/write.qcow2",
                    crate::qemu::command_line(&std::process::Command::new(image))
                ));
                obs.commands.extend(w.commands.iter().cloned());
                if let Some(p) = &w.process {
                    obs.absorb(p);
                }
                obs.write = Some(w);
            }
            Err(e) => obs
                .notes
                .push(format!("write check skipped: cannot copy: {e}")),
        }
    }
    if adapter.checks_bitmap_ops()
        && opts.writes
        && writes::eligible(&case.expected)
        && !obs.timed_out
        && obs.signal.is_none()
    {
        let copy3 = work.join("ops.qcow2");
        match corpus::sparse_copy(image, &copy3) {
            Ok(()) => {
                if let Some(o) = adapter.bitmap_ops(&copy3, work, &opts.limits) {
                    obs.commands.push(format!(
                        "cp --sparse=always {} \"$WORK\"/ops.qcow2",
                        crate::qemu::command_line(&std::process::Command::new(image))
                    ));
                    obs.commands.extend(o.commands.iter().cloned());
                    if let Some(p) = &o.process {
                        obs.absorb(p);
                    }
                    obs.ops = Some(o);
                }
            }
            Err(e) => obs
                .notes
                .push(format!("bitmap operations skipped: cannot copy: {e}")),
        }
    }
    let work_s = work.to_string_lossy().into_owned();
    for c in &mut obs.commands {
        *c = with_work_var(c, &work_s);
    }
    obs
}

/// `command` (a shell command line as [`crate::qemu::command_line`] quotes
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
) -> anyhow::Result<report::RunReport> {
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
    Ok(report::RunReport::new(
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
