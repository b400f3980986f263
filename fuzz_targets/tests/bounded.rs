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

/// Up to five random byte edits in the first 64 KiB of `bytes`.
fn edit(bytes: &mut [u8], rng: &mut ChaCha8Rng) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..rng.gen_range(0..6) {
        let span = bytes.len().min(1 << 16);
        let at = rng.gen_range(0..span);
        bytes[at] ^= rng.gen::<u8>() | 1;
    }
}

/// A generated image with a few random byte edits.
fn edited_image(i: u64) -> Vec<u8> {
    let spec = spec_from_seed(case_seed(99, i), &Config::small());
    let mut bytes = build(&spec).expect("build").bytes;
    edit(&mut bytes, &mut ChaCha8Rng::seed_from_u64(i));
    bytes
}

/// `target` on `iterations()` inputs of `len` pseudo-random bytes from
/// stream `stream`, for the targets that read their input as choices.
fn on_entropy(stream: u64, len: usize, target: fn(&[u8])) {
    for i in 0..iterations() {
        target(&entropy(case_seed(stream, i), len));
    }
}

/// `target` on `count` pairs of inputs: `raw_len(i)` pseudo-random bytes,
/// and a generated image with a few byte edits.
fn on_raw_and_edited(count: u64, raw_len: fn(u64) -> usize, target: fn(&[u8])) {
    for i in 0..count {
        target(&entropy(i, raw_len(i)));
        target(&edited_image(i));
    }
}

/// Small images (512 B to 4 KiB clusters, at most 1 MiB virtual) with
/// guest data, as the read_guest seeds are.
fn small_config() -> Config {
    Config {
        min_cluster_bits: 9,
        max_cluster_bits: 12,
        max_size: 1 << 20,
        max_bitmaps: 2,
        max_writes: 3,
        max_write_len: 8 << 10,
        ..Config::tiny()
    }
}

#[test]
fn check_bytes_on_raw_and_edited_inputs() {
    on_raw_and_edited(
        iterations(),
        |i| (i % 4096) as usize,
        fuzz_targets::check_bytes,
    );
}

#[test]
fn roundtrip_on_arbitrary_specs() {
    on_entropy(5, 4096, fuzz_targets::roundtrip);
}

#[test]
fn dump_json_on_raw_and_edited_inputs() {
    on_raw_and_edited(iterations() / 2, |_| 512, fuzz_targets::dump_json);
}

#[test]
fn mutant_verdict_on_arbitrary_choices() {
    on_entropy(8, 64, fuzz_targets::mutant_verdict);
}

#[test]
fn draft_dump_on_raw_and_edited_draft_images() {
    use spec_model::Revision;
    for i in 0..iterations() / 2 {
        fuzz_targets::draft_dump(&entropy(case_seed(11, i), 1 + (i % 2048) as usize));
        let selector = (i % Revision::DRAFTS.len() as u64) as u8;
        let revision = fuzz_targets::draft_revision(selector);
        let Ok(case) = generator::cases::revision(revision, 12, i, &small_config()) else {
            continue;
        };
        let mut input = vec![selector];
        input.extend_from_slice(&case.bytes);
        fuzz_targets::draft_dump(&input);
        let mut rng = ChaCha8Rng::seed_from_u64(i);
        edit(&mut input[1..], &mut rng);
        fuzz_targets::draft_dump(&input);
    }
}

#[test]
fn read_guest_on_raw_and_edited_inputs() {
    for i in 0..iterations() / 2 {
        fuzz_targets::read_guest(&entropy(case_seed(13, i), 16 + (i % 4096) as usize));
        let spec = spec_from_seed(case_seed(14, i), &small_config());
        let built = build(&spec).expect("build");
        let mut rng = ChaCha8Rng::seed_from_u64(i);
        // Plans aimed at the written clusters, as seeds.rs writes them.
        let mut input = fuzz_targets::read_plan_for(&built.layout, rng.gen()).to_vec();
        input.extend_from_slice(&built.bytes);
        fuzz_targets::read_guest(&input);
        edit(&mut input[fuzz_targets::READ_PLAN_LEN..], &mut rng);
        fuzz_targets::read_guest(&input);
    }
}

#[test]
fn guest_roundtrip_on_arbitrary_specs() {
    on_entropy(15, 1024, fuzz_targets::guest_roundtrip);
}
