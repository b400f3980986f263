//! The search both live minimisers share (operation sequences,
//! `sequences::findings::minimise`, and backup chains,
//! `backup::minimise`): candidates run one at a time within a budget of
//! runs, a candidate kept when it fails the same way.

/// The smallest input found so far, failing as the first did, and the
/// runs spent.
pub struct Shrink<T, R> {
    pub best: (T, R),
    spent: usize,
    budget: usize,
}

impl<T, R> Shrink<T, R> {
    /// A search starting from `start`, which failed with `first`, allowed
    /// `budget` runs.
    pub fn new(start: T, first: R, budget: usize) -> Shrink<T, R> {
        Shrink {
            best: (start, first),
            spent: 0,
            budget,
        }
    }

    /// Whether the budget is spent.
    pub fn exhausted(&self) -> bool {
        self.spent >= self.budget
    }

    /// Runs `cand` (`run` gives `None` when the harness failed) and keeps
    /// it when `same` says its result fails as the first did. `false`:
    /// not kept, or the budget was spent.
    pub fn try_one(
        &mut self,
        cand: T,
        run: &mut impl FnMut(&T) -> Option<R>,
        same: &impl Fn(&R) -> bool,
    ) -> bool {
        if self.exhausted() {
            return false;
        }
        self.spent += 1;
        match run(&cand) {
            Some(r) if same(&r) => {
                self.best = (cand, r);
                true
            }
            _ => false,
        }
    }

    /// Greedy passes: the candidates of the best input so far
    /// (`candidates`, most reduced first) tried in order, the first kept
    /// starting the next pass; ends when a pass keeps none or the budget
    /// is spent.
    pub fn passes(
        mut self,
        candidates: impl Fn(&T, &R) -> Vec<T>,
        mut run: impl FnMut(&T) -> Option<R>,
        same: impl Fn(&R) -> bool,
    ) -> (T, R) {
        loop {
            let mut kept = false;
            for cand in candidates(&self.best.0, &self.best.1) {
                if self.try_one(cand, &mut run, &same) {
                    kept = true;
                    break;
                }
            }
            if !kept || self.exhausted() {
                return self.best;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_smallest_input_that_fails_the_same_way_within_the_budget() {
        // Fails when it holds a 7; shrink by dropping one element.
        let drop_each = |v: &Vec<u32>, _: &bool| -> Vec<Vec<u32>> {
            (0..v.len())
                .map(|i| {
                    let mut c = v.clone();
                    c.remove(i);
                    c
                })
                .collect()
        };
        let run = |v: &Vec<u32>| Some(v.contains(&7));
        let (v, _) = Shrink::new(vec![1, 7, 3, 4], true, 100).passes(drop_each, run, |r| *r);
        assert_eq!(v, vec![7]);
        let (v, _) = Shrink::new(vec![1, 7, 3, 4], true, 1).passes(drop_each, run, |r| *r);
        assert_eq!(v, vec![7, 3, 4]);
    }
}
