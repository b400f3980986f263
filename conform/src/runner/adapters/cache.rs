//! Where `scripts/setup.sh` keeps the implementations it unpacks beside
//! the machine's own rather than installing them: QEMU 7.2 from Debian
//! bookworm (`qemu@7.2`), libqcow from PyPI in a virtual environment
//! (`libqcow@20260703`) and `dissect.hypervisor` from PyPI in another
//! (`dissect@3.21`). Setup and the adapters agree on these paths.

use std::path::PathBuf;

/// The cache directory: `QCOW2_CONFORM_CACHE`, else
/// `$XDG_CACHE_HOME/qcow2-conform`, else `$HOME/.cache/qcow2-conform`.
pub fn dir() -> PathBuf {
    let set = |v: &str| std::env::var_os(v).filter(|p| !p.is_empty());
    if let Some(d) = set("QCOW2_CONFORM_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = set("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("qcow2-conform");
    }
    PathBuf::from(set("HOME").unwrap_or_else(|| "/tmp".into()))
        .join(".cache")
        .join("qcow2-conform")
}

/// Where setup unpacks QEMU `version` (`qemu-7.2`: Debian's packages
/// extracted with `dpkg -x`, the tools under `usr/bin`).
pub fn qemu_prefix(version: &str) -> PathBuf {
    dir().join(format!("qemu-{version}"))
}

/// The Python of the virtual environment that holds
/// `dissect.hypervisor` `version` from PyPI (`dissect@3.21`).
pub fn dissect_python(version: &str) -> PathBuf {
    dir()
        .join(format!("dissect-{version}"))
        .join("bin")
        .join("python")
}

/// The Python of the virtual environment that holds libqcow `version`
/// from PyPI (`libqcow-python`).
pub fn libqcow_python(version: &str) -> PathBuf {
    dir()
        .join(format!("libqcow-{version}"))
        .join("bin")
        .join("python")
}
