//! What a target's binary does when it is built without libFuzzer (plain
//! `cargo build`/`cargo run`, no `--cfg fuzzing`): run the target's logic
//! over the files named on the command line, the way a libFuzzer binary
//! replays reproducers, and report the mean time per input (for profiling:
//! `perf record` / `valgrind --tool=callgrind` on it).
//!
//! ```text
//! cargo run --release -p fuzz_targets --bin TARGET -- [-runs=N] PATH...
//! ```
//!
//! A directory stands for every file directly inside it (a corpus);
//! `-runs=N` runs every input N times (default 1). A panic of the target is
//! a failure, as under libFuzzer: the process aborts with the backtrace.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

fn usage(target: &str) -> ExitCode {
    eprintln!("usage: {target} [-runs=N] FILE_OR_DIR...");
    eprintln!("(built without libFuzzer: fuzz with `cargo +nightly fuzz run {target} --fuzz-dir fuzz_targets`)");
    ExitCode::from(2)
}

fn collect(path: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            out.push((f.display().to_string(), std::fs::read(f)?));
        }
    } else {
        out.push((path.display().to_string(), std::fs::read(path)?));
    }
    Ok(())
}

/// Replays the inputs named by the process arguments through `f`.
pub fn main(target: &str, f: fn(&[u8])) -> ExitCode {
    let mut runs = 1usize;
    let mut inputs = Vec::new();
    for arg in std::env::args().skip(1) {
        if let Some(n) = arg.strip_prefix("-runs=") {
            match n.parse() {
                Ok(n) => runs = n,
                Err(_) => return usage(target),
            }
        } else if arg.starts_with('-') {
            return usage(target);
        } else if let Err(e) = collect(Path::new(&arg), &mut inputs) {
            eprintln!("{target}: {arg}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if inputs.is_empty() {
        return usage(target);
    }
    let bytes: usize = inputs.iter().map(|(_, b)| b.len()).sum();
    let start = Instant::now();
    for _ in 0..runs {
        for (name, data) in &inputs {
            if inputs.len() == 1 && runs == 1 {
                eprintln!("{target}: running {name}");
            }
            f(data);
        }
    }
    let n = inputs.len() * runs;
    let t = start.elapsed();
    eprintln!(
        "{target}: {n} runs over {} inputs ({} bytes mean) in {:.2?}: {:.1} us/run, {:.0} runs/s",
        inputs.len(),
        bytes / inputs.len(),
        t,
        t.as_secs_f64() * 1e6 / n as f64,
        n as f64 / t.as_secs_f64()
    );
    ExitCode::SUCCESS
}
