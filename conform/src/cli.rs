//! Command-line arguments.

use clap::{Parser, Subcommand};
use spec_model::Revision;
use std::path::PathBuf;

/// Conformance checking and testing for the qcow2 persistent-bitmaps extension.
#[derive(Debug, Parser)]
#[command(name = "qcow2-conform", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an image against the spec. Exit status: 0 valid, 2 invalid,
    /// 3 unspecified, 1 the check could not run.
    Check {
        /// The image file.
        image: PathBuf,
        /// Print the JSON verdict instead of the human report.
        #[arg(long)]
        json: bool,
    },
    /// Print every structure of an image field by field.
    Dump {
        /// The image file.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The format revision to read the image under.
        #[arg(long, default_value = "final")]
        revision: Revision,
    },
    /// List the rule catalogue.
    Rules {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}
