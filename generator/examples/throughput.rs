//! Generate-and-check throughput on one core: random small specs (64 KiB
//! clusters, up to 64 MiB virtual, up to 4 bitmaps) are built in memory and
//! checked by the model. Prints one JSON line. Used by bench/generate.sh.
//!
//! Usage: throughput [SECONDS] [SEED]

use generator::cases::{case_seed, spec_from_seed};
use generator::{build, Config};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let cfg = Config::small();
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut n, mut bytes, mut bitmaps, mut invalid) = (0u64, 0u64, 0u64, 0u64);
    while start.elapsed() < deadline {
        let spec = spec_from_seed(case_seed(seed, n), &cfg);
        let built = build(&spec).expect("small specs always build");
        let report = spec_model::check_bytes(&built.bytes);
        if report.verdict != spec_model::Verdict::Valid {
            invalid += 1;
        }
        bytes += built.bytes.len() as u64;
        bitmaps += spec.bitmaps.len() as u64;
        n += 1;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{{\"images\": {n}, \"seconds\": {el:.3}, \"images_per_second\": {:.1}, \"mean_image_bytes\": {}, \"bitmaps\": {bitmaps}, \"not_valid\": {invalid}}}",
        n as f64 / el,
        bytes / n.max(1)
    );
    assert_eq!(invalid, 0, "every generated image must be valid");
}
