//! The version of the implementation behind an `--impl` name, as the
//! pinned matrix keys it (`snapshots/matrix@IMPL@VERSION.snap`): QEMU's
//! from `qemu-img --version` of the tool set the adapter runs, libqcow's
//! from its Python bindings, a crate's from the version this workspace
//! pins in `Cargo.toml`.

use super::probe::ProbeKind;
use super::qemu::Toolset;
use anyhow::{bail, Context, Result};

/// The version of `spec` (`qemu`, `qemu@7.2`, `qemu@DIR`, `qemu-live@10.2`, or a probe
/// implementation); an error for an exec adapter or a missing
/// implementation.
pub fn version_of(spec: &str) -> Result<String> {
    if spec == "qemu" {
        return Toolset::from_path()?.version();
    }
    if let Some(place) = spec
        .strip_prefix("qemu@")
        .or_else(|| spec.strip_prefix("qemu-live@"))
    {
        return super::qemu::QemuAdapter::at(place)?.tools().version();
    }
    let Some(kind) = ProbeKind::from_name(spec) else {
        bail!("no known version for {spec:?}");
    };
    kind.version().with_context(|| {
        format!("cannot tell {spec}'s version (its Python bindings do not import)")
    })
}
