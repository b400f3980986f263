//! Writes seed corpora for the fuzz targets (called by `fuzz_targets/seeds.sh`).
//!
//! `cargo run --release -p fuzz_targets --example seeds -- OUT [MAX_BYTES]`
//! fills `OUT/<target>/` for every target:
//! - `check_bytes`, `dump_json`: small generated images (512 B to 4 KiB
//!   clusters, at most 1 MiB virtual) — valid ones and one-rule mutants of
//!   them — each at most `MAX_BYTES` (default 65536) long;
//! - `roundtrip`, `mutant_verdict`: deterministic random byte strings (both
//!   targets read their input through `arbitrary::Unstructured`).
//!
//! Every file is named by its content's hash, as libFuzzer names its own
//! corpus entries, so reruns do not duplicate seeds.

use generator::cases::{case_seed, entropy, spec_from_seed};
use generator::{build, Config};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

const SEED: u64 = 0x5eed;

/// Bounds that keep whole images within a few dozen KiB.
fn seed_config() -> Config {
    Config {
        min_cluster_bits: 9,
        max_cluster_bits: 12,
        max_size: 1 << 20,
        max_bitmaps: 3,
        max_writes: 2,
        max_write_len: 4 << 10,
        max_snapshots: 1,
        max_name_len: 16,
        ..Config::default()
    }
}

fn write(dir: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    let path = dir.join(format!("{:016x}", h.finish()));
    if path.exists() {
        return Ok(false);
    }
    std::fs::write(path, bytes)?;
    Ok(true)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: seeds OUT [MAX_BYTES]");
    let max: usize = args.next().map_or(65536, |v| v.parse().expect("MAX_BYTES"));
    let out = Path::new(&out);
    let dirs = ["check_bytes", "dump_json", "roundtrip", "mutant_verdict"];
    for d in dirs {
        std::fs::create_dir_all(out.join(d))?;
    }

    // Images: valid ones, then one mutant per (light) mutation of the
    // catalogue, all within the size limit.
    let cfg = seed_config();
    let mut images: Vec<Vec<u8>> = Vec::new();
    for i in 0..200 {
        let spec = spec_from_seed(case_seed(SEED, i), &cfg);
        if let Ok(b) = build(&spec) {
            images.push(b.bytes);
        }
    }
    for (i, m) in generator::mutate::catalogue().iter().enumerate() {
        if m.heavy {
            continue;
        }
        for k in 0..2 {
            if let Ok(mt) =
                generator::mutate::make(m, case_seed(SEED + 1, (i * 2 + k) as u64), &cfg)
            {
                images.push(mt.bytes);
            }
        }
    }
    let (mut kept, mut too_big) = (0, 0);
    for img in &images {
        if img.len() > max {
            too_big += 1;
            continue;
        }
        write(&out.join("check_bytes"), img)?;
        write(&out.join("dump_json"), img)?;
        kept += 1;
    }

    // Unstructured inputs: roundtrip reads a whole ImageSpec (hundreds of
    // bytes to a few KiB), mutant_verdict only a catalogue index and a seed.
    for i in 0..300u64 {
        let len = 64 + (i as usize * 37) % 4032;
        write(
            &out.join("roundtrip"),
            &entropy(case_seed(SEED + 2, i), len),
        )?;
        let len = 4 + (i as usize * 7) % 60;
        write(
            &out.join("mutant_verdict"),
            &entropy(case_seed(SEED + 3, i), len),
        )?;
    }
    eprintln!(
        "seeds: {kept} images (<= {max} bytes; {too_big} larger skipped), 300 byte strings each for roundtrip and mutant_verdict, in {}",
        out.display()
    );
    Ok(())
}
