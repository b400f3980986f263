//! Random operation sequences: a disk size and a list of steps (an
//! operation of the semantic model, a clean restart, or a `kill -9`
//! crash). Drawn from a seed for the campaign ([`Sequence::random`]) and
//! as a `quickcheck::Arbitrary` whose shrinker drops steps and simplifies
//! the ones left ([`Sequence::shrunk`]).

use quickcheck::{Arbitrary, Gen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spec_model::semantics::Op;

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// An operation on the running image.
    Op { op: Op },
    /// QMP `quit`, the file judged, the daemon started again.
    Restart,
    /// `kill -9`, the file judged, the daemon started again.
    Crash,
}

/// A disk size and the steps run on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// Virtual size of the fresh image (`qemu-img create`).
    pub size: u64,
    pub steps: Vec<Step>,
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const SIZES: [u64; 4] = [1 << 20, (4 << 20) + 512, 8 << 20, (3 << 20) + 4096];
const GBITS: [u8; 6] = [9, 12, 14, 16, 18, 20];

fn pick<T: Clone>(rng: &mut impl Rng, from: &[T]) -> T {
    from[rng.gen_range(0..from.len())].clone()
}

/// A random byte range of a disk of `size` bytes.
fn range(rng: &mut impl Rng, size: u64) -> (u64, u64) {
    let offset = match rng.gen_range(0..4) {
        0 => rng.gen_range(0..size / 65536 + 1) * 65536,
        _ => rng.gen_range(0..size),
    }
    .min(size - 1);
    let max = (size - offset).min(300_000);
    let len = match rng.gen_range(0..3) {
        0 => 1,
        _ => rng.gen_range(1..=max),
    };
    (offset, len.min(size - offset))
}

/// One random step for a disk of `size` bytes (the size a resize leaves
/// is tracked by the caller).
fn step(rng: &mut impl Rng, size: &mut u64) -> Step {
    let name = pick(rng, &NAMES).to_owned();
    let r = rng.gen_range(0..100);
    let op = match r {
        0..=29 => {
            let (offset, len) = range(rng, *size);
            Op::Write { offset, len }
        }
        30..=33 => {
            let (offset, len) = range(rng, *size);
            Op::WriteZeroes { offset, len }
        }
        34..=37 => {
            let (offset, len) = range(rng, *size);
            Op::Discard { offset, len }
        }
        38..=53 => Op::Add {
            name,
            gbits: pick(rng, &GBITS),
            persistent: rng.gen_range(0..4) != 0,
            disabled: rng.gen_range(0..4) == 0,
        },
        54..=58 => Op::Remove { name },
        59..=64 => Op::Clear { name },
        65..=69 => Op::Enable { name },
        70..=74 => Op::Disable { name },
        75..=83 => {
            // Now and then no source at all (a merge of nothing).
            let n = [0, 1, 1, 1, 2, 2, 2, 2][rng.gen_range(0..8)];
            Op::Merge {
                target: name,
                sources: (0..n).map(|_| pick(rng, &NAMES).to_owned()).collect(),
            }
        }
        84..=87 => {
            *size = pick(rng, &SIZES);
            Op::Resize { size: *size }
        }
        88..=93 => return Step::Restart,
        _ => return Step::Crash,
    };
    Step::Op { op }
}

impl Sequence {
    /// Sequence `index` of the campaign with `seed`: 5 to 40 steps.
    pub fn random(seed: u64, index: u64) -> Sequence {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index);
        let n = rng.gen_range(5..=40);
        Sequence::from_rng(&mut rng, n)
    }

    fn from_rng(rng: &mut impl Rng, n: usize) -> Sequence {
        let mut size = pick(rng, &SIZES);
        let start = size;
        let steps = (0..n).map(|_| step(rng, &mut size)).collect();
        Sequence { size: start, steps }
    }

    /// Operations run (restarts and crashes not counted).
    pub fn operations(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Op { .. }))
            .count()
    }

    /// Smaller sequences, most reduced first: halves, each step dropped,
    /// then each step simplified (shorter I/O, fewer merge sources).
    pub fn shrunk(&self) -> Vec<Sequence> {
        let mut out = Vec::new();
        let n = self.steps.len();
        let with = |steps: Vec<Step>| Sequence {
            size: self.size,
            steps,
        };
        if n > 1 {
            out.push(with(self.steps[..n / 2].to_vec()));
            out.push(with(self.steps[n / 2..].to_vec()));
        }
        for i in (0..n).rev() {
            let mut s = self.steps.clone();
            s.remove(i);
            out.push(with(s));
        }
        for i in 0..n {
            let Step::Op { op } = &self.steps[i] else {
                continue;
            };
            let simpler = match op {
                Op::Write { offset, len } if *len > 1 => Some(Op::Write {
                    offset: *offset,
                    len: 1,
                }),
                Op::WriteZeroes { offset, len } | Op::Discard { offset, len } => Some(Op::Write {
                    offset: *offset,
                    len: *len,
                }),
                Op::Merge { target, sources } if sources.len() > 1 => Some(Op::Merge {
                    target: target.clone(),
                    sources: sources[..1].to_vec(),
                }),
                Op::Add {
                    name,
                    gbits,
                    persistent,
                    disabled,
                } if *disabled || !*persistent => Some(Op::Add {
                    name: name.clone(),
                    gbits: *gbits,
                    persistent: true,
                    disabled: false,
                }),
                _ => None,
            };
            if let Some(op) = simpler {
                let mut s = self.steps.clone();
                s[i] = Step::Op { op };
                out.push(with(s));
            }
            if matches!(self.steps[i], Step::Crash) {
                let mut s = self.steps.clone();
                s[i] = Step::Restart;
                out.push(with(s));
            }
        }
        out
    }
}

impl Arbitrary for Sequence {
    fn arbitrary(g: &mut Gen) -> Sequence {
        let seed = u64::arbitrary(g);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = g.size().clamp(1, 40);
        Sequence::from_rng(&mut rng, n)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Sequence>> {
        Box::new(self.shrunk().into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec_model::semantics::{Disk, Expect};

    #[test]
    fn sequences_are_deterministic_and_within_the_disk() {
        assert_eq!(Sequence::random(1, 7), Sequence::random(1, 7));
        assert_ne!(Sequence::random(1, 7), Sequence::random(1, 8));
        for i in 0..200 {
            let s = Sequence::random(1, i);
            let mut d = Disk::new(s.size);
            for st in &s.steps {
                if let Step::Op { op } = st {
                    let op = op.clone();
                    if let Op::Write { .. } | Op::Discard { .. } | Op::WriteZeroes { .. } = op {
                        assert_eq!(d.expect(&op), Expect::Succeed, "{op:?} on {}", d.size);
                    }
                    d.apply(&op);
                }
            }
        }
    }

    #[test]
    fn shrinking_makes_smaller_sequences() {
        fn prop(s: Sequence) -> bool {
            s.shrunk().iter().all(|t| t.steps.len() <= s.steps.len())
        }
        quickcheck::quickcheck(prop as fn(Sequence) -> bool);
        let s = Sequence::random(1, 3);
        assert!(s.shrunk().iter().any(|t| t.steps.len() < s.steps.len()));
    }
}
