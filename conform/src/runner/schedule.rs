//! The order in which a run does its work, how its hung programs wait,
//! and when a spinning one is ended: only *when* things run and end,
//! never what they do or how they are judged (a stall is graded `hang`,
//! as the limit would grade it: [`crate::runner::process::stall`]).
//!
//! A run's work is one (case, implementation) pair at a time, so one slow
//! implementation does not hold the others of its case back. By default
//! the pairs go case by case in corpus order, the implementations in
//! `--impl` order. Given estimates (`run --order-from REPORT`: each
//! pair's duration in an earlier JSON report of the same corpus), the
//! longest start first, so that a program that waits out its time limit
//! does so while the rest of the run goes on, not at its end. Programs
//! past the grace time wait aside
//! ([`crate::runner::process::slots`]). The report lists the results in
//! corpus and `--impl` order whatever the order they ran in.

use crate::runner::process::slots;
use crate::runner::report::diff::{DiffError, ReportView};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// How a run schedules its work.
#[derive(Debug, Clone)]
pub struct Scheduling {
    /// Estimated milliseconds of a (case ID, implementation name) pair;
    /// the longest start first, pairs without one after them in the
    /// default order.
    pub estimates: HashMap<(String, String), u64>,
    /// How many programs may wait aside at once (0: none, every program
    /// keeps its worker until it ends).
    pub max_waiting: usize,
    /// How long a program runs on its worker before it may wait aside.
    pub grace: Duration,
    /// Processor time a program may spin without a read, a write or a
    /// wait before it is ended as a hang
    /// ([`crate::runner::process::stall`]; `None`: only its time limit
    /// ends it).
    pub stall: Option<Duration>,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            estimates: HashMap::new(),
            max_waiting: slots::DEFAULT_MAX_WAITING,
            grace: slots::DEFAULT_GRACE,
            stall: Some(crate::runner::process::stall::DEFAULT_STALL),
        }
    }
}

impl Scheduling {
    /// The default order with no program ever waiting aside and no stall
    /// called: how every run worked before either existed.
    pub fn in_place() -> Scheduling {
        Scheduling {
            max_waiting: 0,
            stall: None,
            ..Scheduling::default()
        }
    }

    /// Estimates from the JSON report at `path` (`run --json`): the
    /// duration each (case, implementation) pair observed there.
    pub fn estimates_from_report(path: &Path) -> Result<HashMap<(String, String), u64>, DiffError> {
        Ok(ReportView::load(path)?.durations())
    }

    /// The order of the pairs (case index, implementation index) of
    /// `cases` x `implementations`: the longest estimate first (ties and
    /// pairs without an estimate in corpus, then `--impl`, order).
    pub fn order(&self, cases: &[&str], implementations: &[&str]) -> Vec<(usize, usize)> {
        let mut pairs: Vec<(usize, usize)> = (0..cases.len())
            .flat_map(|c| (0..implementations.len()).map(move |i| (c, i)))
            .collect();
        if !self.estimates.is_empty() {
            let estimate = |&(c, i): &(usize, usize)| {
                self.estimates
                    .get(&(cases[c].to_owned(), implementations[i].to_owned()))
                    .copied()
                    .unwrap_or(0)
            };
            // Stable: equal estimates keep the default order.
            pairs.sort_by_key(|p| std::cmp::Reverse(estimate(p)));
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_estimate_starts_first_the_rest_in_corpus_order() {
        let mut s = Scheduling::default();
        assert_eq!(
            s.order(&["a", "b"], &["x", "y"]),
            [(0, 0), (0, 1), (1, 0), (1, 1)]
        );
        s.estimates.insert(("b".into(), "y".into()), 30_000);
        s.estimates.insert(("a".into(), "y".into()), 500);
        assert_eq!(
            s.order(&["a", "b"], &["x", "y"]),
            [(1, 1), (0, 1), (0, 0), (1, 0)]
        );
    }
}
