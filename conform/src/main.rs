//! `qcow2-conform`: the command-line front end of the suite.

use clap::Parser;
use conform::{cli, commands};

fn main() {
    quiet_on_closed_stdout();
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
                conform::runner::report::sanitise::one_line(&line)
            );
            std::process::exit(1);
        }
    }
}

/// The exit status of a command whose reader closed standard output
/// early (`qcow2-conform rules | head`): the shell's status for a process
/// ended by SIGPIPE, without the signal itself.
const CLOSED_PIPE_STATUS: i32 = 141;

/// Makes a closed standard output end the command quietly. `println!`
/// panics when its reader has gone (Rust ignores SIGPIPE, so the write
/// fails with EPIPE instead of killing the process); that one panic
/// becomes a silent exit with [`CLOSED_PIPE_STATUS`]. SIGPIPE stays
/// ignored on purpose: the runner writes to programs under test, and one
/// that closes its input must not be able to kill it.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.starts_with("failed printing to stdout") && payload.contains("Broken pipe") {
            std::process::exit(CLOSED_PIPE_STATUS);
        }
        default(info);
    }));
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
