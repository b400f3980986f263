//! Implementations under test, one module each, and [`adapter_from_spec`]
//! that picks one by name. The trait they implement is
//! [`crate::runner::adapter::Adapter`].

pub mod cache;
pub mod exec;
pub mod exec_read;
pub mod probe;
pub mod qemu;
pub mod qemu_live;
pub mod versions;

pub use super::adapter::{Adapter, WriteRun};
use anyhow::{bail, Result};

/// What the command line asks of the adapters besides their names.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdapterOptions {
    /// Run QEMU's bitmap-operations check (`run --bitmap-ops`).
    pub bitmap_ops: bool,
    /// The run's limits, for the calls an adapter makes before any case
    /// (an exec program's `capabilities`); `None`: the adapter's default.
    pub limits: Option<crate::runner::process::Limits>,
}

/// The adapter named on the command line (`qemu`, `qemu@VERSION`,
/// `qemu@DIR`, `qemu-live[@VERSION]`, `exec:TEMPLATE`, a library), with default options.
pub fn adapter_from_spec(spec: &str) -> Result<Box<dyn Adapter>> {
    adapter_with_options(spec, AdapterOptions::default())
}

/// The adapter named on the command line: `qemu` (the machine's QEMU),
/// `qemu@VERSION` (one that `scripts/setup.sh` unpacked, `qemu@7.2`, or
/// that `scripts/build-qemu.sh` built, `qemu@10.2`, `qemu@10.2-asan`) or
/// `qemu@DIR` (an installation prefix), `qemu-live` and
/// `qemu-live@VERSION|DIR` (the same QEMUs' daemon), `exec:TEMPLATE`, or a
/// bitmaps-unaware library ([`probe::ProbeKind`]).
pub fn adapter_with_options(spec: &str, opts: AdapterOptions) -> Result<Box<dyn Adapter>> {
    if spec == "qemu" {
        return Ok(Box::new(
            qemu::QemuAdapter::new()?.with_bitmap_ops(opts.bitmap_ops),
        ));
    }
    if let Some(place) = spec.strip_prefix("qemu@") {
        return Ok(Box::new(
            qemu::QemuAdapter::at(place)?.with_bitmap_ops(opts.bitmap_ops),
        ));
    }
    if spec == "qemu-live" {
        return Ok(Box::new(qemu_live::QemuLiveAdapter::new()?));
    }
    if let Some(place) = spec.strip_prefix("qemu-live@") {
        return Ok(Box::new(qemu_live::QemuLiveAdapter::at(place)?));
    }
    if let Some(template) = spec.strip_prefix("exec:") {
        return Ok(Box::new(match &opts.limits {
            Some(l) => exec::ExecAdapter::with_limits(template, l)?,
            None => exec::ExecAdapter::new(template)?,
        }));
    }
    if let Some(kind) = probe::ProbeKind::from_name(spec) {
        return Ok(Box::new(probe::ProbeAdapter::new(kind)?));
    }
    bail!(
        "unknown implementation {spec:?}: expected `qemu`, `qemu@VERSION`, `qemu@DIR`, `qemu-live`, `qemu-live@VERSION`, `exec:TEMPLATE`, or one of {}",
        probe::ProbeKind::ALL.map(|k| k.name()).join(", ")
    )
}
