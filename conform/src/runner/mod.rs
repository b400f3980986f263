//! The conformance runner: feeds every case of a corpus to real
//! implementations through [`Adapter`]s, each on a private copy, and judges
//! what they did against the manifest's expected verdict
//! ([`judge::judge`]).
//!
//! Modules, grouped by concern:
//! - [`process`]: running one program ([`Limits`]) and everything that
//!   contains it: the keeper every program runs under
//!   ([`process::containment`]), the Landlock sandbox
//!   ([`process::sandbox`]), its capped output ([`process::output`]), the
//!   stop flag ([`process::signals`]), the worker slots a hung program
//!   steps aside from ([`process::slots`]), scratch directories
//!   ([`process::temp_dirs`]) and the case a thread runs
//!   ([`process::case_env`]);
//! - [`corpus`]: what a run reads: the manifest and private copies, the
//!   untrusted input files ([`corpus::input`]), the files an image names
//!   ([`corpus::references`]), an image as the model reads it
//!   ([`corpus::image_state`], [`corpus::image_layers`]);
//! - data: [`checks`] (write and bitmap-operations results),
//!   [`observation`] (what an implementation did), [`adapter`] (the
//!   [`Adapter`] trait), [`capped`], [`text`], [`ranges`];
//! - [`adapters`]: the implementations (QEMU, exec, crate probes);
//! - [`judge`](mod@judge): deciding by obligation, with the outcome
//!   ([`judge::outcome`]), its cause ([`judge::cause`]) and the write
//!   check ([`judge::write_check`]);
//! - [`report`]: the report of a run and every rendering of it
//!   (provenance, JUnit, HTML, the terminal matrix, `report diff`, the one
//!   sanitiser);
//! - [`gate`]: what fails a run, the expectations file
//!   ([`gate::expect`]) and case filters ([`gate::select`]);
//! - [`run`]: the orchestration, in the order [`schedule`] gives, with
//!   the worker slots of [`process::slots`].
//!
//! This file only declares them and re-exports what outside callers use.
//!
//! Data flow (see `DESIGN.md`):
//! copy of image --[`Adapter::observe`]--> [`Observation`];
//! (`Expected`, `Observation`) --[`judge::judge`]--> [`judge::Outcome`].

pub mod adapter;
pub mod adapters;
pub mod capped;
pub mod checks;
pub mod corpus;
pub mod gate;
pub mod judge;
pub mod observation;
pub mod process;
pub mod ranges;
pub mod report;
pub mod run;
pub mod schedule;
pub mod text;

pub use adapter::{Adapter, Capabilities};
pub use adapters::adapter_from_spec;
pub use judge::{judge, judge_with_model, Outcome, OutcomeKind};
pub use observation::{IntegrityCheck, Observation, ObservedBitmap, ObservedFlags};
pub use process::Limits;
pub use report::{CaseResult, CaseRun};
pub use run::{run_case, run_corpus, run_selected, with_work_var, RunOptions};
pub use schedule::Scheduling;
