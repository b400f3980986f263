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

use crate::build::{build, entry_bytes, put_refcount, BitmapLayout, BuildError, Layout};
use crate::contents::Contents;
use crate::expected::{self, verdict_for, Expected};
use crate::spec::{BitmapSpec, Config, GuestWrite, ImageSpec, UnknownExtension};
use arbitrary::Unstructured;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spec_model::bitmaps::content::Geometry;
use spec_model::fields::{
    bitmap_entry as be, bitmap_table_entry as bt, bitmaps_ext as bx, extension as ext,
    header as hf, mapping as mp, snapshot as sf, Field,
};
use spec_model::{Rule, Severity};

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

/// A built image with its layout, being mutated.
pub struct Target {
    pub bytes: Vec<u8>,
    pub layout: Layout,
    /// What the image describes; `apply` updates it where the change is
    /// visible in the expected bitmaps (a renamed bitmap, a new flag).
    pub spec: ImageSpec,
    /// Choices of `apply` (which bit, which value), seeded.
    pub rng: ChaCha8Rng,
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

/// The whole catalogue.
pub fn catalogue() -> &'static [Mutation] {
    CATALOGUE
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

/// One or more mutations applied to one given base spec (see
/// [`apply_stack`]).
#[derive(Debug, Clone)]
pub struct Stacked {
    /// The mutated image.
    pub bytes: Vec<u8>,
    /// The base spec after every mutation's `prepare` (and the header
    /// fit): what the image was built from before the byte changes.
    pub spec: ImageSpec,
    /// The mutations whose byte changes were made, in order.
    pub applied: Vec<&'static str>,
    /// The mutations that did not apply to this image, with the reason.
    pub skipped: Vec<(&'static str, Skip)>,
    /// The expected verdict by construction, when exactly one mutation was
    /// applied (as for [`make`]). Several mutations may mask or undo each
    /// other, so a stack's verdict is the reference model's to give.
    pub expected: Option<Expected>,
}

/// The randomness of mutation `id` within a stack: FNV-1a of the id, so
/// that a mutation makes the same choices whichever other mutations share
/// the stack (dropping one while minimising leaves the others' alone).
fn stack_stream(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs only the preparation of `m` on `spec`, with the randomness
/// [`apply_stack`] gives it for `seed`: what the stack needs of the spec
/// for `m` (a bitmap, a snapshot, a guest write), without its byte change.
/// `apply_stack(&[m], base)` and `apply_stack(&[m], prepared)` start from
/// the same spec when the preparation is idempotent.
pub fn prepare(m: &Mutation, spec: &mut ImageSpec, seed: u64) -> Result<(), MutateError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stack_stream(m.id));
    rng.set_stream(2);
    let mut raw = vec![0u8; SPEC_BYTES];
    rng.fill_bytes(&mut raw);
    (m.prepare)(spec, &mut Unstructured::new(&raw))?;
    Ok(())
}

/// Applies the mutations `ms`, in order, to one image built from `base`.
///
/// Every mutation's `prepare` runs on (a copy of) `base` in turn, each
/// with its own seeded randomness; the header is fitted and the spec built
/// once; then every mutation's `apply` edits that same image in turn.
/// Deterministic in `(ms, base, seed)`, and a mutation's choices depend
/// only on its id, `seed` and what the spec and image look like when its
/// turn comes. Unlike [`make`], no fresh base spec is tried.
///
/// Semantics of conflicts: a later `prepare` may undo what an earlier one
/// arranged, and a later `apply` may overwrite or undo an earlier change
/// (re-encoding the directory, say); nothing checks that every targeted
/// rule ends up broken. A mutation whose `apply` does not fit the image
/// as it then is (no such structure, or the file was truncated by an
/// earlier mutation) is skipped and listed in [`Stacked::skipped`], its
/// partial edits discarded. It is an error only when no mutation applies,
/// or the prepared spec does not build.
pub fn apply_stack(ms: &[&Mutation], base: &ImageSpec, seed: u64) -> Result<Stacked, MutateError> {
    let mut spec = base.clone();
    for m in ms {
        prepare(m, &mut spec, seed)?;
    }
    // The `rng` of the target is replaced per mutation below.
    let mut t = target(&mut spec, ChaCha8Rng::seed_from_u64(seed))?;
    let built_len = t.bytes.len();
    let (mut applied, mut skipped) = (Vec::new(), Vec::new());
    for m in ms {
        if t.bytes.len() < built_len {
            skipped.push((m.id, "an earlier mutation truncated the file"));
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stack_stream(m.id));
        rng.set_stream(3);
        t.rng = rng;
        let (bytes, tspec) = (t.bytes.clone(), t.spec.clone());
        match (m.apply)(&mut t) {
            Ok(()) => applied.push(m.id),
            Err(reason) => {
                t.bytes = bytes;
                t.spec = tspec;
                skipped.push((m.id, reason));
            }
        }
    }
    if applied.is_empty() {
        return Err(MutateError::NoneApplied(
            skipped
                .iter()
                .map(|(id, r)| format!("{id}: {r}"))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    // By construction only for a stack of one: another mutation's
    // `prepare` may have undone what this one's arranged.
    let expected = match ms {
        [m] => Some(expect(m, &t.spec)),
        _ => None,
    };
    Ok(Stacked {
        bytes: t.bytes,
        spec,
        applied,
        skipped,
        expected,
    })
}

/// [`apply_stack`] for mutation ids.
pub fn apply_stack_by_id(
    ids: &[&str],
    base: &ImageSpec,
    seed: u64,
) -> Result<Stacked, MutateError> {
    let ms = ids
        .iter()
        .map(|id| by_id(id).ok_or_else(|| MutateError::Unknown(id.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    apply_stack(&ms, base, seed)
}

/// The expected verdict of `m` applied to an image described by `spec`.
fn expect(m: &Mutation, spec: &ImageSpec) -> Expected {
    use spec_model::ExtensionState;
    let state = match m.extension {
        ExtState::FromSpec if spec.bitmaps.is_empty() => ExtensionState::Absent,
        ExtState::FromSpec => ExtensionState::Consistent,
        ExtState::Absent => ExtensionState::Absent,
        ExtState::Inconsistent => ExtensionState::Inconsistent,
    };
    let mut implied = expected::implied_rules(spec);
    if state != ExtensionState::Consistent {
        // An ignored (or unreadable) extension is not validated.
        implied.retain(|(r, _)| !r.id().starts_with("bitmaps."));
    }
    let error = m.severity == Severity::Error;
    let severities = std::iter::once(m.severity)
        .chain(m.also.iter().map(|_| Severity::Error))
        .chain(implied.iter().map(|(_, s)| *s));
    let mut rules: Vec<String> = m.rules().map(|r| r.id().to_string()).collect();
    if !error {
        // Without an error every structure is read, so the spec's notes
        // and limits are reported too. After an error, parsing may stop
        // before them.
        for (r, _) in &implied {
            if !rules.iter().any(|x| x == r.id()) {
                rules.push(r.id().to_string());
            }
        }
    }
    let bitmaps = (!error).then(|| match state {
        ExtensionState::Consistent => expected::bitmaps(spec),
        ExtensionState::Inconsistent => expected::bitmaps(spec)
            .into_iter()
            .map(|mut b| {
                b.usable = false;
                b.content_sha256 = None;
                b.set_bits = None;
                b
            })
            .collect(),
        _ => Vec::new(),
    });
    Expected {
        verdict: verdict_for(severities),
        rules,
        bitmaps_extension: state,
        bitmaps,
    }
}

// ---------------------------------------------------------------------
// Target accessors.

impl Target {
    pub fn cluster_size(&self) -> u64 {
        self.layout.cluster_size()
    }

    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Reads a field of the structure at `at`.
    pub fn get(&self, at: u64, f: Field) -> u64 {
        f.get(&self.bytes[at as usize..])
    }

    /// Writes a field of the structure at `at`.
    pub fn put(&mut self, at: u64, f: Field, v: u64) {
        f.put(&mut self.bytes[at as usize..], v)
    }

    pub fn get_u64(&self, at: u64) -> u64 {
        self.get(at, U64)
    }

    pub fn put_u64(&mut self, at: u64, v: u64) {
        self.put(at, U64, v)
    }

    /// File offset of the bitmaps extension's data.
    fn ext_data(&self) -> Result<u64, Skip> {
        self.layout.bitmaps_ext_data().ok_or("no bitmaps extension")
    }

    fn bitmap(&self, i: usize) -> Result<&BitmapLayout, Skip> {
        self.layout.bitmaps.get(i).ok_or("no such bitmap")
    }

    /// File offset of entry `j` of bitmap `i`'s table.
    fn table_entry(&self, i: usize, j: u64) -> Result<u64, Skip> {
        Ok(self.bitmap(i)?.table_offset + 8 * j)
    }

    /// A random stored data cluster of bitmap `i`: (table index, offset).
    fn stored_data(&mut self, i: usize) -> Result<(u64, u64), Skip> {
        let data = &self.bitmap(i)?.data;
        if data.is_empty() {
            return Err("bitmap has no stored data cluster");
        }
        let k = self.rng.gen_range(0..data.len());
        Ok(self.layout.bitmaps[i].data[k])
    }

    fn refcount_order(&self) -> u32 {
        if self.spec.version == 2 {
            4
        } else {
            self.spec.refcount_order
        }
    }

    /// Stores `value` as the refcount of the cluster holding `offset`.
    pub fn set_refcount(&mut self, offset: u64, value: u64) {
        let cb = self.layout.cluster_bits;
        let order = self.refcount_order();
        let per_block = (self.cluster_size() * 8) >> order;
        let c = offset >> cb;
        let block = self.layout.refcount_blocks[(c / per_block) as usize] as usize;
        let cs = self.cluster_size() as usize;
        put_refcount(
            &mut self.bytes[block..block + cs],
            c % per_block,
            order,
            value,
        );
    }

    /// File offset of the first unused refcount table entry.
    fn unused_refcount_entry(&self) -> Result<u64, Skip> {
        let used = self.layout.refcount_blocks.len() as u64;
        let entries = u64::from(self.layout.refcount_table_clusters) * self.cluster_size() / 8;
        if used >= entries {
            return Err("refcount table has no unused entry");
        }
        Ok(self.layout.refcount_table_offset + 8 * used)
    }

    /// Bytes per L2 entry.
    fn l2_entry_size(&self) -> u64 {
        if self.spec.extended_l2 && self.spec.version == 3 {
            16
        } else {
            8
        }
    }

    /// File offset of the L2 entry mapping guest cluster `gc`.
    fn l2_entry(&self, gc: u64) -> Result<u64, Skip> {
        let per = self.cluster_size() / self.l2_entry_size();
        let (_, l2) = self
            .layout
            .l2_tables
            .iter()
            .find(|(l1i, _)| *l1i == gc / per)
            .ok_or("guest cluster not mapped")?;
        Ok(l2 + (gc % per) * self.l2_entry_size())
    }

    /// A random mapped guest cluster: (guest cluster, host offset).
    fn data_cluster(&mut self) -> Result<(u64, u64), Skip> {
        let n = self.layout.data_clusters.len();
        if n == 0 {
            return Err("no guest data cluster");
        }
        Ok(self.layout.data_clusters[self.rng.gen_range(0..n)])
    }

    /// File offset of a random used L1 entry.
    fn used_l1_entry(&mut self) -> Result<u64, Skip> {
        let n = self.layout.l2_tables.len();
        if n == 0 {
            return Err("no L2 table");
        }
        let (l1i, _) = self.layout.l2_tables[self.rng.gen_range(0..n)];
        Ok(self.layout.l1_offset + 8 * l1i)
    }

    /// A misalignment that only touches offset bits 9 and up (bits 1-8
    /// of table entries are reserved): a non-zero multiple of 512 below
    /// the cluster size.
    fn misalign_512(&mut self) -> Result<u64, Skip> {
        let sectors = self.cluster_size() / 512;
        if sectors < 2 {
            return Err("512-byte clusters cannot be misaligned by 512");
        }
        Ok(512 * self.rng.gen_range(1..sectors))
    }
}

const U64: Field = Field::new("u64", 0, 8);

// ---------------------------------------------------------------------
// Spec preparation helpers.

type PResult = arbitrary::Result<()>;

/// The cluster size of `s`.
fn cs(s: &ImageSpec) -> u64 {
    1 << s.cluster_bits
}

/// Drops optional extensions until the header area fits the first cluster.
fn fit_header(s: &mut ImageSpec) {
    if s.header_area_len() > cs(s) {
        s.feature_name_table = false;
    }
    if s.header_area_len() > cs(s) {
        s.backing_format = None;
    }
}

fn v3(s: &mut ImageSpec) {
    if s.version != 3 {
        s.version = 3;
        s.refcount_order = 4;
        s.header_length = 104;
    }
}

fn min_cluster_bits(s: &mut ImageSpec, cb: u32) {
    if s.cluster_bits < cb {
        s.cluster_bits = cb;
    }
}

/// A virtual disk of at least `bytes`.
fn min_size(s: &mut ImageSpec, bytes: u64) {
    if s.size < bytes {
        s.size = bytes;
    }
}

/// A guest write that touches at least `clusters` guest clusters.
fn guest_write(s: &mut ImageSpec, u: &mut Unstructured, clusters: u64) -> PResult {
    let touched: std::collections::BTreeSet<u64> = s
        .writes
        .iter()
        .filter(|w| w.len > 0)
        .flat_map(|w| (w.offset >> s.cluster_bits)..=((w.offset + w.len - 1) >> s.cluster_bits))
        .collect();
    if touched.len() as u64 >= clusters {
        return Ok(());
    }
    min_size(s, clusters * cs(s));
    let len = (clusters - 1) * cs(s) + 1;
    let offset = u.int_in_range(0..=s.size - len)?;
    let offset = offset - offset % cs(s);
    s.writes.push(GuestWrite {
        offset,
        len: (clusters * cs(s)).min(s.size - offset),
        pattern: u.int_in_range(1u8..=255)?,
    });
    Ok(())
}

/// A new plain bitmap (no extra data, not in use) for `s`.
fn new_bitmap(s: &ImageSpec, u: &mut Unstructured, index: usize) -> arbitrary::Result<BitmapSpec> {
    let mut g: u8 = u.int_in_range(9..=24)?;
    while geometry(s, g).nbits() > 1 << 22 {
        g += 1;
    }
    let nbits = geometry(s, g).nbits();
    let contents = match u.int_in_range(0u8..=3)? {
        _ if nbits == 0 => Contents::Empty,
        0 => Contents::Empty,
        1 => Contents::Full,
        _ => {
            let a = u.int_in_range(0..=nbits - 1)?;
            let b = u.int_in_range(a + 1..=nbits)?;
            Contents::Ranges(vec![(a, b)])
        }
    };
    Ok(BitmapSpec {
        name: format!("+{index}").into_bytes(),
        granularity_bits: g,
        bitmap_type: 1,
        in_use: false,
        auto: u.arbitrary()?,
        extra_data_compatible: false,
        extra_data: Vec::new(),
        contents,
        zero_entries: u.arbitrary()?,
        ones_entries: u.arbitrary()?,
    })
}

fn geometry(s: &ImageSpec, granularity_bits: u8) -> Geometry {
    Geometry {
        size: s.size,
        granularity_bits: u32::from(granularity_bits),
        cluster_bits: s.cluster_bits,
    }
}

/// A v3 image with at least `n` bitmaps.
fn bitmaps(s: &mut ImageSpec, u: &mut Unstructured, n: usize) -> PResult {
    v3(s);
    min_size(s, 1);
    while s.bitmaps.len() < n {
        let b = new_bitmap(s, u, s.bitmaps.len())?;
        s.bitmaps.push(b);
    }
    Ok(())
}

/// Bitmap 0 exists, is not in use, and stores every data cluster.
fn stored_bitmap(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    bitmaps(s, u, 1)?;
    let b = &mut s.bitmaps[0];
    b.in_use = false;
    b.zero_entries = false;
    b.ones_entries = false;
    Ok(())
}

/// Replaces the name of bitmap `i` by `n` bytes of `~` (generated names
/// never contain `~`, so it stays unique).
fn tilde_name(s: &mut ImageSpec, i: usize, n: usize) {
    s.bitmaps[i].name = vec![b'~'; n];
}

/// Raises bitmap `i`'s granularity until its table has at most `max`
/// entries.
fn coarsen(s: &mut ImageSpec, i: usize, max: u64) {
    while geometry(s, s.bitmaps[i].granularity_bits).clusters_needed() > max
        && s.bitmaps[i].granularity_bits < 63
    {
        s.bitmaps[i].granularity_bits += 1;
    }
}

/// The directory size `s` builds.
fn directory_size(s: &ImageSpec) -> u64 {
    s.bitmaps
        .iter()
        .map(|b| be::entry_length(b.extra_data.len() as u64, b.name.len() as u64))
        .sum()
}

/// An unknown extension, last in the list, with `len` bytes of data.
fn unknown_ext(s: &mut ImageSpec, len: usize) {
    s.feature_name_table = false;
    let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x3c).collect();
    match s.unknown_extensions.last_mut() {
        Some(x) => x.data = data,
        None => s.unknown_extensions.push(UnknownExtension {
            ext_type: 0x7a00_4d55,
            data,
        }),
    }
}

/// Some refcount width that can hold 2.
fn refcounts_up_to_2(s: &mut ImageSpec) {
    if s.version == 3 && s.refcount_order == 0 {
        s.refcount_order = 1;
    }
}

/// Exactly one snapshot (v3).
fn one_snapshot(s: &mut ImageSpec) {
    v3(s);
    refcounts_up_to_2(s);
    s.snapshots = vec!["snap0".into()];
}

fn keep(_: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    Ok(())
}

fn p_v3(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    v3(s);
    Ok(())
}

fn p_v3_long_header(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    v3(s);
    s.header_length = s.header_length.max(112);
    Ok(())
}

fn p_bitmap(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    bitmaps(s, u, 1)
}

fn p_sized(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    min_size(s, 1);
    Ok(())
}

fn p_write(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    guest_write(s, u, 1)
}

fn p_write_1k(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    min_cluster_bits(s, 10);
    guest_write(s, u, 1)
}

fn p_stored(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    stored_bitmap(s, u)
}

fn p_stored_1k(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    min_cluster_bits(s, 10);
    stored_bitmap(s, u)
}

/// A directory that leaves at least 8 bytes of its last cluster free.
fn p_directory_with_room(s: &mut ImageSpec, u: &mut Unstructured) -> PResult {
    bitmaps(s, u, 1)?;
    if directory_size(s).is_multiple_of(cs(s)) {
        let n = s.bitmaps[0].name.len();
        tilde_name(s, 0, if n > 8 { n - 8 } else { n + 8 });
    }
    Ok(())
}

fn p_snapshot(s: &mut ImageSpec, _: &mut Unstructured) -> PResult {
    one_snapshot(s);
    Ok(())
}

// ---------------------------------------------------------------------
// The catalogue.

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

use Severity::{Error, Inconsistent, Leak, Limit, Note, Unspecified};

static CATALOGUE: &[Mutation] = &[
    // --- header ------------------------------------------------------
    mutation(
        "header.magic/wrong-byte",
        Rule::HeaderMagic,
        Error,
        "one byte of the magic changed: not a qcow2 image at all",
        keep,
        |t| {
            let k = t.rng.gen_range(0..4);
            t.bytes[k] ^= t.rng.gen_range(1..=255u8);
            Ok(())
        },
    )
    .ext(ExtState::Absent),
    mutation(
        "header.truncated/inside-header",
        Rule::HeaderTruncated,
        Error,
        "the file ends after the version field but inside the fixed header",
        keep,
        |t| {
            let fixed = if t.spec.version == 2 {
                hf::V2_LENGTH
            } else {
                hf::V3_MIN_LENGTH
            };
            let n = t.rng.gen_range(hf::VERSION.end()..fixed);
            t.bytes.truncate(n);
            Ok(())
        },
    )
    .ext(ExtState::Absent),
    mutation(
        "header.version/unknown",
        Rule::HeaderVersion,
        Error,
        "version set to a value other than 2 or 3",
        keep,
        |t| {
            let v = match t.rng.gen_range(0..3) {
                0 => t.rng.gen_range(0..2),
                1 => 4,
                _ => t.rng.gen_range(4..=u64::from(u32::MAX)),
            };
            t.put(0, hf::VERSION, v);
            Ok(())
        },
    )
    .ext(ExtState::Absent),
    mutation(
        "header.cluster-bits/below-9",
        Rule::HeaderClusterBits,
        Error,
        "cluster_bits set below 9: the header cannot be interpreted further",
        keep,
        |t| {
            let v = t.rng.gen_range(0..9);
            t.put(0, hf::CLUSTER_BITS, v);
            Ok(())
        },
    )
    .ext(ExtState::Absent),
    mutation(
        "header.cluster-bits/22",
        Rule::HeaderClusterBits,
        Limit,
        "a valid image with 4 MiB clusters (cluster_bits 22), beyond QEMU's 2 MiB; \
         no byte changed; the smallest such image (empty disk, no bitmaps) is 12 MiB",
        |s, _| {
            s.cluster_bits = 22;
            s.size = 0;
            s.writes.clear();
            s.bitmaps.clear();
            s.snapshots.clear();
            Ok(())
        },
        |_| Ok(()),
    )
    .heavy(),
    mutation(
        "header.length/100",
        Rule::HeaderLength,
        Error,
        "a 104-byte v3 header claims header_length 100 (extensions still start at 104)",
        |s, _| {
            v3(s);
            s.header_length = 104;
            Ok(())
        },
        |t| {
            t.put(0, hf::HEADER_LENGTH, 100);
            Ok(())
        },
    ),
    mutation(
        "header.incompatible-bits/reserved-bit",
        Rule::HeaderIncompatibleBits,
        Error,
        "one reserved incompatible feature bit (5-63) set",
        p_v3,
        |t| {
            let v = t.get(0, hf::INCOMPATIBLE_FEATURES) | 1 << t.rng.gen_range(5..64);
            t.put(0, hf::INCOMPATIBLE_FEATURES, v);
            Ok(())
        },
    ),
    mutation(
        "header.refcount-order/above-6",
        Rule::HeaderRefcountOrder,
        Error,
        "refcount_order set above 6",
        p_v3,
        |t| {
            let v = t.rng.gen_range(7..=255);
            t.put(0, hf::REFCOUNT_ORDER, v);
            Ok(())
        },
    ),
    mutation(
        "header.alignment/l1-offset",
        Rule::HeaderAlignment,
        Error,
        "l1_table_offset moved 8 bytes off its cluster boundary (the active L1 \
         table cannot be located; what it mapped shows as leaked)",
        keep,
        |t| {
            let v = t.get(0, hf::L1_TABLE_OFFSET) + 8;
            t.put(0, hf::L1_TABLE_OFFSET, v);
            Ok(())
        },
    ),
    mutation(
        "header.compression-type/without-bit",
        Rule::HeaderCompressionType,
        Error,
        "compression_type set to a non-zero value without incompatible bit 3",
        p_v3_long_header,
        |t| {
            let v = t.rng.gen_range(1..=255);
            t.put(0, hf::COMPRESSION_TYPE, v);
            Ok(())
        },
    ),
    mutation(
        "header.autoclear-unknown/reserved-bit",
        Rule::HeaderAutoclearUnknown,
        Unspecified,
        "one undefined autoclear bit (2-63) set",
        p_v3,
        |t| {
            let v = t.get(0, hf::AUTOCLEAR_FEATURES) | 1 << t.rng.gen_range(2..64);
            t.put(0, hf::AUTOCLEAR_FEATURES, v);
            Ok(())
        },
    ),
    mutation(
        "header.padding/non-zero",
        Rule::HeaderPadding,
        Error,
        "one byte of the header padding (bytes 105-111) non-zero",
        p_v3_long_header,
        |t| {
            let k = t.rng.gen_range(hf::COMPRESSION_TYPE.end()..112);
            t.bytes[k] = t.rng.gen_range(1..=255);
            Ok(())
        },
    ),
    mutation(
        "header.raw-external/without-data-file",
        Rule::HeaderRawExternal,
        Error,
        "autoclear bit 1 (raw external data) set without an external data file",
        p_v3,
        |t| {
            let v = t.get(0, hf::AUTOCLEAR_FEATURES) | hf::AUTOCLEAR_RAW_EXTERNAL;
            t.put(0, hf::AUTOCLEAR_FEATURES, v);
            Ok(())
        },
    ),
    mutation(
        "header.encryption-extension/luks-without-extension",
        Rule::HeaderEncryptionExtension,
        Error,
        "crypt_method 2 (LUKS) without a full disk encryption header extension",
        keep,
        |t| {
            t.put(0, hf::CRYPT_METHOD, 2);
            Ok(())
        },
    ),
    mutation(
        "header.crypt-method/unknown",
        Rule::HeaderCryptMethod,
        Error,
        "crypt_method set to a value other than 0, 1 or 2",
        keep,
        |t| {
            let v = t.rng.gen_range(3..=u64::from(u32::MAX));
            t.put(0, hf::CRYPT_METHOD, v);
            Ok(())
        },
    ),
    mutation(
        "header.backing-file/name-1024",
        Rule::HeaderBackingFile,
        Error,
        "a backing file name of 1024 bytes (at most 1023 allowed) in the first cluster",
        keep,
        |t| {
            let at = t.spec.header_area_len();
            t.put(0, hf::BACKING_FILE_OFFSET, at);
            t.put(0, hf::BACKING_FILE_SIZE, 1024);
            Ok(())
        },
    ),
    mutation(
        "header.l1-size/one-short",
        Rule::HeaderL1Size,
        Error,
        "l1_size one entry smaller than the virtual size needs",
        p_sized,
        |t| {
            let n = t.get(0, hf::L1_SIZE);
            if n == 0 {
                return Err("empty L1 table");
            }
            t.put(0, hf::L1_SIZE, n - 1);
            Ok(())
        },
    ),
    mutation(
        "header.extended-l2/small-clusters",
        Rule::HeaderExtendedL2,
        Error,
        "a v3 image with extended L2 entries and cluster_bits 9-13, consistently \
         built; no byte changed",
        |s, u| {
            v3(s);
            s.extended_l2 = true;
            s.cluster_bits = u.int_in_range(9..=13)?;
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "header.dirty/set",
        Rule::HeaderDirty,
        Note,
        "incompatible bit 0 (dirty) set: refcounts are not compared",
        p_v3,
        |t| {
            let v = t.get(0, hf::INCOMPATIBLE_FEATURES) | hf::INCOMPAT_DIRTY;
            t.put(0, hf::INCOMPATIBLE_FEATURES, v);
            Ok(())
        },
    ),
    mutation(
        "header.corrupt/set",
        Rule::HeaderCorrupt,
        Note,
        "incompatible bit 1 (corrupt) set",
        p_v3,
        |t| {
            let v = t.get(0, hf::INCOMPATIBLE_FEATURES) | hf::INCOMPAT_CORRUPT;
            t.put(0, hf::INCOMPATIBLE_FEATURES, v);
            Ok(())
        },
    ),
    // --- header extensions -------------------------------------------
    mutation(
        "ext.bounds/past-first-cluster",
        Rule::ExtBounds,
        Error,
        "the last (unknown) extension's length grown so that its data runs past \
         the first cluster",
        |s, u| {
            let n = u.int_in_range(1..=24)?;
            unknown_ext(s, n);
            Ok(())
        },
        |t| {
            let &(_, at) = t.layout.extensions.last().ok_or("no extension")?;
            let data = at + ext::PREFIX_LENGTH as u64;
            let len = t.cluster_size() - data + t.rng.gen_range(1..=64);
            t.put(at, ext::LENGTH, len);
            Ok(())
        },
    ),
    mutation(
        "ext.duplicate/backing-format-twice",
        Rule::ExtDuplicate,
        Error,
        "an unknown extension retyped as a second backing file format name",
        |s, u| {
            s.backing_format = Some("raw".into());
            let n = u.int_in_range(1..=16)?;
            unknown_ext(s, n);
            Ok(())
        },
        |t| {
            let &(_, at) = t.layout.extensions.last().ok_or("no extension")?;
            t.put(at, ext::TYPE, u64::from(ext::BACKING_FORMAT));
            Ok(())
        },
    ),
    mutation(
        "ext.padding/non-zero",
        Rule::ExtPadding,
        Unspecified,
        "one padding byte after an unknown extension's data non-zero",
        |s, u| {
            let n = 8 * u.int_in_range(0..=2)? + u.int_in_range(1..=7)?;
            unknown_ext(s, n);
            Ok(())
        },
        |t| {
            let &(_, at) = t.layout.extensions.last().ok_or("no extension")?;
            let len = t.get(at, ext::LENGTH);
            if len.is_multiple_of(8) {
                return Err("the last extension has no padding");
            }
            let data = at + ext::PREFIX_LENGTH as u64;
            let k = data + t.rng.gen_range(len..len.div_ceil(8) * 8);
            if k >= t.file_len() {
                return Err("the padding lies past the end of the file");
            }
            t.bytes[k as usize] = t.rng.gen_range(1..=255);
            Ok(())
        },
    ),
    // --- bitmaps extension ---------------------------------------------
    mutation(
        "bitmaps.autoclear-missing/bit-0-clear",
        Rule::BitmapsAutoclearMissing,
        Inconsistent,
        "autoclear bit 0 cleared in a v3 image with bitmaps: the extension must \
         be ignored (its clusters show as leaked)",
        p_bitmap,
        |t| {
            let v = t.get(0, hf::AUTOCLEAR_FEATURES) & !hf::AUTOCLEAR_BITMAPS;
            t.put(0, hf::AUTOCLEAR_FEATURES, v);
            Ok(())
        },
    )
    .ext(ExtState::Inconsistent),
    mutation(
        "bitmaps.v2-image/downgraded",
        Rule::BitmapsV2Image,
        Inconsistent,
        "a v3 image with bitmaps (refcount_order 4, no extended L2) rewritten as \
         version 2: the extension area moves to byte 72",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.refcount_order = 4;
            s.extended_l2 = false;
            Ok(())
        },
        |t| {
            let hl = t.get(0, hf::HEADER_LENGTH) as usize;
            let cs = t.cluster_size() as usize;
            if !(hf::V2_LENGTH..=cs).contains(&hl) {
                return Err("header_length outside the first cluster");
            }
            let area = t.bytes[hl..cs].to_vec();
            let start = hf::V2_LENGTH;
            t.bytes[start..start + area.len()].copy_from_slice(&area);
            t.bytes[start + area.len()..cs].fill(0);
            t.put(0, hf::VERSION, 2);
            t.spec.version = 2;
            Ok(())
        },
    )
    .ext(ExtState::Inconsistent),
    mutation(
        "bitmaps.autoclear-without-extension/bit-0-set",
        Rule::BitmapsAutoclearWithoutExtension,
        Error,
        "autoclear bit 0 set in a v3 image without bitmaps",
        |s, _| {
            v3(s);
            s.bitmaps.clear();
            Ok(())
        },
        |t| {
            let v = t.get(0, hf::AUTOCLEAR_FEATURES) | hf::AUTOCLEAR_BITMAPS;
            t.put(0, hf::AUTOCLEAR_FEATURES, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.length/short",
        Rule::BitmapsExtLength,
        Error,
        "the bitmaps extension's length field set below 24",
        p_bitmap,
        |t| {
            let at = t.ext_data()? - ext::PREFIX_LENGTH as u64;
            let v = t.rng.gen_range(0..24);
            t.put(at, ext::LENGTH, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.length/long",
        Rule::BitmapsExtLength,
        Unspecified,
        "the bitmaps extension, last in the list, claims 25-32 bytes: the \
         end-of-extensions marker's zero bytes become its extra data",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.unknown_extensions.clear();
            Ok(())
        },
        |t| {
            let at = t.ext_data()? - ext::PREFIX_LENGTH as u64;
            let v = t.rng.gen_range(25..=32);
            t.put(at, ext::LENGTH, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.nb-bitmaps-zero/empty-directory",
        Rule::BitmapsExtNbBitmapsZero,
        Error,
        "nb_bitmaps and bitmap_directory_size both set to 0",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            t.put(at, bx::NB_BITMAPS, 0);
            t.put(at, bx::BITMAP_DIRECTORY_SIZE, 0);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.reserved/non-zero",
        Rule::BitmapsExtReserved,
        Error,
        "extension bytes 4-7 (reserved) non-zero",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            let v = t.rng.gen_range(1..=u64::from(u32::MAX));
            t.put(at, bx::RESERVED, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.directory-alignment/plus-8",
        Rule::BitmapsExtDirectoryAlignment,
        Error,
        "the directory moved 8 bytes further inside its own clusters and \
         bitmap_directory_offset pointed there",
        p_directory_with_room,
        |t| {
            let (off, size) = (t.layout.directory_offset, t.layout.directory_size);
            if size.is_multiple_of(t.cluster_size()) {
                return Err("the directory fills its clusters");
            }
            let (a, n) = (off as usize, size as usize);
            t.bytes.copy_within(a..a + n, a + 8);
            t.bytes[a..a + 8].fill(0);
            let at = t.ext_data()?;
            t.put(at, bx::BITMAP_DIRECTORY_OFFSET, off + 8);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.directory-size/one-bitmap-more",
        Rule::BitmapsExtDirectorySize,
        Error,
        "nb_bitmaps one higher than the directory holds: the extra entry would \
         start at the directory's end",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            let n = t.get(at, bx::NB_BITMAPS);
            t.put(at, bx::NB_BITMAPS, n + 1);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.directory-size/trailing-bytes",
        Rule::BitmapsExtDirectorySize,
        Error,
        "bitmap_directory_size 8-56 bytes larger than the entries fill (the extra \
         zero bytes lie inside the directory's last cluster)",
        p_directory_with_room,
        |t| {
            let (size, cs) = (t.layout.directory_size, t.cluster_size());
            let room = size.div_ceil(cs) * cs - size;
            if room < 8 {
                return Err("the directory fills its clusters");
            }
            let extra = 8 * t.rng.gen_range(1..=(room / 8).min(7));
            let at = t.ext_data()?;
            t.put(at, bx::BITMAP_DIRECTORY_SIZE, size + extra);
            Ok(())
        },
    ),
    mutation(
        "refcount.overlap/directory-offset-zero",
        Rule::RefcountOverlap,
        Error,
        "bitmap_directory_offset set to 0 (one bitmap, a 32-byte directory): the \
         directory overlays the header. Also bitmaps.dir.entry-bounds, necessarily: \
         the header's bytes read as an entry give extra_data_size = cluster_bits, \
         so the entry is 40 or 48 bytes long and runs past the 32-byte directory",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.bitmaps.truncate(1);
            s.bitmaps[0].extra_data.clear();
            if s.bitmaps[0].name.len() > 8 {
                tilde_name(s, 0, 8);
            }
            Ok(())
        },
        |t| {
            let at = t.ext_data()?;
            t.put(at, bx::BITMAP_DIRECTORY_OFFSET, 0);
            Ok(())
        },
    )
    .also(&[Rule::BitmapsDirEntryBounds]),
    mutation(
        "bitmaps.ext.directory-bounds/past-eof",
        Rule::BitmapsExtDirectoryBounds,
        Error,
        "bitmap_directory_offset set to a cluster at or past the end of the file",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            t.put(at, bx::BITMAP_DIRECTORY_OFFSET, off);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.directory-bounds/size-past-eof",
        Rule::BitmapsExtDirectoryBounds,
        Error,
        "bitmap_directory_size grown so that the directory runs past the end of \
         the file",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            let size = t.file_len() - t.layout.directory_offset + 8 * t.rng.gen_range(1..=64);
            t.put(at, bx::BITMAP_DIRECTORY_SIZE, size);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.ext.limits/65536-bitmaps",
        Rule::BitmapsExtLimits,
        Limit,
        "65536 bitmaps: the last real bitmap is built with extra data exactly as \
         long as the filler entries, then its entry is rewritten without extra data \
         and followed by in_use bitmaps with empty tables (a 2 MiB directory)",
        |s, u| {
            bitmaps(s, u, 1)?;
            let fillers = 65536 - s.bitmaps.len();
            let last = s.bitmaps.last_mut().expect("one bitmap");
            last.extra_data = vec![0x5a; fillers * 32];
            Ok(())
        },
        a_many_bitmaps,
    )
    .heavy(),
    // --- bitmap directory ----------------------------------------------
    mutation(
        "bitmaps.dir.entry-bounds/directory-8-short",
        Rule::BitmapsDirEntryBounds,
        Error,
        "bitmap_directory_size 8 bytes short: the last entry runs past the directory",
        p_bitmap,
        |t| {
            let at = t.ext_data()?;
            let n = t.get(at, bx::BITMAP_DIRECTORY_SIZE);
            let n = n.checked_sub(8).ok_or("directory shorter than 8 bytes")?;
            t.put(at, bx::BITMAP_DIRECTORY_SIZE, n);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.table-offset-zero/zero",
        Rule::BitmapsDirTableOffsetZero,
        Error,
        "a bitmap's bitmap_table_offset set to 0",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            t.put(at, be::BITMAP_TABLE_OFFSET, 0);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.table-alignment/misaligned",
        Rule::BitmapsDirTableAlignment,
        Error,
        "a bitmap's bitmap_table_offset moved off its cluster boundary",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            let off = t.get(at, be::BITMAP_TABLE_OFFSET) + t.rng.gen_range(1..t.cluster_size());
            t.put(at, be::BITMAP_TABLE_OFFSET, off);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.table-size/one-short",
        Rule::BitmapsDirTableSize,
        Error,
        "bitmap_table_size of a bitmap that is not in use one below what the \
         virtual size needs",
        p_stored,
        |t| {
            let at = t.bitmap(0)?.entry_offset;
            let n = t.get(at, be::BITMAP_TABLE_SIZE);
            let n = n.checked_sub(1).ok_or("empty bitmap table")?;
            t.put(at, be::BITMAP_TABLE_SIZE, n);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.table-size/empty-disk",
        Rule::BitmapsDirTableSize,
        Unspecified,
        "bitmaps on a zero-size virtual disk: empty tables (at a non-zero aligned \
         offset); no byte changed",
        |s, u| {
            v3(s);
            s.size = 0;
            s.writes.clear();
            if s.bitmaps.is_empty() {
                s.bitmaps.push(new_bitmap(s, u, 0)?);
            }
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.table-size/one-long",
        Rule::BitmapsDirTableSize,
        Unspecified,
        "bitmap_table_size one above what the virtual size needs; the extra entry \
         is a zero entry inside the table's last cluster",
        |s, u| {
            bitmaps(s, u, 1)?;
            let per_cluster = cs(s) / 8;
            while geometry(s, s.bitmaps[0].granularity_bits)
                .clusters_needed()
                .is_multiple_of(per_cluster)
            {
                s.bitmaps[0].granularity_bits += 1;
            }
            Ok(())
        },
        |t| {
            let bl = t.bitmap(0)?;
            let (at, n) = (bl.entry_offset, u64::from(bl.table_size));
            if (n * 8).is_multiple_of(t.cluster_size()) {
                return Err("the table fills its clusters");
            }
            t.put(at, be::BITMAP_TABLE_SIZE, n + 1);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.flags-reserved/reserved-bit",
        Rule::BitmapsDirFlagsReserved,
        Error,
        "one reserved flag bit (3-31) of a bitmap set",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            let v = t.get(at, be::FLAGS) | 1 << t.rng.gen_range(3..32);
            t.put(at, be::FLAGS, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.type/zero",
        Rule::BitmapsDirType,
        Error,
        "a bitmap's type set to 0 (reserved)",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            t.put(at, be::TYPE, 0);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.type/reserved",
        Rule::BitmapsDirType,
        Error,
        "a bitmap's type set to a reserved value 2-255",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            let v = t.rng.gen_range(2..=255);
            t.put(at, be::TYPE, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.granularity/64",
        Rule::BitmapsDirGranularity,
        Error,
        "a bitmap's granularity_bits set to 64-255",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            let v = if t.rng.gen_bool(0.5) {
                64
            } else {
                t.rng.gen_range(64..=255)
            };
            t.put(at, be::GRANULARITY_BITS, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.granularity/8",
        Rule::BitmapsDirGranularity,
        Limit,
        "a valid bitmap with granularity_bits 8, below QEMU's 9; no byte changed",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.bitmaps[0].granularity_bits = 8;
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.granularity/32-63",
        Rule::BitmapsDirGranularity,
        Limit,
        "a valid bitmap with granularity_bits 32-63, above QEMU's 31; no byte changed",
        |s, u| {
            bitmaps(s, u, 1)?;
            s.bitmaps[0].granularity_bits = u.int_in_range(32..=63)?;
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.name-empty/removed",
        Rule::BitmapsDirNameEmpty,
        Error,
        "the directory re-encoded with one bitmap's name removed (name_size 0) \
         and bitmap_directory_size fixed",
        p_bitmap,
        |t| {
            if t.spec.bitmaps.is_empty() {
                return Err("no bitmap");
            }
            let i = t.rng.gen_range(0..t.spec.bitmaps.len());
            t.spec.bitmaps[i].name.clear();
            rewrite_directory(t)
        },
    ),
    mutation(
        "bitmaps.dir.name-limit/1024",
        Rule::BitmapsDirNameLimit,
        Limit,
        "a valid bitmap with a 1024-byte name, beyond QEMU's 1023; no byte changed",
        |s, u| {
            bitmaps(s, u, 1)?;
            tilde_name(s, 0, 1024);
            Ok(())
        },
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.name-unique/equal-names",
        Rule::BitmapsDirNameUnique,
        Error,
        "two bitmaps whose names differ only in their last byte; that byte \
         overwritten so that the names are equal",
        |s, u| {
            bitmaps(s, u, 2)?;
            let mut other = s.bitmaps[0].name.clone();
            *other.last_mut().expect("names are not empty") = b'~';
            s.bitmaps[1].name = other;
            Ok(())
        },
        |t| {
            let bl = t.bitmap(1)?;
            let (Some(b0), Some(b1)) = (t.spec.bitmaps.first(), t.spec.bitmaps.get(1)) else {
                return Err("fewer than two bitmaps");
            };
            if b0.name.is_empty() || b0.name.len() != b1.name.len() {
                return Err("the names differ in length");
            }
            let n = b0.name.clone();
            let extra = b1.extra_data.len() as u64;
            let at = bl.entry_offset + be::FIXED_LENGTH as u64 + extra + n.len() as u64 - 1;
            t.bytes[at as usize] = *n.last().expect("names are not empty");
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.name-bytes/nul",
        Rule::BitmapsDirNameBytes,
        Unspecified,
        "one byte of a bitmap's name set to NUL",
        p_bitmap,
        |t| set_name_byte(t, 0),
    ),
    mutation(
        "bitmaps.dir.name-bytes/not-utf8",
        Rule::BitmapsDirNameBytes,
        Unspecified,
        "one byte of a bitmap's name set to 0xff (never valid UTF-8)",
        p_bitmap,
        |t| set_name_byte(t, 0xff),
    ),
    mutation(
        "bitmaps.dir.padding/non-zero",
        Rule::BitmapsDirPadding,
        Error,
        "one padding byte after a bitmap's name non-zero",
        |s, u| {
            bitmaps(s, u, 1)?;
            let b = &s.bitmaps[0];
            if (b.extra_data.len() + b.name.len()) % 8 == 0 {
                let n = b.name.len();
                tilde_name(s, 0, if n > 1 { n - 1 } else { n + 1 });
            }
            Ok(())
        },
        |t| {
            let bl = t.bitmap(0)?;
            let b = t.spec.bitmaps.first().ok_or("no bitmap")?;
            let used = (be::FIXED_LENGTH + b.extra_data.len() + b.name.len()) as u64;
            let (at, len) = (bl.entry_offset, bl.entry_length);
            if used >= len {
                return Err("the entry has no padding");
            }
            let k = at + t.rng.gen_range(used..len);
            t.bytes[k as usize] = t.rng.gen_range(1..=255);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.dir.extra-data/incompatible",
        Rule::BitmapsDirExtraData,
        Note,
        "a bitmap with extra data and extra_data_compatible clear: listed, not \
         usable; no byte changed",
        |s, u| extra_data(s, u, false),
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.extra-data/compatible",
        Rule::BitmapsDirExtraData,
        Note,
        "a bitmap with extra data and extra_data_compatible set: usable; no byte \
         changed",
        |s, u| extra_data(s, u, true),
        |_| Ok(()),
    ),
    mutation(
        "bitmaps.dir.in-use/set",
        Rule::BitmapsDirInUse,
        Note,
        "the in_use flag of a bitmap set: listed, not usable",
        p_bitmap,
        |t| {
            let free: Vec<usize> = (0..t.spec.bitmaps.len())
                .filter(|&i| !t.spec.bitmaps[i].in_use)
                .collect();
            if free.is_empty() {
                return Err("every bitmap is in use");
            }
            let i = free[t.rng.gen_range(0..free.len())];
            let at = t.bitmap(i)?.entry_offset;
            let v = t.get(at, be::FLAGS) | be::FLAG_IN_USE;
            t.put(at, be::FLAGS, v);
            t.spec.bitmaps[i].in_use = true;
            Ok(())
        },
    ),
    // --- bitmap tables and data ----------------------------------------
    mutation(
        "bitmaps.table.bounds/past-eof",
        Rule::BitmapsTableBounds,
        Error,
        "a bitmap's table offset set to a cluster at or past the end of the file",
        p_bitmap,
        |t| {
            let at = pick_entry(t)?;
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            t.put(at, be::BITMAP_TABLE_OFFSET, off);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.table.bounds/unallocated",
        Rule::BitmapsTableBounds,
        Error,
        "the refcount of a bitmap table's first cluster set to 0",
        p_bitmap,
        |t| {
            let off = t.bitmap(0)?.table_offset;
            t.set_refcount(off, 0);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.table.reserved-bits/bits-1-8",
        Rule::BitmapsTableReservedBits,
        Error,
        "one of bits 1-8 of a bitmap table entry set",
        p_bitmap,
        |t| table_entry_bit(t, 1..=8),
    ),
    mutation(
        "bitmaps.table.reserved-bits/bits-56-63",
        Rule::BitmapsTableReservedBits,
        Error,
        "one of bits 56-63 of a bitmap table entry set",
        p_bitmap,
        |t| table_entry_bit(t, 56..=63),
    ),
    mutation(
        "bitmaps.table.all-ones-with-offset/bit-0",
        Rule::BitmapsTableAllOnesWithOffset,
        Error,
        "bit 0 set in a bitmap table entry that holds a data cluster offset",
        p_stored,
        |t| {
            let (j, _) = t.stored_data(0)?;
            let at = t.table_entry(0, j)?;
            let v = t.get_u64(at) | bt::ALL_ONES;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.table.entry-alignment/misaligned",
        Rule::BitmapsTableEntryAlignment,
        Error,
        "a data cluster offset in a bitmap table moved by a multiple of 512 off \
         its cluster boundary (clusters of at least 1 KiB)",
        p_stored_1k,
        |t| {
            let (j, off) = t.stored_data(0)?;
            let at = t.table_entry(0, j)?;
            let d = t.misalign_512()?;
            t.put_u64(at, off + d);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.data.bounds/past-eof",
        Rule::BitmapsDataBounds,
        Error,
        "a bitmap table entry pointed at a cluster at or past the end of the file",
        p_stored,
        |t| {
            let (j, _) = t.stored_data(0)?;
            let at = t.table_entry(0, j)?;
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            t.put_u64(at, off);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.data.bounds/unallocated",
        Rule::BitmapsDataBounds,
        Error,
        "the refcount of a bitmap data cluster set to 0",
        p_stored,
        |t| {
            let (_, off) = t.stored_data(0)?;
            t.set_refcount(off, 0);
            Ok(())
        },
    ),
    mutation(
        "bitmaps.data.tail-bits/set",
        Rule::BitmapsDataTailBits,
        Error,
        "one bit past the bitmap's last bit set in its last data cluster",
        |s, u| {
            stored_bitmap(s, u)?;
            let bits_per_cluster = cs(s) * 8;
            while geometry(s, s.bitmaps[0].granularity_bits)
                .nbits()
                .is_multiple_of(bits_per_cluster)
            {
                s.bitmaps[0].granularity_bits += 1;
            }
            Ok(())
        },
        |t| {
            t.bitmap(0)?;
            let geo = t.spec.geometry(t.spec.bitmaps.first().ok_or("no bitmap")?);
            let per = t.cluster_size() * 8;
            let last = geo
                .clusters_needed()
                .checked_sub(1)
                .ok_or("no data cluster")?;
            let &(_, off) = t
                .bitmap(0)?
                .data
                .iter()
                .find(|(j, _)| *j == last)
                .ok_or("last data cluster not stored")?;
            let first = geo.nbits() - last * per;
            if first == per {
                return Err("no tail bits");
            }
            let k = t.rng.gen_range(first..per);
            t.bytes[(off + k / 8) as usize] |= 1 << (k % 8);
            Ok(())
        },
    ),
    // --- mapping -------------------------------------------------------
    mutation(
        "l1.bounds/past-eof",
        Rule::L1Bounds,
        Error,
        "l1_table_offset set to a cluster at or past the end of the file",
        p_sized,
        |t| {
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            t.put(0, hf::L1_TABLE_OFFSET, off);
            Ok(())
        },
    ),
    mutation(
        "l1.reserved-bits/set",
        Rule::L1ReservedBits,
        Error,
        "one reserved bit (1-8 or 56-62) of an L1 entry set",
        p_sized,
        |t| {
            if t.layout.l1_size == 0 {
                return Err("empty L1 table");
            }
            let at = t.layout.l1_offset + 8 * t.rng.gen_range(0..u64::from(t.layout.l1_size));
            let bit = if t.rng.gen_bool(0.5) {
                t.rng.gen_range(1..=8)
            } else {
                t.rng.gen_range(56..=62)
            };
            let v = t.get_u64(at) | 1 << bit;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "l1.alignment/misaligned",
        Rule::L1Alignment,
        Error,
        "an L2 table offset in the L1 table moved by a multiple of 512 off its \
         cluster boundary",
        p_write_1k,
        |t| {
            let at = t.used_l1_entry()?;
            let d = t.misalign_512()?;
            let v = t.get_u64(at) + d;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "l2.bounds/past-eof",
        Rule::L2Bounds,
        Error,
        "an L1 entry pointed at a cluster at or past the end of the file",
        p_write,
        |t| {
            let at = t.used_l1_entry()?;
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            let v = t.get_u64(at) & mp::COPIED | off;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "l2.reserved-bits/set",
        Rule::L2ReservedBits,
        Error,
        "one reserved bit (1-8 or 56-61) of a standard L2 entry set",
        p_write,
        |t| {
            let (gc, _) = t.data_cluster()?;
            let at = t.l2_entry(gc)?;
            let bit = if t.rng.gen_bool(0.5) {
                t.rng.gen_range(1..=8)
            } else {
                t.rng.gen_range(56..=61)
            };
            let v = t.get_u64(at) | 1 << bit;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "l2.alignment/misaligned",
        Rule::L2Alignment,
        Error,
        "a guest data cluster offset in an L2 entry moved by a multiple of 512 off \
         its cluster boundary",
        p_write_1k,
        |t| {
            let (gc, _) = t.data_cluster()?;
            let at = t.l2_entry(gc)?;
            let d = t.misalign_512()?;
            let v = t.get_u64(at) + d;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "l2.data-bounds/past-eof",
        Rule::L2DataBounds,
        Error,
        "an L2 entry pointed at a cluster at or past the end of the file",
        p_write,
        |t| {
            let (gc, _) = t.data_cluster()?;
            let at = t.l2_entry(gc)?;
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            let v = t.get_u64(at) & !mp::L2_OFFSET_MASK | off;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "l2.subclusters/allocated-and-zero",
        Rule::L2Subclusters,
        Error,
        "in an extended L2 entry, one allocated subcluster also marked as reading zeros",
        |s, u| {
            v3(s);
            min_cluster_bits(s, 14);
            s.extended_l2 = true;
            guest_write(s, u, 1)
        },
        |t| {
            if t.l2_entry_size() != 16 {
                return Err("no extended L2 entries");
            }
            let (gc, _) = t.data_cluster()?;
            let at = t.l2_entry(gc)? + 8;
            let v = t.get_u64(at);
            let alloc = v & 0xffff_ffff;
            if alloc == 0 {
                return Err("no allocated subcluster");
            }
            let k = t.rng.gen_range(0..32);
            if alloc & 1 << k == 0 {
                return Err("subcluster not allocated");
            }
            t.put_u64(at, v | 1 << (32 + k));
            Ok(())
        },
    ),
    // --- refcounts -----------------------------------------------------
    mutation(
        "refcount.block-alignment/unused-entry",
        Rule::RefcountBlockAlignment,
        Error,
        "an unused refcount table entry given a value with reserved bits 0-8 set",
        keep,
        |t| {
            let at = t.unused_refcount_entry()?;
            let v = t.file_len() | t.rng.gen_range(1..512);
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "refcount.bounds/unused-entry",
        Rule::RefcountBounds,
        Error,
        "an unused refcount table entry pointed at a cluster at or past the end of \
         the file",
        keep,
        |t| {
            let at = t.unused_refcount_entry()?;
            let v = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "refcount.unallocated/metadata",
        Rule::RefcountUnallocated,
        Error,
        "the refcount of one cluster of the header, the refcount table or blocks, \
         the L1 or an L2 table, guest data, the snapshot table or the bitmap \
         directory set to 0",
        keep,
        |t| {
            let l = &t.layout;
            let mut used = vec![0, l.refcount_table_offset];
            used.extend(&l.refcount_blocks);
            if l.l1_size > 0 {
                used.push(l.l1_offset);
            }
            used.extend(l.l2_tables.iter().map(|(_, o)| *o));
            used.extend(l.data_clusters.iter().map(|(_, o)| *o));
            if !t.spec.snapshots.is_empty() {
                used.push(l.snapshot_table_offset);
            }
            if !t.spec.bitmaps.is_empty() {
                used.push(l.directory_offset);
            }
            let off = used[t.rng.gen_range(0..used.len())];
            t.set_refcount(off, 0);
            Ok(())
        },
    ),
    mutation(
        "refcount.overlap/bitmap-table-on-refcount-table",
        Rule::RefcountOverlap,
        Error,
        "a one-entry bitmap table pointed at the refcount table",
        |s, u| {
            bitmaps(s, u, 1)?;
            coarsen(s, 0, 1);
            Ok(())
        },
        |t| {
            let at = t.bitmap(0)?.entry_offset;
            let rt = t.layout.refcount_table_offset;
            t.put(at, be::BITMAP_TABLE_OFFSET, rt);
            Ok(())
        },
    ),
    mutation(
        "refcount.overlap/guest-cluster-twice",
        Rule::RefcountOverlap,
        Error,
        "an L2 entry pointed at another guest cluster's data, whose refcount does \
         not count the second reference",
        |s, u| guest_write(s, u, 2),
        |t| {
            let n = t.layout.data_clusters.len();
            if n < 2 {
                return Err("fewer than two guest clusters");
            }
            let i = t.rng.gen_range(0..n);
            let j = (i + t.rng.gen_range(1..n)) % n;
            let (_, d0) = t.layout.data_clusters[i];
            let (g1, _) = t.layout.data_clusters[j];
            let at = t.l2_entry(g1)?;
            let v = t.get_u64(at) & !mp::L2_OFFSET_MASK | d0;
            t.put_u64(at, v);
            Ok(())
        },
    ),
    mutation(
        "refcount.leak/header-refcount-2",
        Rule::RefcountLeak,
        Leak,
        "the header cluster's refcount raised to 2",
        |s, _| {
            refcounts_up_to_2(s);
            Ok(())
        },
        |t| {
            t.set_refcount(0, 2);
            Ok(())
        },
    ),
    // --- snapshots -----------------------------------------------------
    mutation(
        "snapshot.bounds/table-past-eof",
        Rule::SnapshotBounds,
        Error,
        "snapshots_offset set to a cluster at or past the end of the file",
        p_snapshot,
        |t| {
            let off = t.file_len() + t.cluster_size() * t.rng.gen_range(0..4);
            t.put(0, hf::SNAPSHOTS_OFFSET, off);
            Ok(())
        },
    ),
    mutation(
        "snapshot.extra-data/short",
        Rule::SnapshotExtraData,
        Error,
        "the only snapshot of a v3 image claims less than 16 bytes of extra data \
         (its id and name are then read from the extra data's bytes)",
        p_snapshot,
        |t| {
            if t.spec.snapshots.is_empty() {
                return Err("no snapshot");
            }
            let at = t.layout.snapshot_table_offset;
            let v = t.rng.gen_range(0..16);
            t.put(at, sf::EXTRA_DATA_SIZE, v);
            Ok(())
        },
    ),
];

// ---------------------------------------------------------------------
// Shared apply steps.

/// The directory entry offset of a random bitmap.
fn pick_entry(t: &mut Target) -> Result<u64, Skip> {
    let n = t.layout.bitmaps.len();
    if n == 0 {
        return Err("no bitmap");
    }
    let i = t.rng.gen_range(0..n);
    Ok(t.layout.bitmaps[i].entry_offset)
}

/// Sets a bit from `bits` in a random entry of bitmap 0's table.
fn table_entry_bit(t: &mut Target, bits: std::ops::RangeInclusive<u32>) -> Result<(), Skip> {
    let n = u64::from(t.bitmap(0)?.table_size);
    if n == 0 {
        return Err("empty bitmap table");
    }
    let j = t.rng.gen_range(0..n);
    let at = t.table_entry(0, j)?;
    let v = t.get_u64(at) | 1 << t.rng.gen_range(bits);
    t.put_u64(at, v);
    Ok(())
}

/// Sets one byte of a random bitmap's name to `byte`.
fn set_name_byte(t: &mut Target, byte: u8) -> Result<(), Skip> {
    if t.spec.bitmaps.is_empty() {
        return Err("no bitmap");
    }
    let i = t.rng.gen_range(0..t.spec.bitmaps.len());
    let b = &t.spec.bitmaps[i];
    if b.name.is_empty() {
        return Err("empty name");
    }
    let k = t.rng.gen_range(0..b.name.len());
    let at = t.bitmap(i)?.entry_offset + (be::FIXED_LENGTH + b.extra_data.len() + k) as u64;
    t.bytes[at as usize] = byte;
    t.spec.bitmaps[i].name[k] = byte;
    Ok(())
}

/// Bitmap 0 gets extra data and the given extra_data_compatible flag.
fn extra_data(s: &mut ImageSpec, u: &mut Unstructured, compatible: bool) -> PResult {
    bitmaps(s, u, 1)?;
    let n = u.int_in_range(1usize..=40)?;
    let b = &mut s.bitmaps[0];
    b.in_use = false;
    b.extra_data_compatible = compatible;
    b.extra_data = (0..n).map(|i| (i as u8).wrapping_mul(37) ^ 0x96).collect();
    Ok(())
}

/// Writes the directory again from `t.spec` (same tables), in place, and
/// fixes bitmap_directory_size; bytes the directory no longer uses are
/// zeroed.
fn rewrite_directory(t: &mut Target) -> Result<(), Skip> {
    let mut dir = Vec::new();
    for (b, bl) in t.spec.bitmaps.iter().zip(&t.layout.bitmaps) {
        let mut bl = bl.clone();
        bl.entry_length = be::entry_length(b.extra_data.len() as u64, b.name.len() as u64);
        dir.extend(entry_bytes(b, &bl));
    }
    let (off, old) = (
        t.layout.directory_offset as usize,
        t.layout.directory_size as usize,
    );
    if dir.len() > old {
        return Err("the directory would grow");
    }
    t.bytes[off..off + old].fill(0);
    t.bytes[off..off + dir.len()].copy_from_slice(&dir);
    let at = t.ext_data()?;
    t.put(at, bx::BITMAP_DIRECTORY_SIZE, dir.len() as u64);
    Ok(())
}

/// See `bitmaps.ext.limits/65536-bitmaps`.
fn a_many_bitmaps(t: &mut Target) -> Result<(), Skip> {
    const TOTAL: usize = 65536;
    let last = t.spec.bitmaps.len().checked_sub(1).ok_or("no bitmap")?;
    let fillers = TOTAL - t.spec.bitmaps.len();
    let bl = t.bitmap(last)?.clone();
    t.spec.bitmaps[last].extra_data.clear();
    let mut plain = bl.clone();
    plain.entry_length = be::entry_length(0, t.spec.bitmaps[last].name.len() as u64);
    let mut dir = entry_bytes(&t.spec.bitmaps[last], &plain);
    let cs = t.cluster_size();
    for k in 0..fillers {
        let name = format!("~{k:07x}").into_bytes();
        let mut e = vec![0u8; be::entry_length(0, name.len() as u64) as usize];
        // An empty table at any aligned offset inside the file claims nothing.
        be::BITMAP_TABLE_OFFSET.put(&mut e, cs);
        be::FLAGS.put(&mut e, be::FLAG_IN_USE);
        be::TYPE.put(&mut e, be::TYPE_DIRTY_TRACKING);
        be::GRANULARITY_BITS.put(&mut e, 16);
        be::NAME_SIZE.put(&mut e, name.len() as u64);
        e[be::FIXED_LENGTH..be::FIXED_LENGTH + name.len()].copy_from_slice(&name);
        dir.extend(e);
        t.spec.bitmaps.push(BitmapSpec {
            name,
            granularity_bits: 16,
            bitmap_type: 1,
            in_use: true,
            auto: false,
            extra_data_compatible: false,
            extra_data: Vec::new(),
            contents: Contents::Empty,
            zero_entries: true,
            ones_entries: false,
        });
    }
    if dir.len() as u64 != bl.entry_length {
        return Err("the filler entries do not replace the extra data exactly");
    }
    let at = bl.entry_offset as usize;
    t.bytes[at..at + dir.len()].copy_from_slice(&dir);
    let ext_at = t.ext_data()?;
    t.put(ext_at, bx::NB_BITMAPS, TOTAL as u64);
    Ok(())
}
