//! The `qcow2-conform` tool's library: command-line definitions, the
//! commands, and (as the runner grows) adapters for real implementations.

pub mod campaign;
pub mod cli;
pub mod commands;
pub mod matrix;
pub mod runner;
