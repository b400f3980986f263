//! The `qcow2-conform` tool's library: command-line definitions, the
//! commands, the runner with its adapters for real implementations, the
//! campaign, and the pinned matrix behind `docs/findings.md`'s tables.

pub mod campaign;
pub mod cli;
pub mod commands;
pub mod matrix;
pub mod obligations_table;
pub mod runner;
