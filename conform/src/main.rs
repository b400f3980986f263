//! `qcow2-conform`: the command-line front end of the suite.

use clap::Parser;
use conform::{cli, commands};

fn main() {
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("qcow2-conform: error: {e:#}");
            std::process::exit(1);
        }
    }
}
