//! `qcow2-conform`: the command-line front end of the suite.

mod cli;
mod commands;

use clap::Parser;

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
