//! The bitmaps-unaware implementations the probe drives ([`ProbeKind`]):
//! their names, what they can do, and the dispatch that opens an image
//! through each one's backend.

use super::disk::{DiskError, GuestDisk};
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
    /// libqcow through Debian's `python3-libqcow` (read-only).
    Libqcow,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 4] = [
        ProbeKind::Imago,
        ProbeKind::Qcow2Rs,
        ProbeKind::Qcow2,
        ProbeKind::Libqcow,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Imago => "imago",
            ProbeKind::Qcow2Rs => "qcow2-rs",
            ProbeKind::Qcow2 => "qcow2",
            ProbeKind::Libqcow => "libqcow",
        }
    }

    pub fn from_name(s: &str) -> Option<ProbeKind> {
        ProbeKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the implementation can write guest data.
    pub fn can_write(self) -> bool {
        matches!(self, ProbeKind::Imago | ProbeKind::Qcow2Rs)
    }

    /// The incompatible feature bits the library supports, from its
    /// refusals over the corpus (`docs/findings.md`); `None` when unknown.
    pub fn incompatible_supported(self) -> Option<u64> {
        None
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
            ProbeKind::Libqcow => super::libqcow::open(image, writable),
        }
    }
}
