//! The semantics of persistent bitmaps as an executable model: what each
//! operation of a running program must do to a bitmap (the spec's
//! "Bitmaps" section: `auto` means every write sets the bits it touches,
//! `in_use` means the contents must not be used), beside the format model
//! that says what a file must look like.
//!
//! - [`granules`]: set bits as granule index ranges, their byte ranges,
//!   merges across granularities and the two contents digests;
//! - [`state`]: a running image's bitmaps ([`Disk`], [`Bitmap`]) and every
//!   operation ([`Op`]): whether it must succeed ([`Expect`]) and its effect;
//! - [`node`]: the node's state (inactive, bitmaps held by an export),
//!   transactions, inactivation and activation, default granularity;
//! - [`nodes`]: several nodes in one program (one [`Disk`] each), merges
//!   from another node's bitmaps, transactions across nodes;
//! - [`readonly`]: a node opened read-only (writes refused, loaded
//!   bitmaps and persistent adds may be refused, the file unchanged);
//! - [`reopen`]: a node reopened read-only (bitmaps stored) and
//!   read-write again (marked `in_use` in the image);
//! - [`lifecycle`]: clean close, crash and reopen, and judging a file the
//!   format model read against what they require ([`judge_file`]).
//!
//! Callers (the runner's write and bitmap-operations checks, the live-QEMU
//! adapter and its sequence campaign) ask this model for expected bits and
//! never derive them themselves.

pub mod granules;
pub mod lifecycle;
pub mod node;
pub mod nodes;
pub mod readonly;
pub mod reopen;
pub mod state;

pub use lifecycle::{judge_file, FileBitmap, FileBitmapRead, FileExpectation, FileRead};
pub use nodes::{NodeOp, Nodes, Source};
pub use state::{Bitmap, DiscardMode, Disk, Expect, Op, Origin};
