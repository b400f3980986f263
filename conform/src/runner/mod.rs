//! The conformance runner: feeds every case of a corpus to real
//! implementations through [`Adapter`]s, each on a private copy, and judges
//! what they did against the manifest's expected verdict
//! ([`judge::judge`]).
//!
//! Modules, each importing only from those above it:
//! - leaves: [`text`] (message and command-line text), [`ranges`] (byte
//!   range arithmetic), [`process`] (running one program, [`Limits`];
//!   with [`containment`] (the keeper every program runs under),
//!   [`output`] (its capped output) and [`signals`] (the stop flag)),
//!   [`temp_dirs`] (scratch directories named for their owner),
//!   [`sandbox`] (the Landlock sandbox of every program),
//!   [`image_state`] (an image as the model reads it), [`references`]
//!   (the files an image names, checked before a case runs),
//!   [`case_env`] (the passphrase and directory of the case being run),
//!   [`input`] (untrusted input files: regular, capped, beneath the
//!   corpus), [`sanitise`] (the one sanitiser of human and markup output);
//! - data: [`checks`] (write and bitmap-operations results),
//!   [`observation`] (what an implementation did), [`adapter`] (the
//!   [`Adapter`] trait);
//! - [`adapters`]: the implementations (QEMU, exec, crate probes);
//! - [`judge`](mod@judge) and [`writes`] (the write check);
//! - [`provenance`] (where a report comes from), [`report`], [`expect`]
//!   (expectations files), [`gate`] (what fails a run), [`junit`] and
//!   [`html`]; [`select`] (case filters); [`corpus`]; [`run`] (the
//!   orchestration); [`terminal`] (the terminal matrix).
//!
//! This file only declares them and re-exports what outside callers use.
//!
//! Data flow (see `DESIGN.md`):
//! copy of image --[`Adapter::observe`]--> [`Observation`];
//! (`Expected`, `Observation`) --[`judge::judge`]--> [`judge::Outcome`].

pub mod adapter;
pub mod adapters;
pub mod capped;
pub mod case_env;
pub mod cause;
pub mod checks;
pub mod containment;
pub mod corpus;
pub mod diff;
pub mod expect;
pub mod gate;
pub mod html;
pub mod image_layers;
pub mod image_state;
pub mod input;
pub mod judge;
pub mod junit;
pub mod observation;
pub mod outcome;
pub mod output;
pub mod process;
pub mod provenance;
pub mod ranges;
pub mod references;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod sanitise;
pub mod select;
pub mod signals;
pub mod temp_dirs;
pub mod terminal;
pub mod text;
pub mod writes;

pub use adapter::{Adapter, Capabilities};
pub use adapters::adapter_from_spec;
pub use judge::{judge, judge_with_model, Outcome, OutcomeKind};
pub use observation::{IntegrityCheck, Observation, ObservedBitmap, ObservedFlags};
pub use process::Limits;
pub use report::{CaseResult, CaseRun};
pub use run::{run_case, run_corpus, run_selected, with_work_var, RunOptions};
