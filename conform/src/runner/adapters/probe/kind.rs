//! The bitmaps-unaware implementations the probe drives ([`ProbeKind`]):
//! their names, what they can do, and the dispatch that opens an image
//! through each one's backend.

use super::disk::{DiskError, GuestDisk};
pub use super::libqcow::LibqcowBuild;
use std::path::Path;

/// The bitmaps-unaware implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// The `imago` crate, version 0.2.6, feature `sync`.
    Imago,
    /// The `qcow2-rs` crate, version 0.1.6.
    Qcow2Rs,
    /// The `qcow2` crate, version 0.1.2 (read-only).
    Qcow2,
    /// The `qcow` crate, version 1.2.0 (read-only).
    Qcow,
    /// libqcow through its Python bindings (read-only).
    Libqcow(LibqcowBuild),
    /// `dissect.hypervisor` 3.21, Fox-IT's pure-Python reader (read-only).
    Dissect,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 7] = [
        ProbeKind::Imago,
        ProbeKind::Qcow2Rs,
        ProbeKind::Qcow2,
        ProbeKind::Qcow,
        ProbeKind::Libqcow(LibqcowBuild::Debian),
        ProbeKind::Libqcow(LibqcowBuild::Pypi20260703),
        ProbeKind::Dissect,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Imago => "imago",
            ProbeKind::Qcow2Rs => "qcow2-rs",
            ProbeKind::Qcow2 => "qcow2",
            ProbeKind::Qcow => "qcow",
            ProbeKind::Libqcow(LibqcowBuild::Debian) => "libqcow",
            ProbeKind::Libqcow(LibqcowBuild::Pypi20260703) => "libqcow@20260703",
            ProbeKind::Dissect => "dissect@3.21",
        }
    }

    pub fn from_name(s: &str) -> Option<ProbeKind> {
        ProbeKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The library's exact version: the crate version this binary links
    /// (pinned with `=` in the workspace's Cargo.toml), or what libqcow's
    /// bindings report.
    pub fn version(self) -> Option<String> {
        match self {
            ProbeKind::Imago => Some("0.2.6".into()),
            ProbeKind::Qcow2Rs => Some("0.1.6".into()),
            ProbeKind::Qcow2 => Some("0.1.2".into()),
            ProbeKind::Qcow => Some("1.2.0".into()),
            ProbeKind::Libqcow(build) => super::libqcow::version(build),
            ProbeKind::Dissect => super::dissect::version(),
        }
    }

    /// Whether the implementation can write guest data.
    pub fn can_write(self) -> bool {
        matches!(self, ProbeKind::Imago | ProbeKind::Qcow2Rs)
    }

    /// The incompatible feature bits the library supports, from its
    /// refusals over the corpus (`adapter-probe` on `valid/extended-l2`,
    /// `header.dirty/set`, `header.corrupt/set` and zstd images; see
    /// `docs/findings.md`). Bit 2 (external data file) is untested by the
    /// corpus: counted as supported by imago, which has data-file support,
    /// and as unsupported by the others.
    pub fn incompatible_supported(self) -> Option<u64> {
        Some(match self {
            // Refuses 0, 1, 3, 4: "Unrecognized incompatible feature(s) N".
            ProbeKind::Imago => 1 << 2,
            // Refuses 0, 1, 3, 4, the same message.
            ProbeKind::Qcow2Rs => 0,
            // Opens the dirty bit; refuses corrupt, extended L2, zstd.
            ProbeKind::Qcow2 => 1,
            // Checks no incompatible bit (it opens every image); its
            // reader handles the dirty bit and the compression type (zlib
            // and zstd), not extended L2 entries or an external data file.
            ProbeKind::Qcow => 0b1001,
            // Opens the dirty bit; refuses 0x2, 0x8, 0x10 ("unsupported
            // incompatible features flags").
            ProbeKind::Libqcow(_) => 1,
            // Checks no incompatible bit; reads dirty images, external
            // data files, the compression type (zlib; zstd only with the
            // `zstandard` module, which the environment lacks: refused)
            // and extended L2 entries (a reader of its own: see
            // docs/findings.md).
            ProbeKind::Dissect => 0b1_1101,
        })
    }

    /// Opens `image` through the implementation.
    pub(super) fn open(
        self,
        image: &Path,
        writable: bool,
    ) -> Result<Box<dyn GuestDisk>, DiskError> {
        match self {
            ProbeKind::Imago => super::imago::open(image, writable),
            ProbeKind::Qcow2Rs => super::qcow2_rs::open(image, writable),
            ProbeKind::Qcow2 => super::qcow2_crate::open(image, writable),
            ProbeKind::Qcow => super::qcow_crate::open(image, writable),
            ProbeKind::Libqcow(build) => super::libqcow::open(build, image, writable),
            ProbeKind::Dissect => super::dissect::open(image, writable),
        }
    }
}
