//! Deterministic cases: seed and index in, image bytes and expected verdict
//! out. The same (seed, index, config) always gives the same bytes.

use crate::expected::{self, Expected};
use crate::spec::{Config, ImageSpec};
use arbitrary::Unstructured;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A generated image with its manifest data.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    /// File name (no directory).
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub expected: Expected,
    pub description: String,
}

/// Mixes a run's seed and a case index into the case's own seed.
pub fn case_seed(seed: u64, index: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng.next_u64()
}

/// `n` bytes of deterministic entropy for `Unstructured`.
pub fn entropy(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; n];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// A random valid spec from `seed` within `cfg`.
pub fn spec_from_seed(seed: u64, cfg: &Config) -> ImageSpec {
    let bytes = entropy(seed, 16 << 10);
    let mut u = Unstructured::new(&bytes);
    ImageSpec::arbitrary_with(&mut u, cfg).unwrap_or_else(|_| ImageSpec::empty(1 << 20))
}

/// One-line summary of a spec, for case descriptions.
pub fn describe(spec: &ImageSpec) -> String {
    let mut parts = vec![
        format!("v{}", spec.version),
        format!("{}-byte clusters", 1u64 << spec.cluster_bits),
        format!("{} bytes virtual", spec.size),
        format!("refcount_order {}", spec.refcount_order),
    ];
    if spec.extended_l2 {
        parts.push("extended L2".into());
    }
    if !spec.writes.is_empty() {
        parts.push(format!("{} guest writes", spec.writes.len()));
    }
    if !spec.snapshots.is_empty() {
        parts.push(format!("{} snapshots", spec.snapshots.len()));
    }
    let bitmaps: Vec<String> = spec
        .bitmaps
        .iter()
        .map(|b| {
            let mut flags = Vec::new();
            if b.auto {
                flags.push("auto");
            }
            if b.in_use {
                flags.push("in_use");
            }
            if !b.extra_data.is_empty() {
                flags.push(if b.extra_data_compatible {
                    "compatible extra data"
                } else {
                    "extra data"
                });
            }
            format!(
                "granularity 2^{} [{}]",
                b.granularity_bits,
                flags.join(", ")
            )
        })
        .collect();
    if bitmaps.is_empty() {
        parts.push("no bitmaps".into());
    } else {
        parts.push(format!("bitmaps: {}", bitmaps.join("; ")));
    }
    parts.join(", ")
}

/// Valid case number `index` of a run with `seed`.
pub fn valid(seed: u64, index: u64, cfg: &Config) -> Result<Case, crate::BuildError> {
    let spec = spec_from_seed(case_seed(seed, index), cfg);
    let built = crate::build(&spec)?;
    Ok(Case {
        id: format!("valid/{:04}", index + 1),
        file_name: format!("valid-{:04}.qcow2", index + 1),
        bytes: built.bytes,
        expected: expected::for_spec(&spec),
        description: format!("valid image: {}", describe(&spec)),
    })
}
