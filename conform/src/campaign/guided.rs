//! The seeds of a coverage-guided campaign (`campaign --coverage-guided`):
//! every case whose run reached arcs of QEMU's bitmap code no earlier case
//! reached ([`super::coverage::Tracker`]) is kept, by its recipe, and every
//! second case is then made from a kept one instead of drawn afresh: a
//! seed with 1-4 more random byte edits (in its first 256 KiB, where the
//! metadata lies), or with one more catalogue mutation stacked on it, or
//! with one of its byte edits dropped. The other cases are the blind
//! campaign's own ([`super::candidate`]), so a guided campaign explores
//! the same space and adds depth where the counters say something new
//! happened. The pool lives as long as the run (a resumed campaign starts
//! with an empty one).

use super::candidates::{Candidate, ImageRecipe};
use generator::cases::case_seed;
use generator::mutate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The recipes kept as seeds, in the order they were found.
#[derive(Debug, Default)]
pub struct Pool {
    seeds: Vec<ImageRecipe>,
}

impl Pool {
    /// Keeps `recipe` as a seed.
    pub fn add(&mut self, recipe: ImageRecipe) {
        self.seeds.push(recipe);
    }

    /// Seeds kept so far.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether no seed is kept yet.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// Case `index` of the campaign with `seed` made from a kept seed, or
    /// `None` when this case is the blind campaign's (every even index,
    /// and every case while the pool is empty) or the derived recipe does
    /// not build.
    pub fn derive(&self, seed: u64, index: u64) -> Option<Candidate> {
        if self.seeds.is_empty() || index.is_multiple_of(2) {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(case_seed(seed, index) ^ 0x6a1d);
        // Later seeds are likelier: they hold the newest discoveries.
        let n = self.seeds.len();
        let k = if rng.gen_bool(0.5) {
            n - 1 - rng.gen_range(0..n.min(8))
        } else {
            rng.gen_range(0..n)
        };
        let mut recipe = self.seeds[k].clone();
        let how = match rng.gen_range(0..6) {
            0 | 1 => {
                let m = light(&mut rng)?;
                if recipe.mutations.iter().any(|x| x == m.id) {
                    return None;
                }
                recipe.mutations.push(m.id.to_string());
                format!("seed {k} + mutation {}", m.id)
            }
            2 if !recipe.edits.is_empty() => {
                let i = rng.gen_range(0..recipe.edits.len());
                recipe.edits.remove(i);
                format!("seed {k} less byte edit {i}")
            }
            _ => {
                let len = recipe.realise()?.bytes.len().min(1 << 18);
                if len == 0 {
                    return None;
                }
                let e = rng.gen_range(1..=4);
                for _ in 0..e {
                    let at = rng.gen_range(0..len);
                    recipe.edits.push((at, rng.gen::<u8>() | 1));
                }
                format!("seed {k} + {e} random byte edits")
            }
        };
        Candidate::from_recipe(&how, recipe)
    }
}

/// A catalogue mutation the campaign draws (not a heavy one).
fn light(rng: &mut impl Rng) -> Option<&'static mutate::Mutation> {
    let cat: Vec<&mutate::Mutation> = mutate::catalogue().iter().filter(|m| !m.heavy).collect();
    (!cat.is_empty()).then(|| cat[rng.gen_range(0..cat.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_cases_come_from_the_seeds_and_are_deterministic() {
        let mut pool = Pool::default();
        assert!(pool.derive(1, 1).is_none(), "an empty pool derives nothing");
        let seed = (0..40)
            .find_map(|i| super::super::candidates::candidate(1, i))
            .expect("a case");
        pool.add(seed.recipe.clone());
        assert!(pool.derive(1, 2).is_none(), "even cases are the blind ones");
        let derived: Vec<Candidate> = (0..40)
            .map(|i| 2 * i + 1)
            .filter_map(|i| pool.derive(1, i))
            .collect();
        assert!(derived.len() >= 10, "{}", derived.len());
        for c in &derived {
            assert!(c.origin.starts_with("seed 0"), "{}", c.origin);
            assert_eq!(c.recipe.base, seed.recipe.base);
            let again = c.recipe.realise().expect("the recipe rebuilds");
            assert_eq!(again.bytes, c.bytes);
        }
        let a: Vec<String> = (0..20)
            .filter_map(|i| pool.derive(1, i))
            .map(|c| c.origin)
            .collect();
        let b: Vec<String> = (0..20)
            .filter_map(|i| pool.derive(1, i))
            .map(|c| c.origin)
            .collect();
        assert_eq!(a, b);
    }
}
