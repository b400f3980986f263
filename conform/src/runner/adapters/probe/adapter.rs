//! The parent side: [`ProbeAdapter`], the [`Adapter`] the runner uses for
//! a bitmaps-unaware implementation. It starts the probe process
//! (`qcow2-conform adapter-probe`) through [`crate::runner::process`],
//! parses its [`ProbeReport`] and turns it into an observation or a write
//! run.

use super::kind::ProbeKind;
use super::report::ProbeReport;
use crate::runner::adapter::{Adapter, Capabilities, WriteRun};
use crate::runner::observation::Observation;
use crate::runner::process::{self, Limits, Proc};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why the probe process gave no report.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe process could not be run.
    #[error(transparent)]
    Run(#[from] std::io::Error),
    /// Its standard output holds no report.
    #[error("the probe printed no report ({source}; {end}); stdout began {start:?}")]
    NoReport {
        source: serde_json::Error,
        /// How the process ended.
        end: String,
        /// The first 200 characters of its standard output.
        start: String,
    },
}

/// A bitmaps-unaware implementation, driven through the probe process.
pub struct ProbeAdapter {
    kind: ProbeKind,
    exe: PathBuf,
}

/// The `qcow2-conform` binary that runs the probe: `QCOW2_CONFORM_BIN`, or
/// the running executable.
fn probe_exe() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("QCOW2_CONFORM_BIN") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().context("cannot find the qcow2-conform executable for the probe")
}

impl ProbeAdapter {
    /// The adapter for `kind`; fails when the implementation is not
    /// installed (libqcow's Python bindings).
    pub fn new(kind: ProbeKind) -> Result<ProbeAdapter> {
        match kind {
            ProbeKind::Libqcow(build) => super::libqcow::ensure_installed(build)?,
            ProbeKind::Dissect => super::dissect::ensure_installed()?,
            _ => {}
        }
        let exe = probe_exe()?;
        if !exe.exists() {
            bail!("the probe executable {} does not exist", exe.display());
        }
        Ok(ProbeAdapter { kind, exe })
    }

    fn run(
        &self,
        image: &Path,
        write: Option<(u64, u64)>,
        limits: &Limits,
    ) -> Result<Proc, ProbeError> {
        let mut args: Vec<OsString> = vec![
            "adapter-probe".into(),
            "--impl".into(),
            self.kind.name().into(),
            "--image".into(),
            image.into(),
        ];
        if let Some((o, l)) = write {
            args.extend(["--write".into(), o.to_string().into(), l.to_string().into()]);
        }
        // In the case's directory, where its companions are (a relative
        // backing file name resolves there for a library that resolves it
        // against its working directory).
        // In the sandbox it may read the cache (libqcow's environment) and
        // the installation of the Python that runs libqcow's helper.
        let mut reads = vec![crate::runner::adapters::cache::dir()];
        let python = match self.kind {
            ProbeKind::Libqcow(build) => Some(super::libqcow::python(build)),
            ProbeKind::Dissect => Some(super::dissect::python()),
            _ => None,
        };
        if let Some(python) = python {
            reads.extend(crate::runner::process::sandbox::program_dirs(&python));
        }
        let cmd = crate::runner::process::case_env::run_in_dir(process::command_reading(
            self.exe.as_os_str(),
            &args,
            limits,
            &reads,
        ));
        let mut p = process::run(cmd, limits.timeout)?;
        // Reproduction commands name the tool, not the build path.
        let exe = crate::runner::text::command_line(&std::process::Command::new(&self.exe));
        if let Some(rest) = p.command.strip_prefix(&exe) {
            p.command = format!("qcow2-conform{rest}");
        }
        Ok(p)
    }
}

/// The probe's JSON answer (the last non-empty line of stdout).
fn parse_report(p: &Proc) -> Result<ProbeReport, ProbeError> {
    let line = p
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).map_err(|source| ProbeError::NoReport {
        source,
        end: p.describe_end(),
        start: p.stdout.chars().take(200).collect(),
    })
}

impl Adapter for ProbeAdapter {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_guest_data: true,
            write_guest_data: self.kind.can_write(),
            incompatible_features_supported: self.kind.incompatible_supported(),
            ..Capabilities::default()
        }
    }

    fn identity(&self) -> crate::runner::adapter::Identity {
        crate::runner::adapter::Identity {
            version: self.kind.version(),
            ..Default::default()
        }
    }

    fn observe(&self, image: &Path, limits: &Limits) -> Observation {
        let start = Instant::now();
        let mut obs = Observation {
            bitmaps_unaware: true,
            ..Observation::default()
        };
        let Some(p) = obs.record_run(self.run(image, None, limits), start) else {
            return obs;
        };
        match parse_report(&p) {
            Err(e) => obs.protocol_error = Some(e.to_string()),
            Ok(r) => {
                obs.opened = r.opened;
                obs.error = r.error;
                if obs.signal.is_none() {
                    obs.signal = r.signal;
                }
                obs.guest = r.guest;
                obs.notes.extend(r.notes);
            }
        }
        obs
    }

    fn write(&self, image: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        let p = match self.run(image, Some((offset, len)), limits) {
            Ok(p) => p,
            Err(e) => {
                return WriteRun {
                    error: Some(e.to_string()),
                    ..WriteRun::default()
                }
            }
        };
        let mut run = WriteRun {
            commands: vec![p.command.clone()],
            ..WriteRun::default()
        };
        if p.timed_out || p.signal.is_some() {
            run.error = Some(p.describe_end());
        } else {
            match parse_report(&p) {
                Err(e) => run.error = Some(e.to_string()),
                Ok(r) => {
                    if let Some(w) = r.write {
                        run.ok = w.ok;
                        run.error = w.error;
                        run.problems.extend(w.problems);
                    }
                }
            }
        }
        run.process = Some(p);
        run
    }
}
