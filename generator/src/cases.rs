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

/// Case number `index` of a run with `seed`, laid out as the draft
/// `revision` describes. The expected verdict is what a final-spec reader
/// must say of it (docs/revisions.md), derived from the draft's layout.
pub fn revision(
    revision: spec_model::Revision,
    seed: u64,
    index: u64,
    cfg: &Config,
) -> Result<Case, crate::BuildError> {
    use spec_model::Revision as R;
    let mut cfg = cfg.clone();
    // Every draft can express these specs: v3, granularity within 9-31,
    // names QEMU accepts, no flags the drafts lack.
    cfg.versions = vec![3];
    cfg.min_granularity_bits = cfg.min_granularity_bits.max(9);
    cfg.max_granularity_bits = cfg.max_granularity_bits.min(31);
    cfg.max_name_len = cfg.max_name_len.min(1023);
    cfg.allow_compatible_flag = false;
    let spec = spec_from_seed(case_seed(seed, index), &cfg);
    let bytes = crate::revisions::render(revision, &spec)?;
    let ext = if revision == R::Qdb2014 {
        "qdb"
    } else {
        "qcow2"
    };
    let has_bitmaps = !spec.bitmaps.is_empty();
    let is_empty = |b: &&crate::BitmapSpec| {
        let geo = spec.geometry(b);
        b.contents.ranges(geo.nbits()).is_empty()
    };
    let empty_bitmap = spec.bitmaps.iter().any(|b| is_empty(&b));
    // Table size 0 is also too small for the disk, unless in_use excuses it.
    let empty_not_in_use = spec.bitmaps.iter().filter(is_empty).any(|b| !b.in_use);
    use spec_model::{ExtensionState as X, Verdict as V};
    // What a final-spec reader must say of a draft's layout.
    let judged = |verdict: V, rules: Vec<&str>, extension: X| {
        (
            Expected {
                verdict,
                rules: rules.into_iter().map(str::to_string).collect(),
                bitmaps_extension: extension,
                bitmaps: (verdict != V::Invalid).then(Vec::new),
            },
            format!("{revision} layout (docs/revisions.md)"),
        )
    };
    let (expected, layout) = match revision {
        R::Final => (expected::for_spec(&spec), "final layout".to_owned()),
        R::Qdb2014 => judged(V::Invalid, vec!["header.magic"], X::Absent),
        R::HeaderFields2014 if has_bitmaps => judged(V::Invalid, vec!["header.padding"], X::Absent),
        R::HeaderFields2014 => judged(V::Valid, vec![], X::Absent),
        R::RfcV5_2015 if has_bitmaps => {
            judged(V::Invalid, vec!["bitmaps.ext.length"], X::Consistent)
        }
        R::RfcV5_2015 => judged(V::Valid, vec![], X::Absent),
        R::EmptyTable2016 if spec.size > 0 && empty_bitmap => {
            let mut rules = vec!["bitmaps.dir.table-offset-zero"];
            if empty_not_in_use {
                rules.push("bitmaps.dir.table-size");
            }
            judged(V::Invalid, rules, X::Consistent)
        }
        R::EmptyTable2016 => (
            expected::for_spec(&spec),
            "empty-table-2016 layout, no empty bitmap (same as final)".to_owned(),
        ),
    };
    Ok(Case {
        id: format!("{revision}/{:04}", index + 1),
        file_name: format!("{revision}-{:04}.{ext}", index + 1),
        bytes,
        expected,
        description: format!("{layout}: {}", describe(&spec)),
    })
}

/// Mutant case number `index` of a run with `seed`: mutation `m` applied to
/// a base spec derived from the case seed. The ID is `RULE/NNNN`.
pub fn mutant(
    m: &crate::mutate::Mutation,
    seed: u64,
    index: u64,
    cfg: &Config,
) -> Result<Case, crate::mutate::MutateError> {
    let mt = crate::mutate::make(m, case_seed(seed, index), cfg)?;
    let rule = m.rule.id();
    Ok(Case {
        id: format!("{rule}/{:04}", index + 1),
        file_name: format!("{rule}-{:04}.qcow2", index + 1),
        bytes: mt.bytes,
        expected: mt.expected,
        description: format!(
            "mutation {}: {} (base: {})",
            m.id,
            mt.description,
            describe(&mt.spec)
        ),
    })
}
