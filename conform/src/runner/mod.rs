//! The conformance runner: feeds every case of a corpus to real
//! implementations through [`Adapter`]s, each on a private copy, and judges
//! what they did against the manifest's expected verdict
//! ([`judge::judge`]).
//!
//! Modules, each importing only from those above it:
//! - leaves: [`text`] (message and command-line text), [`ranges`] (byte
//!   range arithmetic), [`process`] (running one program, [`Limits`]),
//!   [`image_state`] (an image as the model reads it), [`case_env`] (the
//!   passphrase and directory of the case being run);
//! - data: [`checks`] (write and bitmap-operations results),
//!   [`observation`] (what an implementation did), [`adapter`] (the
//!   [`Adapter`] trait);
//! - [`adapters`]: the implementations (QEMU, exec, crate probes);
//! - [`judge`](mod@judge) and [`writes`] (the write check);
//! - [`report`], [`terminal`] and [`html`]; [`corpus`]; [`run`] (the orchestration).
//!
//! This file only declares them and re-exports what outside callers use.
//!
//! Data flow (see `DESIGN.md`):
//! copy of image --[`Adapter::observe`]--> [`Observation`];
//! (`Expected`, `Observation`) --[`judge::judge`]--> [`judge::Outcome`].

pub mod adapter;
pub mod adapters;
pub mod case_env;
pub mod cause;
pub mod checks;
pub mod corpus;
pub mod html;
pub mod image_layers;
pub mod image_state;
pub mod judge;
pub mod judge_context;
pub mod observation;
pub mod outcome;
pub mod process;
pub mod ranges;
pub mod report;
pub mod run;
pub mod terminal;
pub mod text;
pub mod writes;

pub use adapter::{Adapter, Capabilities};
pub use adapters::adapter_from_spec;
pub use judge::{judge, judge_with_model, Outcome, OutcomeKind};
pub use observation::{IntegrityCheck, Observation, ObservedBitmap, ObservedFlags};
pub use process::Limits;
pub use report::{CaseResult, CaseRun};
pub use run::{run_case, run_corpus, with_work_var, RunOptions};
