//! `qcow2-conform`: the command-line front end of the suite.

use clap::Parser;
use conform::{cli, commands};

fn main() {
    // Exit status 2 means "invalid image", so argument errors must not use
    // clap's default of 2: they exit 1, like every failure to run.
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    match commands::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Paths, case IDs and programs' words from a corpus: sanitised.
            let line = one_line(&e);
            eprintln!(
                "qcow2-conform: error: {}",
                conform::runner::sanitise::one_line(&line)
            );
            std::process::exit(1);
        }
    }
}

/// The error and its causes on one line, each cause once: a cause whose
/// text the message already ends with (an error that prints its source
/// itself) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
