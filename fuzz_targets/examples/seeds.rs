//! Writes seed corpora for the fuzz targets (called by `fuzz_targets/seeds.sh`).
//!
//! `cargo run --release -p fuzz_targets --example seeds -- OUT [MAX_BYTES [CORPUS]]`
//! fills `OUT/<target>/` for every target, each input at most `MAX_BYTES`
//! (default 65536) long:
//! - `check_bytes`, `dump_json`: small generated images (512 B to 4 KiB
//!   clusters, at most 1 MiB virtual) — valid ones and one-rule mutants of
//!   them (seeds.sh adds the images of the shared corpus);
//! - `read_guest`: the same images behind a read plan
//!   (`fuzz_targets::read_plan_for`: reads aimed at the written clusters),
//!   the valid ones also with clusters re-encoded as compressed (deflate or
//!   zstd), zero and partly allocated clusters (`fuzz_targets::guest::recode`),
//!   and the images of the shared corpus `CORPUS/images` behind a random plan;
//! - `draft_dump`: images laid out per each draft revision
//!   (`generator::cases::revision`), some also cut short inside their
//!   header, behind the byte that selects the revision, and the shared
//!   corpus's draft cases (`revision/<name>/...`
//!   in `CORPUS/manifest.json`) likewise;
//! - `roundtrip`, `mutant_verdict`, `guest_roundtrip`: deterministic random
//!   byte strings (these targets read their input through
//!   `arbitrary::Unstructured`).
//!
//! Every file is named by its content's hash, as libFuzzer names its own
//! corpus entries, so reruns do not duplicate seeds.

use arbitrary::Unstructured;
use generator::cases::{case_seed, entropy, spec_from_seed};
use generator::{build, Config};
use spec_model::Revision;
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

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn write(dir: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let path = dir.join(format!("{:016x}", hash(bytes)));
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
    let corpus = args.next();
    let out = Path::new(&out);
    let dirs = [
        "check_bytes",
        "dump_json",
        "roundtrip",
        "mutant_verdict",
        "draft_dump",
        "read_guest",
        "guest_roundtrip",
    ];
    for d in dirs {
        std::fs::create_dir_all(out.join(d))?;
    }

    // Images: valid ones, then one mutant per (light) mutation of the
    // catalogue, all within the size limit.
    let cfg = seed_config();
    let mut images: Vec<Vec<u8>> = Vec::new();
    let mut planned: Vec<Vec<u8>> = Vec::new();
    let with_plan = |plan: [u8; fuzz_targets::READ_PLAN_LEN], image: &[u8]| {
        let mut v = plan.to_vec();
        v.extend_from_slice(image);
        v
    };
    for i in 0..200 {
        let spec = spec_from_seed(case_seed(SEED, i), &cfg);
        if let Ok(b) = build(&spec) {
            planned.push(with_plan(
                fuzz_targets::read_plan_for(&b.layout, i),
                &b.bytes,
            ));
            // The same image with clusters re-encoded (compressed, zero,
            // partly allocated), for the reader's other paths.
            let mut recoded = b.bytes.clone();
            let choices = entropy(case_seed(SEED + 4, i), 256);
            let mut u = Unstructured::new(&choices);
            if fuzz_targets::guest::recode(&mut recoded, &spec, &b.layout, &mut u).is_ok() {
                planned.push(with_plan(
                    fuzz_targets::read_plan_for(&b.layout, !i),
                    &recoded,
                ));
            }
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
                let empty = generator::build::Layout::default();
                planned.push(with_plan(
                    fuzz_targets::read_plan_for(&empty, i as u64),
                    &mt.bytes,
                ));
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
    let mut guest = 0;
    for p in planned.iter().filter(|p| p.len() <= max) {
        guest += usize::from(write(&out.join("read_guest"), p)?);
    }

    // Draft layouts: the selector byte, then the image.
    let mut drafts = 0;
    for (k, &revision) in Revision::DRAFTS.iter().enumerate() {
        let selector = k as u8;
        assert_eq!(fuzz_targets::draft_revision(selector), revision);
        for i in 0..40 {
            let Ok(case) = generator::cases::revision(revision, SEED + 5, i, &cfg) else {
                continue;
            };
            let mut input = vec![selector];
            input.extend_from_slice(&case.bytes);
            if input.len() <= max {
                drafts += usize::from(write(&out.join("draft_dump"), &input)?);
            }
            // Files that end inside a header: libFuzzer rarely shrinks a
            // large input that far.
            if i < 2 {
                for cut in [3, 20, 27, 60, 100, 110, 115] {
                    let end = (1 + cut).min(input.len());
                    drafts += usize::from(write(&out.join("draft_dump"), &input[..end])?);
                }
            }
        }
    }

    // The shared corpus: every image behind a read plan, and the draft
    // cases (which the manifest names `revision/<revision>/NN`) behind
    // their revision's selector.
    let (mut shared_guest, mut shared_drafts) = (0, 0);
    if let Some(corpus) = corpus.map(std::path::PathBuf::from) {
        let text = std::fs::read_to_string(corpus.join("manifest.json"))?;
        let manifest: serde_json::Value =
            serde_json::from_str(&text).expect("manifest.json parses");
        let empty = generator::build::Layout::default();
        for case in manifest["cases"].as_array().into_iter().flatten() {
            let (Some(id), Some(file)) = (case["id"].as_str(), case["file"].as_str()) else {
                continue;
            };
            let bytes = std::fs::read(corpus.join(file))?;
            let p = with_plan(fuzz_targets::read_plan_for(&empty, hash(&bytes)), &bytes);
            if p.len() <= max {
                shared_guest += usize::from(write(&out.join("read_guest"), &p)?);
            }
            let revision = id
                .strip_prefix("revision/")
                .and_then(|r| r.split('/').next())
                .and_then(|r| r.parse::<Revision>().ok());
            let Some(k) = revision.and_then(|r| Revision::DRAFTS.iter().position(|&d| d == r))
            else {
                continue;
            };
            let mut input = vec![k as u8];
            input.extend_from_slice(&bytes);
            if input.len() <= max {
                shared_drafts += usize::from(write(&out.join("draft_dump"), &input)?);
            }
        }
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
        let len = 64 + (i as usize * 13) % 1984;
        write(
            &out.join("guest_roundtrip"),
            &entropy(case_seed(SEED + 6, i), len),
        )?;
    }
    eprintln!(
        "seeds: {kept} images (<= {max} bytes; {too_big} larger skipped); read_guest: {guest} planned reads of them, {shared_guest} of the shared corpus; draft_dump: {drafts} draft images, {shared_drafts} of the shared corpus; 300 byte strings each for roundtrip, mutant_verdict and guest_roundtrip, in {}",
        out.display()
    );
    Ok(())
}
