//! Adapters for qcow2 implementations that do not know the bitmaps
//! extension: the crates `imago`, `qcow2-rs`, `qcow2` and `qcow`,
//! libqcow (Debian's `python3-libqcow`, and a newer release from PyPI) and
//! `dissect.hypervisor` (PyPI). One file each holds the backend that
//! drives the implementation ([`imago`], [`qcow2_rs`], [`qcow2_crate`],
//! [`qcow_crate`], [`libqcow`], [`dissect`])
//! behind [`GuestDisk`]; [`ProbeKind`] names them and dispatches to them.
//!
//! The implementation never runs inside the runner: the adapter
//! ([`ProbeAdapter`], the parent side) starts
//! `qcow2-conform adapter-probe --impl NAME --image IMAGE [--write OFF LEN]`
//! (a hidden subcommand) through [`crate::runner::process`], so that a
//! panic, an abort, a segfault or a hang costs one case, not the run. The
//! probe process ([`probe`], the child side) prints one JSON object
//! ([`ProbeReport`]) on stdout.
//!
//! What the probe checks:
//! - **observe**: does the implementation open the image; what does it read
//!   of the virtual disk at the sample ranges of [`sample_ranges`] (first
//!   and last 64 KiB, the first 4 KiB of every allocated cluster up to
//!   [`MAX_CLUSTER_SAMPLES`], and [`RANDOM_SAMPLES`] ranges from a fixed
//!   seed), compared byte for byte with [`spec_model::Model::read_guest`];
//!   and does it report the virtual size of the header;
//! - **write** (`--write OFF LEN`): the implementation opens the image
//!   writable, writes [`pattern_byte`] at `OFF..OFF+LEN` and closes it; then
//!   the model must read the pattern back there and unchanged data at every
//!   sample range outside it. The runner's write check
//!   ([`crate::runner::judge::write_check`]) then asks the model whether the image
//!   still conforms, and whether autoclear bit 0 was cleared or the
//!   bitmaps were maintained.
//!
//! Where each part lives: [`disk`] the backend trait and its error,
//! [`kind`] the implementations and the dispatch, [`report`] the JSON
//! answer, [`sampling`] the sample ranges and the write pattern,
//! [`expectation`] what the model reads there, [`guard`] the panic guard,
//! [`child`] the probe process, [`adapter`] the runner's side.

pub mod adapter;
pub mod child;
pub mod disk;
pub mod dissect;
pub mod expectation;
pub mod guard;
pub mod imago;
pub mod kind;
pub mod libqcow;
pub mod qcow2_crate;
pub mod qcow2_rs;
pub mod qcow_crate;
pub mod report;
pub mod sampling;

pub use crate::runner::observation::GuestCheck;
pub use adapter::{ProbeAdapter, ProbeError};
pub use child::probe;
pub use disk::{DiskError, GuestDisk};
pub use kind::{LibqcowBuild, ProbeKind};
pub use report::{ProbeReport, WriteOutcome};
pub use sampling::{
    pattern_byte, sample_ranges, CLUSTER_SAMPLE_BYTES, EDGE_SAMPLE_BYTES, MAX_CLUSTER_SAMPLES,
    RANDOM_SAMPLES,
};
