//! Implementations under test, one file each.

pub mod exec;
pub mod probe;
pub mod qemu;

use super::process::Proc;
use super::{Capabilities, Limits, Observation};
use anyhow::{bail, Result};
use std::path::Path;

/// What a write through an adapter did.
#[derive(Debug, Clone, Default)]
pub struct WriteRun {
    /// The program reported success.
    pub ok: bool,
    pub error: Option<String>,
    /// The program that wrote (for crash, timeout and sanitizer checks).
    pub process: Option<Proc>,
    /// Commands that reproduce the write (`$WORK` handled by the runner).
    pub commands: Vec<String>,
    /// What the adapter itself found wrong with the result (e.g. the model
    /// does not read the written data back); each makes the case
    /// `corrupting`.
    pub problems: Vec<String>,
}

/// One implementation under test.
pub trait Adapter: Send + Sync {
    /// The implementation's name in reports (`qemu`, `exec:...`).
    fn name(&self) -> &str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Opens `image_copy` (a private copy the adapter may modify) and
    /// reports what the implementation saw. Never fails: a program that
    /// cannot start, crashes or hangs is part of the observation.
    fn observe(&self, image_copy: &Path, limits: &Limits) -> Observation;

    /// Writes `len` bytes of guest data at virtual offset `offset` of
    /// `image_copy`. Only called when [`Capabilities::write_guest_data`].
    fn write(&self, image_copy: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        let _ = (image_copy, offset, len, limits);
        WriteRun {
            error: Some(format!("{} cannot write", self.name())),
            ..WriteRun::default()
        }
    }

    /// Whether [`Adapter::bitmap_ops`] runs (QEMU with `--bitmap-ops`).
    fn checks_bitmap_ops(&self) -> bool {
        false
    }

    /// The bitmap-operations check ([`super::ops`]) on `image_copy`, a
    /// private copy of a valid image; `work` is scratch space. Only called
    /// when [`Adapter::checks_bitmap_ops`].
    fn bitmap_ops(
        &self,
        image_copy: &Path,
        work: &Path,
        limits: &Limits,
    ) -> Option<super::ops::OpsCheck> {
        let _ = (image_copy, work, limits);
        None
    }
}

/// The adapter named on the command line: `qemu` or `exec:TEMPLATE`.
pub fn adapter_from_spec(spec: &str) -> Result<Box<dyn Adapter>> {
    if spec == "qemu" {
        return Ok(Box::new(qemu::QemuAdapter::new()?));
    }
    if let Some(template) = spec.strip_prefix("exec:") {
        return Ok(Box::new(exec::ExecAdapter::new(template)?));
    }
    if let Some(kind) = probe::ProbeKind::from_name(spec) {
        return Ok(Box::new(probe::ProbeAdapter::new(kind)?));
    }
    bail!(
        "unknown implementation {spec:?}: expected `qemu`, `exec:TEMPLATE`, or one of {}",
        probe::ProbeKind::ALL.map(|k| k.name()).join(", ")
    )
}
