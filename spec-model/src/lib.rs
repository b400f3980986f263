//! An executable reference model of the qcow2 persistent-bitmaps
//! specification (QEMU's `docs/interop/qcow2.rst`, "Bitmaps extension" and
//! "Bitmaps"), with enough of the rest of qcow2 to account for every
//! cluster.
//!
//! [`check`] answers whether an image conforms, which catalogue rule each
//! defect breaks ([`rules::Rule`]) and, through [`Model`], the exact
//! contents of every usable bitmap. The model reads through `Read + Seek`,
//! never panics and never allocates more than the file's size justifies.

#![forbid(unsafe_code)]

/// A finding's message as a closure for [`finding::Findings::add_with`]:
/// `msg!("entry {i}: ...")` is formatted only when the finding is kept
/// (findings past a rule's cap, and those of an ignored extension, never
/// are).
macro_rules! msg {
    ($($arg:tt)*) => {
        |out: &mut String| $crate::finding::write_message(out, format_args!($($arg)*))
    };
}

pub mod bitmaps;
mod check;
pub mod clusters;
mod context;
pub mod drafts;
pub mod dump;
pub mod extensions;
pub mod fields;
pub mod finding;
pub mod guest;
pub mod header;
pub mod io;
pub mod layers;
pub mod mapping;
pub mod obligations;
pub mod refcount;
pub mod report;
pub mod revision;
pub mod rules;
pub mod semantics;
pub mod snapshots;
mod zeros;

pub use bitmaps::ExtensionState;
pub use check::{check, check_bytes, check_path, Analysis, Model};
pub use finding::Finding;
pub use io::CheckError;
pub use obligations::Obligation;
pub use report::{BitmapReport, Contents, Flags, Report, Verdict};
pub use revision::Revision;
pub use rules::{Rule, Severity};
