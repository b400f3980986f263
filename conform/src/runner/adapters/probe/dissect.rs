//! Fox-IT's pure-Python qcow2 reader (`dissect.hypervisor` 3.21 from
//! PyPI, `dissect.hypervisor.disk.qcow2.QCow2`) as an implementation under
//! test (`dissect@3.21`), through a Python helper in the probe's process
//! ([`super::libqcow::open_helper`]). Read-only, bitmaps-unaware. It runs
//! in the project's virtual environment that `scripts/setup.sh` fills
//! ([`crate::runner::adapters::cache::dissect_python`]); it opens the
//! backing file and the external data file itself, beside the image.

use super::disk::{DiskError, GuestDisk};
use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

/// The release on PyPI the matrix pins.
pub const VERSION: &str = "3.21";

/// The helper: opens the image by its path (so that dissect finds the
/// backing and data files beside it), says `opened SIZE`, then answers
/// `OFFSET LENGTH` requests (see [`super::libqcow::open_helper`], which
/// puts its `say` first). Any exception while opening is dissect's
/// refusal, with its message.
const HELPER: &str = r#"
import types
from pathlib import Path
# `dissect.hypervisor`'s package initialisers import every format it knows
# (Hyper-V, VMDK, ...: 0.6 s per case); stand-ins for the two packages let
# the qcow2 module, the code under test, load alone and unchanged.
import dissect
base = os.path.join(list(dissect.__path__)[0], "hypervisor")
for name, path in (("dissect.hypervisor", base), ("dissect.hypervisor.disk", os.path.join(base, "disk"))):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
from dissect.hypervisor.disk.qcow2 import QCow2
try:
    q = QCow2(Path(sys.argv[1]))
    s = q.open()
except Exception as e:
    say("refused", type(e).__name__ + ": " + str(e))
    sys.exit(0)
say("opened", q.size)
for line in sys.stdin:
    off, n = (int(x) for x in line.split())
    try:
        s.seek(off)
        data = s.read(n)
    except Exception as e:
        say("error", type(e).__name__ + ": " + str(e))
        continue
    say("ok", len(data))
    out.write(data)
    out.flush()
"#;

/// The virtual environment's Python.
pub fn python() -> OsString {
    crate::runner::adapters::cache::dissect_python(VERSION).into_os_string()
}

/// The installed release (`dissect.hypervisor`'s distribution version).
pub fn version() -> Option<String> {
    let o = Command::new(python())
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('dissect.hypervisor'))",
        ])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    (o.status.success() && !v.is_empty()).then_some(v)
}

/// Fails unless the virtual environment imports the pinned release.
pub fn ensure_installed() -> Result<()> {
    match version() {
        Some(v) if v == VERSION => Ok(()),
        found => bail!(
            "dissect.hypervisor {VERSION} is not installed ({} has {}): run scripts/setup.sh, \
             which installs it into a virtual environment there",
            python().to_string_lossy(),
            found.unwrap_or_else(|| "none".into())
        ),
    }
}

pub fn open(image: &Path, writable: bool) -> Result<Box<dyn GuestDisk>, DiskError> {
    if writable {
        return Err(DiskError::ReadOnly("dissect"));
    }
    super::libqcow::open_helper(&python(), HELPER, image)
}
