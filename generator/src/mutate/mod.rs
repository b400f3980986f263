//! The mutation catalogue: for every rule of [`Rule::ALL`], one or more
//! edits that break that rule, and only that rule, in an otherwise valid
//! image.
//!
//! A [`Mutation`] first adapts a random [`ImageSpec`] so that it applies
//! (`prepare`: a v3 image, a bitmap with stored data clusters, a guest
//! write, a snapshot, ...), then changes the fewest bytes of the built
//! image that break the rule (`apply`). Rules whose severity is `limit`,
//! `note` or `unspecified` may need no byte change at all: the prepared
//! spec is the case. The expected verdict comes from the rule's severity
//! (and the notes and limits the prepared spec implies), never from
//! running the model.
//!
//! Clusters that a mutation leaves unreferenced show as `refcount.leak`
//! (severity `leak`): "exactly the targeted rule" is about `error` findings.
//!
//! [`make`] draws its own random base spec; [`apply_stack`] applies one or
//! several mutations to a base spec it is given (the campaign's stacked
//! cases, and its minimiser, which re-applies mutations to shrunk specs).
//!
//! Where things live: this module holds the types, the lookups and
//! [`make`]; `stack` the stacked application and [`prepare`]; `expect` the
//! expected verdict; `target` the image being edited ([`Target`]) and the
//! lookups into its layout; `edit` the byte edits that `apply` steps are
//! made of; `prep` the spec preparation steps that `prepare` steps are
//! made of. The catalogue itself is split by spec section, in the order
//! [`catalogue`] returns it: `header`, `extensions`, `bitmaps::{ext, dir,
//! table}`, `mapping`, `refcount`, `snapshots`.

mod bitmaps;
mod edit;
mod expect;
mod extensions;
mod header;
mod mapping;
mod prep;
mod refcount;
mod snapshots;
mod stack;
mod target;

pub use stack::{apply_stack, apply_stack_by_id, prepare, Stacked};
pub use target::Target;

use crate::build::{build, BuildError};
use crate::expected::Expected;
use crate::spec::{Config, ImageSpec};
use arbitrary::Unstructured;
use expect::expect;
use prep::{fit_header, PResult};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spec_model::{Rule, Severity};
use std::sync::LazyLock;

/// What the `bitmaps_extension` field of the verdict must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtState {
    /// `consistent` when the (mutated) spec has bitmaps, else `absent`.
    FromSpec,
    /// The header cannot be read, so no extension is found.
    Absent,
    /// The extension is present but must be ignored.
    Inconsistent,
}

/// Why `apply` could not use the image it was given ([`make`] then tries a
/// fresh base spec; [`apply_stack`] skips the mutation).
pub type Skip = &'static str;

/// One entry of the catalogue.
#[derive(Clone)]
pub struct Mutation {
    /// `<rule id>/<variant>`, e.g. `bitmaps.dir.name-unique/equal-names`.
    pub id: &'static str,
    /// The rule the mutation breaks.
    pub rule: Rule,
    /// The severity it breaks it with.
    pub severity: Severity,
    /// Further error rules that the one change necessarily breaks (the
    /// description says why).
    pub also: &'static [Rule],
    pub extension: ExtState,
    pub description: &'static str,
    /// Builds large images (tests use few seeds).
    pub heavy: bool,
    prepare: fn(&mut ImageSpec, &mut Unstructured) -> arbitrary::Result<()>,
    apply: fn(&mut Target) -> Result<(), Skip>,
}

impl Mutation {
    /// The rule the mutation breaks, then the further rules it necessarily
    /// breaks with it (`also`).
    pub fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        std::iter::once(self.rule).chain(self.also.iter().copied())
    }
}

impl std::fmt::Debug for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutation")
            .field("id", &self.id)
            .field("rule", &self.rule)
            .field("severity", &self.severity)
            .field("also", &self.also)
            .finish_non_exhaustive()
    }
}

/// A mutated image and what a conforming checker must say about it.
#[derive(Debug, Clone)]
pub struct Mutant {
    pub id: &'static str,
    pub bytes: Vec<u8>,
    /// The prepared spec the image was built from before the mutation.
    pub spec: ImageSpec,
    pub expected: Expected,
    pub description: &'static str,
}

/// Why a mutant could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    #[error("random spec: {0}")]
    Arbitrary(#[from] arbitrary::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{id}: not applicable after {attempts} base specs: {reason}")]
    NotApplicable {
        id: &'static str,
        attempts: u64,
        reason: Skip,
    },
    #[error("no mutation {0}")]
    Unknown(String),
    #[error("no mutation of the stack applies: {0}")]
    NoneApplied(String),
}

/// Base specs tried per (mutation, seed) before giving up.
const ATTEMPTS: u64 = 16;

/// Bytes of randomness behind one base spec and its preparation.
const SPEC_BYTES: usize = 4096;

/// The whole catalogue, section by section in the order of the spec.
pub fn catalogue() -> &'static [Mutation] {
    &CATALOGUE
}

/// The mutations that target rule `id`.
pub fn by_rule(id: &str) -> Vec<&'static Mutation> {
    CATALOGUE.iter().filter(|m| m.rule.id() == id).collect()
}

/// The mutation with this id.
pub fn by_id(id: &str) -> Option<&'static Mutation> {
    CATALOGUE.iter().find(|m| m.id == id)
}

/// [`make`] for the mutation with this id.
pub fn make_by_id(id: &str, seed: u64, cfg: &Config) -> Result<Mutant, MutateError> {
    let m = by_id(id).ok_or_else(|| MutateError::Unknown(id.to_string()))?;
    make(m, seed, cfg)
}

/// Makes the mutant of `m` for `seed`: a random base spec within `cfg`
/// (the same for every mutation with this seed), prepared, built and
/// mutated. Deterministic in `(m, seed, cfg)`.
pub fn make(m: &Mutation, seed: u64, cfg: &Config) -> Result<Mutant, MutateError> {
    let mut reason = "";
    for attempt in 0..ATTEMPTS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(attempt);
        let mut raw = vec![0u8; SPEC_BYTES];
        rng.fill_bytes(&mut raw);
        let mut u = Unstructured::new(&raw);
        let mut spec = ImageSpec::arbitrary_with(&mut u, cfg)?;
        (m.prepare)(&mut spec, &mut u)?;
        let mut apply_rng = ChaCha8Rng::seed_from_u64(seed);
        apply_rng.set_stream(1 << 32 | attempt);
        let mut t = target(&mut spec, apply_rng)?;
        match (m.apply)(&mut t) {
            Ok(()) => {
                return Ok(Mutant {
                    id: m.id,
                    expected: expect(m, &t.spec),
                    bytes: t.bytes,
                    spec,
                    description: m.description,
                })
            }
            Err(r) => reason = r,
        }
    }
    Err(MutateError::NotApplicable {
        id: m.id,
        attempts: ATTEMPTS,
        reason,
    })
}

/// Fits the header area of the prepared `spec` into its first cluster
/// and builds it: the image the mutations' `apply` steps then edit.
fn target(spec: &mut ImageSpec, rng: ChaCha8Rng) -> Result<Target, BuildError> {
    fit_header(spec);
    let built = build(spec)?;
    Ok(Target {
        bytes: built.bytes,
        layout: built.layout,
        spec: spec.clone(),
        rng,
    })
}

// ---------------------------------------------------------------------
// The catalogue.

/// The catalogue's sections, in order: the order is part of the public API
/// (corpus building, campaign seeds and snapshots index by position).
static CATALOGUE: LazyLock<Vec<Mutation>> = LazyLock::new(|| {
    [
        header::MUTATIONS,
        extensions::MUTATIONS,
        bitmaps::ext::MUTATIONS,
        bitmaps::dir::MUTATIONS,
        bitmaps::table::MUTATIONS,
        mapping::MUTATIONS,
        refcount::MUTATIONS,
        snapshots::MUTATIONS,
    ]
    .concat()
});

/// A catalogue entry with no `also` rules, the extension state taken from
/// the spec, and not heavy; the builder methods below change that.
const fn mutation(
    id: &'static str,
    rule: Rule,
    severity: Severity,
    description: &'static str,
    prepare: fn(&mut ImageSpec, &mut Unstructured) -> PResult,
    apply: fn(&mut Target) -> Result<(), Skip>,
) -> Mutation {
    Mutation {
        id,
        rule,
        severity,
        also: &[],
        extension: ExtState::FromSpec,
        description,
        heavy: false,
        prepare,
        apply,
    }
}

impl Mutation {
    const fn also(mut self, also: &'static [Rule]) -> Mutation {
        self.also = also;
        self
    }
    const fn ext(mut self, extension: ExtState) -> Mutation {
        self.extension = extension;
        self
    }
    const fn heavy(mut self) -> Mutation {
        self.heavy = true;
        self
    }
}
