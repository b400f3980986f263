//! The vendor kit that `corpus build` writes beside the images, so that a
//! packed corpus stands alone: the README, the verdict contract and exec
//! protocol (`PROTOCOL.md`), the CI recipe (`CI.md` and `ci.sh`, which
//! runs the directory it lies in), and two example exec adapters (one
//! that knows bitmaps, one `read` adapter that does not). They are kept in
//! one place, the checked-in `corpus/` itself, and compiled into the binary
//! so that `corpus build` writes them wherever it runs (into `corpus/`, the
//! same bytes).

use anyhow::{Context, Result};
use std::path::Path;

/// Every kit file: path relative to the corpus directory, and contents.
pub const FILES: [(&str, &str); 6] = [
    ("README.md", include_str!("../../../corpus/README.md")),
    ("PROTOCOL.md", include_str!("../../../corpus/PROTOCOL.md")),
    ("CI.md", include_str!("../../../corpus/CI.md")),
    ("ci.sh", include_str!("../../../corpus/ci.sh")),
    (
        "examples/qemu-img-adapter.py",
        include_str!("../../../corpus/examples/qemu-img-adapter.py"),
    ),
    (
        "examples/qcow2-read-adapter.py",
        include_str!("../../../corpus/examples/qcow2-read-adapter.py"),
    ),
];

/// The kit's paths, relative to the corpus directory.
pub fn names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(n, _)| *n)
}

/// Writes every kit file into `dir`.
pub fn write(dir: &Path) -> Result<()> {
    for (name, text) in FILES {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}
