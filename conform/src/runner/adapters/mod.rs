//! Implementations under test, one module each, and [`adapter_from_spec`]
//! that picks one by name. The trait they implement is
//! [`crate::runner::adapter::Adapter`].

pub mod exec;
pub mod exec_read;
pub mod probe;
pub mod qemu;
pub mod qemu_live;

pub use super::adapter::{Adapter, WriteRun};
use anyhow::{bail, Result};

/// The adapter named on the command line: `qemu`, `qemu-live` or
/// `exec:TEMPLATE`.
pub fn adapter_from_spec(spec: &str) -> Result<Box<dyn Adapter>> {
    if spec == "qemu" {
        return Ok(Box::new(qemu::QemuAdapter::new()?));
    }
    if spec == "qemu-live" {
        return Ok(Box::new(qemu_live::QemuLiveAdapter::new()?));
    }
    if let Some(template) = spec.strip_prefix("exec:") {
        return Ok(Box::new(exec::ExecAdapter::new(template)?));
    }
    if let Some(kind) = probe::ProbeKind::from_name(spec) {
        return Ok(Box::new(probe::ProbeAdapter::new(kind)?));
    }
    bail!(
        "unknown implementation {spec:?}: expected `qemu`, `qemu-live`, `exec:TEMPLATE`, or one of {}",
        probe::ProbeKind::ALL.map(|k| k.name()).join(", ")
    )
}
