//! The differential campaign: structured random images run through an
//! implementation's adapter and judged against the reference model. Case
//! `index` is, by `index % 4`: a valid spec (0), a one-rule mutant (1), a
//! one-rule mutant with 1-4 further random byte edits (2), or a stack of
//! 2-3 distinct catalogue mutations applied to one base spec (3).
//!
//! Every case keeps its [`Recipe`] (base spec, mutation ids, seed, byte
//! edits). Every disagreement is minimised while the implementation keeps
//! disagreeing the same way (same outcome, same deduplication key): first
//! the mutation set and the byte edits (each dropped in turn while one can
//! be; a mutation whose byte change is not needed but whose preparation of
//! the spec is goes into the base spec), then the base spec (quickcheck shrinking plus smaller disks and
//! clusters, the remaining mutations re-applied to each smaller spec), then
//! the bytes (zeroing 512-byte blocks, trimming the tail). The first case
//! of each key is saved with both verdicts, the original and minimised
//! mutation sets, and a reproducer.

use crate::runner::{self, adapters::Adapter, judge::OutcomeKind, CaseResult, RunOptions};
use anyhow::{Context, Result};
use generator::cases::{case_seed, spec_from_seed};
use generator::contents::Contents;
use generator::expected::{Expected, ExpectedBitmap, ExpectedFlags};
use generator::{build, mutate, Config, ImageSpec, ManifestCase};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which slice of the case sequence this process runs (1-based `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 2/4")?;
        let (index, count): (u64, u64) = (
            k.parse().map_err(|_| format!("bad shard index {k:?}"))?,
            n.parse().map_err(|_| format!("bad shard count {n:?}"))?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard {s} must satisfy 1 <= K <= N"));
        }
        Ok(Shard { index, count })
    }
}

/// Parses `90`, `90s`, `10m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// What the campaign remembers between runs (`OUT/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub implementation: String,
    pub seed: u64,
    pub shard: Option<Shard>,
    /// The next case index to run.
    pub next_index: u64,
    pub cases_run: u64,
    /// Outcomes per kind over all cases run.
    pub outcomes: BTreeMap<String, u64>,
    /// Disagreements per deduplication key (the first one of each is saved).
    pub disagreements: BTreeMap<String, u64>,
}

/// A saved, minimised disagreement (`OUT/findings/KEY/finding.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub key: String,
    pub implementation: String,
    pub case_index: u64,
    pub origin: String,
    pub outcome: String,
    pub detail: Vec<String>,
    /// What the reference model says of the minimised image.
    pub expected: Expected,
    /// The case's catalogue mutations (empty for a valid spec), and how
    /// many random byte edits it had.
    pub mutations: Vec<String>,
    pub byte_edits: usize,
    /// What minimising kept of them.
    pub minimised_mutations: Vec<String>,
    pub minimised_byte_edits: usize,
    /// The seed the mutations make their choices with.
    pub recipe_seed: u64,
    /// The (shrunk) base spec of the minimised recipe: the minimised
    /// mutations applied to it (with `recipe_seed`) and the remaining byte
    /// edits give the image the byte-level reduction started from.
    pub minimised_spec: ImageSpec,
    /// File length and non-zero bytes before and after minimising.
    pub original_bytes: u64,
    pub original_nonzero_bytes: u64,
    pub minimised_bytes: u64,
    pub minimised_nonzero_bytes: u64,
    /// Judge calls spent minimising.
    pub minimise_trials: u32,
    pub reproduce: Vec<String>,
}

/// How a case's image is made: the catalogue mutations `mutations` applied
/// to `base` with [`mutate::apply_stack`] (or `base` built unchanged when
/// there are none), then every byte edit `(offset, mask)` XORed in (edits
/// past the end of the file are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub base: ImageSpec,
    pub mutations: Vec<String>,
    pub seed: u64,
    pub edits: Vec<(usize, u8)>,
}

/// A realised recipe.
#[derive(Debug, Clone)]
pub struct Realised {
    pub bytes: Vec<u8>,
    pub expected: Expected,
    /// Where `expected` is known by construction (a plain spec, or one
    /// mutation without byte edits): whether the model says the same. A
    /// shrunk spec the generator cannot vouch for is not a trial.
    pub agrees: bool,
}

impl Recipe {
    /// Builds the image and its expectation: by construction for a plain
    /// spec or a single mutation without byte edits, else the model's.
    /// `None` when the spec does not build or a mutation does not apply.
    pub fn realise(&self) -> Option<Realised> {
        let (mut bytes, by_construction) = if self.mutations.is_empty() {
            let built = build(&self.base).ok()?;
            (built.bytes, Some(generator::expected::for_spec(&self.base)))
        } else {
            let ids: Vec<&str> = self.mutations.iter().map(String::as_str).collect();
            let st = mutate::apply_stack_by_id(&ids, &self.base, self.seed).ok()?;
            if !st.skipped.is_empty() {
                return None;
            }
            (st.bytes, st.expected)
        };
        for &(at, mask) in &self.edits {
            if let Some(b) = bytes.get_mut(at) {
                *b ^= mask;
            }
        }
        let model = expected_from_model(&bytes);
        let (expected, agrees) = match by_construction {
            Some(e) if self.edits.is_empty() => {
                let agrees = e.verdict == model.verdict
                    && e.bitmaps_extension == model.bitmaps_extension
                    && e.bitmaps == model.bitmaps
                    && error_rules(&e) == error_rules(&model);
                (e, agrees)
            }
            _ => (model, true),
        };
        Some(Realised {
            bytes,
            expected,
            agrees,
        })
    }
}

/// A generated case before judging.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub origin: String,
    pub bytes: Vec<u8>,
    pub expected: Expected,
    /// Rebuilds `bytes` exactly.
    pub recipe: Recipe,
}

impl Candidate {
    /// The case a recipe makes (`None` if it does not build or one of its
    /// mutations does not apply).
    pub fn from_recipe(origin: &str, recipe: Recipe) -> Option<Candidate> {
        let r = recipe.realise()?;
        Some(Candidate {
            origin: origin.to_string(),
            bytes: r.bytes,
            expected: r.expected,
            recipe,
        })
    }
}

/// The expected verdict the reference model gives `bytes` (the campaign's
/// oracle for images whose expectation is not known by construction).
pub fn expected_from_model(bytes: &[u8]) -> Expected {
    let r = spec_model::check_bytes(bytes);
    let mut rules: Vec<String> = r
        .findings
        .iter()
        .filter(|f| !matches!(f.severity, spec_model::Severity::Leak))
        .map(|f| f.rule.id().to_string())
        .collect();
    rules.sort();
    rules.dedup();
    let bitmaps = (r.verdict != spec_model::Verdict::Invalid).then(|| {
        r.bitmaps
            .iter()
            .map(|b| ExpectedBitmap {
                name: b.name.clone(),
                granularity_bits: b.granularity_bits,
                usable: b.usable,
                flags: ExpectedFlags {
                    in_use: b.flags.in_use,
                    auto: b.flags.auto,
                },
                content_sha256: b.content_sha256.clone(),
                set_bits: b.set_bits,
            })
            .collect()
    });
    Expected {
        verdict: r.verdict.as_str().to_string(),
        rules,
        bitmaps_extension: serde_json::to_value(r.bitmaps_extension)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        bitmaps,
    }
}

/// The catalogue mutations the campaign draws from (the heavy ones build
/// multi-MiB images).
fn light_mutations() -> Vec<&'static mutate::Mutation> {
    mutate::catalogue().iter().filter(|m| !m.heavy).collect()
}

/// Case `index` of the campaign with `seed` (see the module
/// documentation for the four kinds); `None` when the case's mutations do
/// not apply (the index is then skipped).
pub fn candidate(seed: u64, index: u64) -> Option<Candidate> {
    let s = case_seed(seed, index);
    let cat = light_mutations();
    match index % 4 {
        0 => {
            let recipe = Recipe {
                base: spec_from_seed(s, &Config::default()),
                mutations: Vec::new(),
                seed: s,
                edits: Vec::new(),
            };
            Candidate::from_recipe("valid spec", recipe)
        }
        kind @ (1 | 2) => {
            // Like `mutate::make`, but through a recipe: up to 16 base
            // specs are tried until the mutation applies.
            let m = cat[(s % cat.len() as u64) as usize];
            let (mut recipe, r) = (0..16).find_map(|attempt| {
                let recipe = Recipe {
                    base: spec_from_seed(case_seed(s, attempt), &Config::small()),
                    mutations: vec![m.id.to_string()],
                    seed: s,
                    edits: Vec::new(),
                };
                recipe.realise().map(|r| (recipe, r))
            })?;
            if kind == 1 {
                return Some(Candidate {
                    origin: format!("mutation {}", m.id),
                    bytes: r.bytes,
                    expected: r.expected,
                    recipe,
                });
            }
            let mut bytes = r.bytes;
            let mut rng = ChaCha8Rng::seed_from_u64(s ^ 0x5eed);
            let n = rng.gen_range(1..=4);
            let span = bytes.len().min(1 << 18);
            for _ in 0..n {
                let at = rng.gen_range(0..span);
                let mask = rng.gen::<u8>() | 1;
                bytes[at] ^= mask;
                recipe.edits.push((at, mask));
            }
            let expected = expected_from_model(&bytes);
            Some(Candidate {
                origin: format!("mutation {} + {n} random byte edits", m.id),
                bytes,
                expected,
                recipe,
            })
        }
        _ => {
            let mut rng = ChaCha8Rng::seed_from_u64(s ^ 0x57ac);
            let n = rng.gen_range(2..=3);
            let mut ms: Vec<&mutate::Mutation> = Vec::new();
            while ms.len() < n {
                let m = cat[rng.gen_range(0..cat.len())];
                if !ms.iter().any(|x| x.id == m.id) {
                    ms.push(m);
                }
            }
            let base = spec_from_seed(case_seed(s, 0), &Config::small());
            // A mutation that does not fit the image is left out, and the
            // rest stacked again without its preparation, so that the
            // recipe rebuilds the image exactly.
            loop {
                let st = mutate::apply_stack(&ms, &base, s).ok()?;
                if st.skipped.is_empty() {
                    break;
                }
                ms.retain(|m| st.applied.contains(&m.id));
            }
            let ids: Vec<String> = ms.iter().map(|m| m.id.to_string()).collect();
            let origin = format!("stacked mutations {}", ids.join(" + "));
            let recipe = Recipe {
                base,
                mutations: ids,
                seed: s,
                edits: Vec::new(),
            };
            Candidate::from_recipe(&origin, recipe)
        }
    }
}

/// The rules of `expected` that can be errors, sorted: what the
/// deduplication key names.
fn error_rules(expected: &Expected) -> Vec<&str> {
    let mut rules: Vec<&str> = expected
        .rules
        .iter()
        .filter(|r| {
            spec_model::Rule::from_id(r)
                .is_some_and(|x| x.severities().contains(&spec_model::Severity::Error))
        })
        .map(String::as_str)
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

/// Deduplication key: outcome and the model's error rules (or verdict).
pub fn key(kind: OutcomeKind, expected: &Expected) -> String {
    let rules = error_rules(expected);
    let what = if expected.verdict == "invalid" && !rules.is_empty() {
        rules.join("+")
    } else {
        expected.verdict.clone()
    };
    format!("{}--{}", kind.as_str(), what)
}

/// Judges a candidate under `adapter` (its image written to `dir`).
pub fn judge(
    adapter: &dyn Adapter,
    dir: &Path,
    c: &Candidate,
    opts: &RunOptions,
) -> Result<CaseResult> {
    judge_bytes(adapter, dir, "case.qcow2", &c.bytes, &c.expected, opts)
}

/// Judges `bytes` (written to `dir/name`) under `adapter`.
fn judge_bytes(
    adapter: &dyn Adapter,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    expected: &Expected,
    opts: &RunOptions,
) -> Result<CaseResult> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    let case = ManifestCase {
        id: name.to_string(),
        file: name.to_string(),
        expected: expected.clone(),
        description: String::new(),
    };
    Ok(runner::run_case(adapter, &case, &path, opts))
}

/// Budget of judge calls spent minimising one disagreement.
pub const MINIMISE_BUDGET: u32 = 300;

/// Smaller variants of a base spec: quickcheck's shrinks (fewer bitmaps,
/// writes, snapshots, extensions; plain layout; empty contents), then a
/// disk of one cluster and half the disk, then 512-byte clusters and
/// clusters half as large. A smaller disk keeps what fits of the writes
/// and bitmap contents.
pub fn smaller_specs(spec: &ImageSpec) -> Vec<ImageSpec> {
    let mut out: Vec<ImageSpec> = quickcheck::Arbitrary::shrink(spec).collect();
    let cs = 1u64 << spec.cluster_bits;
    let half = if spec.size.is_multiple_of(512) {
        (spec.size / 2).div_ceil(512) * 512
    } else {
        spec.size / 2
    };
    for size in [cs, half] {
        if size == 0 || size >= spec.size || out.iter().any(|s| s.size == size) {
            continue;
        }
        let mut s = spec.clone();
        s.size = size;
        s.writes.retain(|w| w.offset < size);
        for w in &mut s.writes {
            w.len = w.len.min(size - w.offset);
        }
        for b in 0..s.bitmaps.len() {
            let nbits = s.geometry(&s.bitmaps[b]).nbits();
            if let Contents::Ranges(r) = &s.bitmaps[b].contents {
                s.bitmaps[b].contents = Contents::Ranges(generator::contents::normalise(r, nbits));
            }
        }
        out.push(s);
    }
    let min_bits = if spec.extended_l2 { 14 } else { 9 };
    for bits in [min_bits, spec.cluster_bits.saturating_sub(1)] {
        if bits < min_bits
            || bits >= spec.cluster_bits
            || out.iter().any(|s| s.cluster_bits == bits)
        {
            continue;
        }
        let mut s = spec.clone();
        s.cluster_bits = bits;
        if s.header_area_len() <= 1 << bits {
            out.push(s);
        }
    }
    out
}

/// What minimising a disagreement produced.
pub struct Minimised {
    pub bytes: Vec<u8>,
    pub expected: Expected,
    /// The judgement of the minimised image.
    pub last: CaseResult,
    /// The recipe after dropping mutations and edits and shrinking the
    /// spec: it rebuilds the image the byte-level reduction started from.
    pub recipe: Recipe,
    /// Judge calls spent.
    pub trials: u32,
}

/// Shrinks a disagreeing case while the implementation keeps disagreeing
/// in the same way (same outcome kind, same deduplication key): (1) drop
/// mutations (or fold their preparation into the base spec), then byte
/// edits, one at a time; (2) shrink the base spec and
/// re-apply what is left; (3) zero 512-byte blocks and trim the tail.
/// `kind` is the outcome the case's own judgement gave; at most `budget`
/// judge calls are spent on trials.
pub fn minimise(
    adapter: &dyn Adapter,
    dir: &Path,
    c: Candidate,
    kind: OutcomeKind,
    opts: &RunOptions,
    budget: u32,
) -> Result<Minimised> {
    let want = key(kind, &c.expected);
    let total = budget;
    let mut budget = budget;
    // The write check only matters when the disagreement came from it.
    let opts = &RunOptions {
        writes: opts.writes && kind == OutcomeKind::Corrupting,
        ..opts.clone()
    };
    let still = |bytes: &[u8], expected: &Expected, budget: &mut u32| -> Result<bool> {
        if *budget == 0 || key(kind, expected) != want {
            return Ok(false);
        }
        *budget -= 1;
        let r = judge_bytes(adapter, dir, "candidate.qcow2", bytes, expected, opts)?;
        Ok(r.outcome.kind == kind)
    };
    let try_recipe = |r: &Recipe, budget: &mut u32| -> Result<Option<Realised>> {
        let Some(x) = r.realise() else {
            return Ok(None);
        };
        Ok((x.agrees && still(&x.bytes, &x.expected, budget)?).then_some(x))
    };
    let (mut bytes, mut expected, mut recipe) = (c.bytes, c.expected, c.recipe);
    // 1. Delta debugging over the mutation set, then over the byte edits:
    //    drop one at a time until no single drop keeps the disagreement. A
    //    mutation that cannot go is tried once more with its preparation
    //    folded into the base spec: the disagreement may need only what it
    //    asked of the spec (a bitmap, a guest write), not its byte change.
    for edits in [false, true] {
        'drop: loop {
            let n = if edits {
                recipe.edits.len()
            } else {
                recipe.mutations.len()
            };
            for i in 0..n {
                let mut trials = Vec::new();
                let mut r = recipe.clone();
                if edits {
                    r.edits.remove(i);
                    trials.push(r);
                } else {
                    let id = r.mutations.remove(i);
                    let mut folded = r.clone();
                    trials.push(r);
                    if let Some(m) = mutate::by_id(&id) {
                        if mutate::prepare(m, &mut folded.base, folded.seed).is_ok()
                            && folded.base != recipe.base
                        {
                            trials.push(folded);
                        }
                    }
                }
                for r in trials {
                    if let Some(x) = try_recipe(&r, &mut budget)? {
                        (bytes, expected, recipe) = (x.bytes, x.expected, r);
                        continue 'drop;
                    }
                }
                if budget == 0 {
                    break 'drop;
                }
            }
            break;
        }
    }
    // 2. Shrink the base spec; the remaining mutations are re-applied to
    //    every smaller spec (their preparation may grow it back).
    'shrink: loop {
        for smaller in smaller_specs(&recipe.base) {
            let r = Recipe {
                base: smaller,
                ..recipe.clone()
            };
            if let Some(x) = try_recipe(&r, &mut budget)? {
                (bytes, expected, recipe) = (x.bytes, x.expected, r);
                continue 'shrink;
            }
            if budget == 0 {
                break 'shrink;
            }
        }
        break;
    }
    // 3. Byte-level reduction: zero runs of the non-zero 512-byte blocks
    //    (never block 0, the header), halving the run length, each trial
    //    judged against the model's verdict of the trial image.
    let nonzero = |bytes: &[u8]| -> Vec<usize> {
        (1..bytes.len().div_ceil(512))
            .filter(|&b| {
                bytes[b * 512..((b + 1) * 512).min(bytes.len())]
                    .iter()
                    .any(|&x| x != 0)
            })
            .collect()
    };
    let mut run = (nonzero(&bytes).len() / 2).max(1);
    while budget > 0 {
        let blocks = nonzero(&bytes);
        let mut changed = false;
        for chunk in blocks.chunks(run) {
            let mut trial = bytes.clone();
            for &b in chunk {
                let end = ((b + 1) * 512).min(trial.len());
                trial[b * 512..end].fill(0);
            }
            let e = expected_from_model(&trial);
            if still(&trial, &e, &mut budget)? {
                bytes = trial;
                expected = e;
                changed = true;
            }
            if budget == 0 {
                break;
            }
        }
        if !changed {
            if run == 1 {
                break;
            }
            run /= 2;
        }
    }
    // 4. Drop trailing zeros (whole 512-byte blocks) if that keeps the
    //    disagreement.
    let keep = nonzero(&bytes)
        .last()
        .map_or(512, |b| (b + 1) * 512)
        .min(bytes.len());
    if keep < bytes.len() && budget > 0 {
        let trial = bytes[..keep].to_vec();
        let e = expected_from_model(&trial);
        if still(&trial, &e, &mut budget)? {
            bytes = trial;
            expected = e;
        }
    }
    let last = judge_bytes(adapter, dir, "minimised.qcow2", &bytes, &expected, opts)?;
    Ok(Minimised {
        bytes,
        expected,
        last,
        recipe,
        trials: total - budget,
    })
}

/// Options of a campaign.
pub struct CampaignOptions {
    pub seed: u64,
    pub duration: Duration,
    pub max_cases: Option<u64>,
    pub shard: Option<Shard>,
    pub out: PathBuf,
    pub run: RunOptions,
    pub progress: bool,
}

/// Runs the campaign until the duration or case budget is spent; resumes
/// from `OUT/state.json` when it belongs to the same implementation, seed
/// and shard.
pub fn run(adapter: &dyn Adapter, opts: &CampaignOptions) -> Result<State> {
    std::fs::create_dir_all(opts.out.join("findings"))
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let state_path = opts.out.join("state.json");
    let mut state = match std::fs::read_to_string(&state_path) {
        Ok(text) => {
            let s: State = serde_json::from_str(&text).context("state.json")?;
            if s.implementation == adapter.name() && s.seed == opts.seed && s.shard == opts.shard {
                s
            } else {
                anyhow::bail!(
                    "{} belongs to another campaign (implementation {}, seed {}); use a new --out",
                    state_path.display(),
                    s.implementation,
                    s.seed
                );
            }
        }
        Err(_) => State {
            implementation: adapter.name().to_string(),
            seed: opts.seed,
            shard: opts.shard,
            ..State::default()
        },
    };
    let scratch = tempfile::Builder::new()
        .prefix("qcow2-conform-campaign")
        .tempdir()?;
    let bar = indicatif::ProgressBar::new_spinner();
    if !opts.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} campaign {pos} cases {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let start = Instant::now();
    let mut ran = 0u64;
    while start.elapsed() < opts.duration && opts.max_cases.is_none_or(|m| ran < m) {
        let index = state.next_index;
        state.next_index += 1;
        if let Some(sh) = opts.shard {
            if index % sh.count != sh.index - 1 {
                continue;
            }
        }
        let Some(c) = candidate(opts.seed, index) else {
            continue;
        };
        let r = judge_bytes(
            adapter,
            scratch.path(),
            "case.qcow2",
            &c.bytes,
            &c.expected,
            &opts.run,
        )?;
        ran += 1;
        state.cases_run += 1;
        *state
            .outcomes
            .entry(r.outcome.kind.as_str().to_string())
            .or_default() += 1;
        bar.inc(1);
        let kind = r.outcome.kind;
        if matches!(kind, OutcomeKind::Pass | OutcomeKind::Recorded) {
            // Saved after every case, so an interrupted campaign resumes
            // exactly where it stopped.
            write_state(&state_path, &state)?;
            continue;
        }
        let k = key(kind, &c.expected);
        let n = state.disagreements.entry(k.clone()).or_default();
        *n += 1;
        if *n > 1 {
            write_state(&state_path, &state)?;
            continue;
        }
        bar.set_message(format!("minimising {k}"));
        let original = Original {
            index,
            origin: c.origin.clone(),
            bytes: c.bytes.len() as u64,
            nonzero_bytes: nonzero_bytes(&c.bytes),
            mutations: c.recipe.mutations.clone(),
            byte_edits: c.recipe.edits.len(),
        };
        let m = minimise(adapter, scratch.path(), c, kind, &opts.run, MINIMISE_BUDGET)?;
        save(&opts.out, scratch.path(), &k, original, m, adapter.name())?;
        bar.set_message(format!(
            "{} kinds of disagreement",
            state.disagreements.len()
        ));
        write_state(&state_path, &state)?;
    }
    bar.finish_and_clear();
    write_state(&state_path, &state)?;
    Ok(state)
}

fn nonzero_bytes(b: &[u8]) -> u64 {
    b.iter().filter(|&&x| x != 0).count() as u64
}

fn write_state(path: &Path, s: &State) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(s)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What a case was before minimising.
struct Original {
    index: u64,
    origin: String,
    bytes: u64,
    nonzero_bytes: u64,
    mutations: Vec<String>,
    byte_edits: usize,
}

fn save(
    out: &Path,
    scratch: &Path,
    key: &str,
    original: Original,
    m: Minimised,
    implementation: &str,
) -> Result<()> {
    let dir = out.join("findings").join(key);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("image.qcow2"), &m.bytes)?;
    let mut reproduce = vec![format!(
        "qcow2-conform check findings/{key}/image.qcow2   # the model's verdict"
    )];
    reproduce.extend(m.last.observation.commands.iter().map(|c| {
        c.replace(
            &format!("{}/minimised.qcow2", scratch.display()),
            &format!("findings/{key}/image.qcow2"),
        )
    }));
    let f = Finding {
        key: key.to_string(),
        implementation: implementation.to_string(),
        case_index: original.index,
        origin: original.origin,
        outcome: m.last.outcome.kind.as_str().to_string(),
        detail: m.last.outcome.detail.clone(),
        expected: m.expected,
        mutations: original.mutations,
        byte_edits: original.byte_edits,
        minimised_mutations: m.recipe.mutations.clone(),
        minimised_byte_edits: m.recipe.edits.len(),
        recipe_seed: m.recipe.seed,
        minimised_spec: m.recipe.base,
        original_bytes: original.bytes,
        original_nonzero_bytes: original.nonzero_bytes,
        minimised_bytes: m.bytes.len() as u64,
        minimised_nonzero_bytes: nonzero_bytes(&m.bytes),
        minimise_trials: m.trials,
        reproduce,
    };
    std::fs::write(
        dir.join("finding.json"),
        serde_json::to_string_pretty(&f)? + "\n",
    )?;
    Ok(())
}
