//! Replays a corpus directory through one target's logic without libFuzzer
//! (for profiling: `perf record` / `valgrind --tool=callgrind` on it).
//!
//! `cargo run --release -p fuzz_targets --example replay -- TARGET DIR [ROUNDS]`
//! prints the mean time per input.

use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: replay TARGET DIR [ROUNDS]");
    let dir = args.next().expect("usage: replay TARGET DIR [ROUNDS]");
    let rounds: usize = args.next().map_or(1, |v| v.parse().expect("ROUNDS"));
    let f: fn(&[u8]) = match target.as_str() {
        "check_bytes" => fuzz_targets::check_bytes,
        "dump_json" => fuzz_targets::dump_json,
        "roundtrip" => fuzz_targets::roundtrip,
        "mutant_verdict" => fuzz_targets::mutant_verdict,
        other => panic!("unknown target {other}"),
    };
    let mut inputs = Vec::new();
    for e in std::fs::read_dir(&dir)? {
        inputs.push(std::fs::read(e?.path())?);
    }
    let bytes: usize = inputs.iter().map(Vec::len).sum();
    let start = Instant::now();
    for _ in 0..rounds {
        for i in &inputs {
            f(i);
        }
    }
    let n = inputs.len() * rounds;
    let t = start.elapsed();
    println!(
        "{target}: {n} runs over {} inputs ({} bytes mean) in {:.2?}: {:.1} us/run, {:.0} runs/s",
        inputs.len(),
        bytes / inputs.len().max(1),
        t,
        t.as_secs_f64() * 1e6 / n as f64,
        n as f64 / t.as_secs_f64()
    );
    Ok(())
}
