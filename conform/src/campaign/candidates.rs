//! The campaign's cases: case `index` of a seed as an [`ImageRecipe`]
//! (base spec, catalogue mutations, seed, byte edits), realised into
//! bytes and the expectation the generator or the model gives them.

use generator::cases::{case_seed, spec_from_seed};
use generator::expected::Expected;
use generator::{build, mutate, Config, ImageSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spec_model::{Rule, Severity};

/// How a case's image is made: the catalogue mutations `mutations` applied
/// to `base` with [`mutate::apply_stack`] (or `base` built unchanged when
/// there are none), then every byte edit `(offset, mask)` XORed in (edits
/// past the end of the file are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecipe {
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

impl ImageRecipe {
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
    pub recipe: ImageRecipe,
}

impl Candidate {
    /// The case a recipe makes (`None` if it does not build or one of its
    /// mutations does not apply).
    pub fn from_recipe(origin: &str, recipe: ImageRecipe) -> Option<Candidate> {
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
    Expected::from_report(&spec_model::check_bytes(bytes))
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
            let recipe = ImageRecipe {
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
                let recipe = ImageRecipe {
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
            let recipe = ImageRecipe {
                base,
                mutations: ids,
                seed: s,
                edits: Vec::new(),
            };
            Candidate::from_recipe(&origin, recipe)
        }
    }
}

/// The rules of `expected` that can be errors, sorted: a candidate is
/// kept when the model names the same ones.
fn error_rules(expected: &Expected) -> Vec<&str> {
    let mut rules: Vec<&str> = expected
        .rules
        .iter()
        .filter(|r| Rule::from_id(r).is_some_and(|x| x.severities().contains(&Severity::Error)))
        .map(String::as_str)
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}
