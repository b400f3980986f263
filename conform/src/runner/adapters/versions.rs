//! The version of the implementation behind an `--impl` name, as the
//! pinned matrix keys it (`snapshots/matrix@IMPL@VERSION.snap`): QEMU's
//! from `qemu-img --version` of the tool set the adapter runs, libqcow's
//! from its Python bindings, a crate's from the version this workspace
//! pins in `Cargo.toml`.

use super::probe::{LibqcowBuild, ProbeKind};
use super::qemu::Toolset;
use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// The version of `spec` (`qemu`, `qemu@7.2`, `qemu@DIR`, or a probe
/// implementation); an error for an exec adapter or a missing
/// implementation.
pub fn version_of(spec: &str) -> Result<String> {
    if spec == "qemu" {
        return Toolset::from_path()?.version();
    }
    if let Some(place) = spec.strip_prefix("qemu@") {
        return super::qemu::QemuAdapter::at(place)?.tools().version();
    }
    let Some(kind) = ProbeKind::from_name(spec) else {
        bail!("no known version for {spec:?}");
    };
    Ok(match kind {
        ProbeKind::Imago => "0.2.6".into(),
        ProbeKind::Qcow2Rs => "0.1.6".into(),
        ProbeKind::Qcow2 => "0.1.2".into(),
        ProbeKind::Qcow => "1.2.0".into(),
        ProbeKind::Libqcow(build) => libqcow_version(build)?,
    })
}

/// What `pyqcow.get_version()` says for `build`.
fn libqcow_version(build: LibqcowBuild) -> Result<String> {
    let py = super::probe::libqcow::python(build);
    let out = Command::new(&py)
        .args(["-c", "import pyqcow; print(pyqcow.get_version())"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", py.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import pyqcow: {}",
            py.to_string_lossy(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
