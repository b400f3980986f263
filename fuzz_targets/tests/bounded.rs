//! Every fuzz target's logic for a bounded number of iterations on stable,
//! fed with deterministic pseudo-random inputs: raw bytes, and generated
//! valid images with random byte edits (closer to what libFuzzer reaches
//! from the seed corpus).

use generator::cases::{case_seed, entropy, spec_from_seed};
use generator::{build, Config};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn iterations() -> u64 {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// A generated image with a few random byte edits.
fn edited_image(i: u64) -> Vec<u8> {
    let spec = spec_from_seed(case_seed(99, i), &Config::small());
    let mut bytes = build(&spec).expect("build").bytes;
    let mut rng = ChaCha8Rng::seed_from_u64(i);
    for _ in 0..rng.gen_range(0..6) {
        let span = bytes.len().min(1 << 16);
        let at = rng.gen_range(0..span);
        bytes[at] ^= rng.gen::<u8>() | 1;
    }
    bytes
}

#[test]
fn check_bytes_on_raw_and_edited_inputs() {
    for i in 0..iterations() {
        fuzz_targets::check_bytes(&entropy(i, (i % 4096) as usize));
        fuzz_targets::check_bytes(&edited_image(i));
    }
}

#[test]
fn roundtrip_on_arbitrary_specs() {
    for i in 0..iterations() {
        fuzz_targets::roundtrip(&entropy(case_seed(5, i), 4096));
    }
}

#[test]
fn dump_json_on_raw_and_edited_inputs() {
    for i in 0..iterations() / 2 {
        fuzz_targets::dump_json(&entropy(i, 512));
        fuzz_targets::dump_json(&edited_image(i));
    }
}

#[test]
fn mutant_verdict_on_arbitrary_choices() {
    for i in 0..iterations() {
        fuzz_targets::mutant_verdict(&entropy(case_seed(8, i), 64));
    }
}
