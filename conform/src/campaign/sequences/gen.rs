//! Random operation sequences: an image (size, cluster size, version,
//! the node's discard option) and a list of steps (an operation of the
//! semantic model, a clean restart by QMP `quit` or SIGTERM, or a
//! `kill -9` crash). Operations include transactions, inactivation and
//! activation, bitmap exports, adds with QEMU's default granularity,
//! names the spec or QEMU treat specially (empty, 1023 and 1024 bytes,
//! UTF-8, a NUL byte), granularities past QEMU's limits, more than four
//! bitmaps, concurrent writes, requests of no bytes, resizes that change table sizes
//! and reopens read-only and read-write again. Drawn from a seed for the campaign ([`Sequence::random`]) and
//! as a `quickcheck::Arbitrary` whose shrinker drops steps and simplifies
//! the ones left ([`Sequence::shrunk`]).

use quickcheck::{Arbitrary, Gen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spec_model::semantics::{DiscardMode, NodeOp, Op, Source};

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
    /// SIGTERM (a clean shutdown like `quit`), the file judged, the daemon
    /// started again.
    Terminate,
    /// An operation on a daemon holding a second node
    /// ([`Sequence::second`]): aimed at either node, a merge from the other
    /// node's bitmaps, or a transaction across both.
    Nodes { op: NodeOp },
}

/// How the fresh image is made and opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// log2 of the cluster size (`None`: `qemu-img create`'s default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_bits: Option<u8>,
    /// A version 2 image (`compat=0.10`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub v2: bool,
    /// The nodes' discard option.
    #[serde(default)]
    pub discard: DiscardMode,
    /// The image made by the generator with bitmaps already stored (set
    /// bits, one disabled, one `in_use`) instead of a fresh one by
    /// `qemu-img create` (version 3 only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preload: bool,
    /// The nodes opened read-only (the semantic model's
    /// `semantics::readonly`): the stored bitmaps readable, guest writes
    /// refused, the file byte-identical when the daemon ends. Drawn with
    /// a preloaded image (when version 3) so that there is something to
    /// read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl Shape {
    fn is_default(&self) -> bool {
        *self == Shape::default()
    }
}

/// A second image in the same daemon, its own qcow2 node (`q1`), always
/// writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Second {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Shape::is_default")]
    pub shape: Shape,
}

/// A disk size and the steps run on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// Virtual size of the fresh image (`qemu-img create`).
    pub size: u64,
    /// The image's cluster size, version and discard option.
    #[serde(default, skip_serializing_if = "Shape::is_default")]
    pub shape: Shape,
    /// A second image in the same daemon (`None`: one node, `q0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<Second>,
    pub steps: Vec<Step>,
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// More bitmaps than the first four.
const MORE_NAMES: [&str; 4] = ["e", "f", "g", "h"];
const SIZES: [u64; 7] = [
    1 << 20,
    (4 << 20) + 512,
    8 << 20,
    (3 << 20) + 4096,
    1_000_003,
    (48 << 20) + 1536,
    (130 << 20) + 7,
];
const GBITS: [u8; 6] = [9, 12, 14, 16, 18, 20];
/// Granularities past QEMU's limits (or the format's).
const ODD_GBITS: [u8; 6] = [0, 8, 21, 31, 32, 63];
const CLUSTER_BITS: [u8; 6] = [9, 12, 14, 16, 18, 21];

/// A bitmap name: mostly the four short ones (so operations meet), now
/// and then more bitmaps or a name the spec or QEMU treat specially.
fn name(rng: &mut impl Rng) -> String {
    match rng.gen_range(0..20) {
        0..=13 => pick(rng, &NAMES).to_owned(),
        14..=16 => pick(rng, &MORE_NAMES).to_owned(),
        _ => match rng.gen_range(0..5) {
            0 => String::new(),
            1 => "n".repeat(1023),
            2 => "n".repeat(1024),
            3 => "bitmap-\u{e9}t\u{e9}-\u{540d}\u{524d}".to_owned(),
            _ => "nul\0byte".to_owned(),
        },
    }
}

/// A granularity: mostly QEMU's usual ones, now and then past a limit.
fn gbits(rng: &mut impl Rng) -> u8 {
    if rng.gen_range(0..12) == 0 {
        pick(rng, &ODD_GBITS)
    } else {
        pick(rng, &GBITS)
    }
}

/// One bitmap operation (add, remove, clear, enable, disable, merge), as
/// a step or a transaction's member.
fn bitmap_op(rng: &mut impl Rng) -> Op {
    let name = name(rng);
    match rng.gen_range(0..46) {
        0..=15 => {
            // A name with a NUL byte only on a transient bitmap: the spec
            // leaves such a name unspecified, and QEMU stores it spelt
            // otherwise (an overlong UTF-8 sequence), which no model
            // reading of the file can match by name.
            let persistent = rng.gen_range(0..4) != 0 && !name.contains('\0');
            let disabled = rng.gen_range(0..4) == 0;
            if rng.gen_range(0..5) == 0 {
                Op::AddDefault {
                    name,
                    persistent,
                    disabled,
                }
            } else {
                Op::Add {
                    name,
                    gbits: gbits(rng),
                    persistent,
                    disabled,
                }
            }
        }
        16..=20 => Op::Remove { name },
        21..=26 => Op::Clear { name },
        27..=31 => Op::Enable { name },
        32..=36 => Op::Disable { name },
        _ => {
            // Now and then no source at all (a merge of nothing).
            let n = [0, 1, 1, 1, 2, 2, 2, 2][rng.gen_range(0..8)];
            Op::Merge {
                target: name,
                sources: (0..n).map(|_| pick(rng, &NAMES).to_owned()).collect(),
            }
        }
    }
}

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
    let len = match rng.gen_range(0..20) {
        0 => 0,
        1..=6 => 1,
        _ => rng.gen_range(1..=max),
    };
    (offset, len.min(size - offset))
}

/// One random step for a disk of `size` bytes (the size a resize leaves
/// is tracked by the caller).
fn step(rng: &mut impl Rng, size: &mut u64) -> Step {
    let r = rng.gen_range(0..128);
    let op = match r {
        0..=25 => {
            let (offset, len) = range(rng, *size);
            Op::Write { offset, len }
        }
        26..=29 => Op::Writes {
            writes: (0..rng.gen_range(2..=6))
                .map(|_| range(rng, *size))
                .collect(),
        },
        30..=33 => {
            let (offset, len) = range(rng, *size);
            Op::WriteZeroes { offset, len }
        }
        34..=37 => {
            let (offset, len) = range(rng, *size);
            Op::Discard { offset, len }
        }
        38..=83 => bitmap_op(rng),
        84..=87 => {
            *size = pick(rng, &SIZES);
            Op::Resize { size: *size }
        }
        88..=91 => return Step::Restart,
        92..=93 => return Step::Terminate,
        94..=99 => return Step::Crash,
        100..=107 => {
            let n = rng.gen_range(1..=4);
            Op::Transaction {
                actions: (0..n).map(|_| bitmap_op(rng)).collect(),
            }
        }
        108..=111 => Op::SetActive { active: false },
        112..=115 => Op::SetActive { active: true },
        116..=120 => Op::Export {
            name: pick(rng, &NAMES).to_owned(),
        },
        121..=123 => Op::Unexport {
            name: pick(rng, &NAMES).to_owned(),
        },
        // Read-only and back: the bitmaps stored, then in use again.
        124..=125 => Op::Reopen { read_only: true },
        _ => Op::Reopen { read_only: false },
    };
    Step::Op { op }
}

/// A random image shape: mostly the default, now and then another cluster
/// size, version 2, or discards dropped.
fn shape(rng: &mut impl Rng) -> Shape {
    Shape {
        cluster_bits: (rng.gen_range(0..3) == 0).then(|| pick(rng, &CLUSTER_BITS)),
        v2: rng.gen_range(0..10) == 0,
        preload: rng.gen_range(0..5) == 0,
        discard: if rng.gen_range(0..4) == 0 {
            DiscardMode::Ignore
        } else {
            DiscardMode::Unmap
        },
        read_only: false,
    }
}

/// Makes a drawn sequence one on a read-only node: a preloaded image
/// (version 3), and no inactivation or activation (QEMU refuses to
/// inactivate a read-only node holding a persistent bitmap it cannot
/// store, and the model does not follow a node's bitmaps through one),
/// and no reopen (the node stays read-only): a restart in their place.
fn read_only(shape: &mut Shape, steps: &mut [Step]) {
    shape.read_only = true;
    shape.preload = !shape.v2;
    for s in steps.iter_mut() {
        if matches!(
            s,
            Step::Op {
                op: Op::SetActive { .. } | Op::Reopen { .. }
            }
        ) {
            *s = Step::Restart;
        }
    }
}

/// One step for a daemon of two nodes, node 1 of `size1` bytes (a resize
/// of node 1 updates it): an operation aimed at node 1 (now and then node
/// 0), a merge whose sources lie on either node, or a transaction across
/// both.
fn two_node_step(rng: &mut impl Rng, size0: u64, size1: &mut u64) -> Step {
    let source = |rng: &mut ChaCha8Rng| Source {
        node: rng.gen_range(0..2),
        name: pick(rng, &NAMES).to_owned(),
    };
    let mut r = ChaCha8Rng::seed_from_u64(rng.gen());
    let merge = |r: &mut ChaCha8Rng| NodeOp::Merge {
        node: r.gen_range(0..2),
        target: pick(r, &NAMES).to_owned(),
        sources: (0..r.gen_range(1..=3)).map(|_| source(r)).collect(),
    };
    let op = match r.gen_range(0..20) {
        0..=9 => {
            let node = if r.gen_range(0..5) == 0 { 0 } else { 1 };
            let mut size = if node == 0 { size0 } else { *size1 };
            let mut st = step(&mut r, &mut size);
            // Restarts and crashes stay whole-daemon steps of their own.
            while !matches!(st, Step::Op { .. }) {
                st = step(&mut r, &mut size);
            }
            let Step::Op { op } = st else { unreachable!() };
            if node == 1 {
                *size1 = size;
            } else if matches!(op, Op::Resize { .. }) {
                return Step::Op {
                    op: Op::Write { offset: 0, len: 1 },
                };
            }
            NodeOp::On { node, op }
        }
        10..=14 => merge(&mut r),
        _ => NodeOp::Transaction {
            actions: (0..r.gen_range(2..=4))
                .map(|_| {
                    if r.gen_range(0..3) == 0 {
                        merge(&mut r)
                    } else {
                        NodeOp::On {
                            node: r.gen_range(0..2),
                            op: bitmap_op(&mut r),
                        }
                    }
                })
                .collect(),
        },
    };
    Step::Nodes { op }
}

/// Gives a drawn sequence (not a read-only one) a second node one time in
/// four: its own shape, mostly the first image's size, and two-node steps
/// between the drawn ones. Drawn from its own generator, so that the
/// sequences of one node stay what they were.
fn maybe_second(rng: &mut impl Rng, seq: &mut Sequence) {
    if seq.shape.read_only || rng.gen_range(0..4) != 0 {
        return;
    }
    let mut size1 = if rng.gen_range(0..3) == 0 {
        pick(rng, &SIZES[..5])
    } else {
        seq.size
    };
    let mut shape = shape(rng);
    shape.preload &= !shape.v2;
    seq.second = Some(Second { size: size1, shape });
    // Node 0's size as the drawn steps leave it at each point.
    let mut size0 = seq.size;
    let mut steps = Vec::new();
    for st in std::mem::take(&mut seq.steps) {
        while rng.gen_range(0..2) == 0 {
            steps.push(two_node_step(rng, size0, &mut size1));
        }
        if let Step::Op {
            op: Op::Resize { size },
        } = &st
        {
            size0 = *size;
        }
        steps.push(st);
    }
    seq.steps = steps;
}

impl Sequence {
    /// Sequence `index` of the campaign with `seed`: 5 to 40 steps (more
    /// with a second node).
    pub fn random(seed: u64, index: u64) -> Sequence {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index);
        let n = rng.gen_range(5..=40);
        let mut s = Sequence::from_rng(&mut rng, n);
        let mut two = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
        maybe_second(&mut two, &mut s);
        s
    }

    fn from_rng(rng: &mut impl Rng, n: usize) -> Sequence {
        let mut size = pick(rng, &SIZES[..5]);
        let start = size;
        let mut shape = shape(rng);
        let mut steps: Vec<Step> = (0..n).map(|_| step(rng, &mut size)).collect();
        // Drawn last, so that the sequences of writable nodes are those
        // drawn before read-only ones existed.
        if rng.gen_range(0..6) == 0 {
            read_only(&mut shape, &mut steps);
        }
        Sequence {
            size: start,
            shape,
            second: None,
            steps,
        }
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
            shape: self.shape,
            second: self.second,
            steps,
        };
        if self.second.is_some() && !self.steps.iter().any(|s| matches!(s, Step::Nodes { .. })) {
            out.push(Sequence {
                second: None,
                ..self.clone()
            });
        }
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
            // The sequence with step `i` replaced by `st`.
            let replaced = |st: Step| {
                let mut s = self.steps.clone();
                s[i] = st;
                with(s)
            };
            if matches!(self.steps[i], Step::Crash | Step::Terminate) {
                out.push(replaced(Step::Restart));
            }
            if let Step::Nodes { op } = &self.steps[i] {
                let simpler = match op {
                    NodeOp::On { node: 0, op } => Some(Step::Op { op: op.clone() }),
                    NodeOp::Transaction { actions } if actions.len() == 1 => Some(Step::Nodes {
                        op: actions[0].clone(),
                    }),
                    NodeOp::Transaction { actions } if actions.len() > 1 => {
                        for fewer in each_dropped(actions) {
                            let op = NodeOp::Transaction { actions: fewer };
                            out.push(replaced(Step::Nodes { op }));
                        }
                        None
                    }
                    NodeOp::Merge {
                        node,
                        target,
                        sources,
                    } if sources.len() > 1 => Some(Step::Nodes {
                        op: NodeOp::Merge {
                            node: *node,
                            target: target.clone(),
                            sources: sources[..1].to_vec(),
                        },
                    }),
                    _ => None,
                };
                if let Some(st) = simpler {
                    out.push(replaced(st));
                }
                continue;
            }
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
                Op::Transaction { actions } if actions.len() == 1 => Some(actions[0].clone()),
                Op::Writes { writes } if !writes.is_empty() => Some(Op::Write {
                    offset: writes[0].0,
                    len: writes[0].1,
                }),
                Op::Transaction { actions } if actions.len() > 1 => {
                    // Each member dropped in turn (the last here, the
                    // others below).
                    for fewer in each_dropped(actions).take(actions.len() - 1) {
                        let op = Op::Transaction { actions: fewer };
                        out.push(replaced(Step::Op { op }));
                    }
                    Some(Op::Transaction {
                        actions: actions[..actions.len() - 1].to_vec(),
                    })
                }
                Op::Add {
                    name,
                    gbits,
                    persistent,
                    disabled,
                } if (*disabled || !*persistent) && !name.contains('\0') => Some(Op::Add {
                    name: name.clone(),
                    gbits: *gbits,
                    persistent: true,
                    disabled: false,
                }),
                _ => None,
            };
            if let Some(op) = simpler {
                out.push(replaced(Step::Op { op }));
            }
        }
        out
    }
}

/// `items` with each one dropped in turn, the first first.
fn each_dropped<T: Clone>(items: &[T]) -> impl Iterator<Item = Vec<T>> + '_ {
    (0..items.len()).map(|j| {
        let mut fewer = items.to_vec();
        fewer.remove(j);
        fewer
    })
}

impl Arbitrary for Sequence {
    fn arbitrary(g: &mut Gen) -> Sequence {
        let seed = u64::arbitrary(g);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = g.size().clamp(1, 40);
        let mut s = Sequence::from_rng(&mut rng, n);
        maybe_second(&mut rng, &mut s);
        s
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
                    if let Op::Write { offset, len }
                    | Op::Discard { offset, len }
                    | Op::WriteZeroes { offset, len } = op
                    {
                        // Within the disk: only an empty request or one on
                        // an inactive node may be refused, and one on a
                        // node reopened read-only must be. Past the end
                        // (a resize the read-only node refused, which the
                        // generator does not know) it must be refused.
                        let past = offset + len > d.size;
                        let want = if past || (d.read_only && len > 0) {
                            matches!(d.expect(&op), Expect::Refuse(_))
                        } else if len == 0 || !d.active {
                            matches!(d.expect(&op), Expect::Either(_))
                        } else {
                            d.expect(&op) == Expect::Succeed
                        };
                        assert!(
                            want,
                            "{op:?} on {}: {:?} (read-only {}, active {})",
                            d.size,
                            d.expect(&op),
                            d.read_only,
                            d.active
                        );
                    }
                    d.apply(&op);
                }
            }
        }
    }

    #[test]
    fn some_sequences_open_the_node_read_only() {
        let ro: Vec<Sequence> = (0..516)
            .map(|i| Sequence::random(7, i))
            .filter(|s| s.shape.read_only)
            .collect();
        eprintln!("seed 7, sequences 0..516: {} read-only", ro.len());
        assert!((40..140).contains(&ro.len()), "{}", ro.len());
        for s in &ro {
            assert_eq!(s.shape.preload, !s.shape.v2);
            assert!(!s.steps.iter().any(|st| matches!(
                st,
                Step::Op {
                    op: Op::SetActive { .. }
                }
            )));
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
