//! Random backup chains: the disk, the bitmap (granularity, persistence),
//! the mode, the guest's requests before the full backup, and rounds of
//! requests each ended by an incremental backup, with what may happen
//! around it: a restart, a job made to fail first (blkdebug), a job
//! cancelled part-way first, guest writes issued while the incremental's
//! job runs. Smaller chains for the minimiser ([`Chain::shrunk`]).

use crate::runner::adapters::qemu_live::backup::Mode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spec_model::semantics::Op;

/// The guest's requests between two backups, and whether the daemon is
/// restarted (QMP `quit`, started again) before the backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub ops: Vec<Op>,
    #[serde(default)]
    pub restart: bool,
    /// Before the incremental, a backup to a target whose data writes
    /// fail (blkdebug): the job must fail and leave the bitmap whole
    /// (`on-success`, `never`, `incremental`), so that the backup taken
    /// next still holds everything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_first: bool,
    /// Before the incremental, a backup job (push modes) slowed down and
    /// cancelled once it has started copying: with `bitmap-mode=always`
    /// the bitmap must lose at most what the job copied (and the partial
    /// backup joins the chain), in the other modes it must stay whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_first: bool,
    /// Guest writes issued while the incremental's job runs (push modes):
    /// the backup's point in time is the job's start, so it must not hold
    /// them, and the bitmap must hold them for the next incremental.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub during: Vec<Op>,
}

/// One chain: the disk, the bitmap, the mode and the rounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub size: u64,
    /// The bitmap's granularity, `2^gbits` bytes.
    pub gbits: u8,
    pub persistent: bool,
    pub mode: Mode,
    /// Guest requests before the full backup.
    pub before: Vec<Op>,
    /// One round per incremental backup.
    pub rounds: Vec<Round>,
}

const SIZES: [u64; 4] = [1 << 20, 4 << 20, (3 << 20) + 65536, (2 << 20) + 4096];
const GBITS: [u8; 6] = [12, 14, 16, 16, 17, 20];

fn guest_op(rng: &mut ChaCha8Rng, size: u64) -> Op {
    let offset = match rng.gen_range(0..3) {
        0 => rng.gen_range(0..size / 65536) * 65536,
        _ => rng.gen_range(0..size),
    };
    let len = match rng.gen_range(0..4) {
        0 => 1,
        1 => 65536,
        _ => rng.gen_range(1..=200_000u64),
    }
    .min(size - offset);
    match rng.gen_range(0..10) {
        0 => Op::WriteZeroes { offset, len },
        1 => Op::Discard { offset, len },
        _ => Op::Write { offset, len },
    }
}

impl Chain {
    /// Chain `index` of campaign seed `seed`; the modes take turns.
    pub fn random(seed: u64, index: u64) -> Chain {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let size = SIZES[rng.gen_range(0..SIZES.len())];
        let persistent = rng.gen_bool(0.5);
        let ops = |rng: &mut ChaCha8Rng| {
            let n = rng.gen_range(0..6);
            (0..n).map(|_| guest_op(rng, size)).collect::<Vec<_>>()
        };
        let before = ops(&mut rng);
        let mut rounds: Vec<Round> = (0..rng.gen_range(1..=4))
            .map(|_| Round {
                ops: ops(&mut rng),
                restart: persistent && rng.gen_range(0..4) == 0,
                fail_first: false,
                cancel_first: false,
                during: Vec::new(),
            })
            .collect();
        let mode = Mode::ALL[(index % Mode::ALL.len() as u64) as usize];
        let gbits = GBITS[rng.gen_range(0..GBITS.len())];
        // Failed jobs are drawn from their own generator, so that the
        // rest of a chain is what it was before they were added.
        let mut fails = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x517c_c1b7_2722_0a95));
        for r in &mut rounds {
            r.fail_first = mode.keeps_bitmap_on_failure() && fails.gen_range(0..4) == 0;
        }
        // So are cancelled jobs and writes during a job.
        let mut more = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
        if mode != Mode::Pull {
            for r in &mut rounds {
                r.cancel_first = more.gen_range(0..4) == 0;
                if more.gen_range(0..3) == 0 {
                    let n = more.gen_range(1..4);
                    r.during = (0..n).map(|_| guest_op(&mut more, size)).collect();
                }
            }
        }
        Chain {
            size,
            gbits,
            persistent,
            mode,
            before,
            rounds,
        }
    }
}

impl Chain {
    /// Smaller chains, most reduced first: rounds after `at` cut, each
    /// round dropped, each guest request dropped, each round's extras
    /// (restart, failed or cancelled job, writes during the job) taken
    /// away, the bitmap made transient.
    pub fn shrunk(&self, at: Option<usize>) -> Vec<Chain> {
        let mut out = Vec::new();
        let n = self.rounds.len();
        if let Some(at) = at.filter(|a| *a < n) {
            let mut c = self.clone();
            c.rounds.truncate(at);
            out.push(c);
        }
        for i in (0..n).rev() {
            let mut c = self.clone();
            c.rounds.remove(i);
            out.push(c);
        }
        for i in (0..self.before.len()).rev() {
            let mut c = self.clone();
            c.before.remove(i);
            out.push(c);
        }
        for (i, r) in self.rounds.iter().enumerate() {
            for j in (0..r.ops.len()).rev() {
                let mut c = self.clone();
                c.rounds[i].ops.remove(j);
                out.push(c);
            }
            for j in (0..r.during.len()).rev() {
                let mut c = self.clone();
                c.rounds[i].during.remove(j);
                out.push(c);
            }
            let plain = Round {
                ops: r.ops.clone(),
                during: r.during.clone(),
                ..Round::default()
            };
            for simpler in [
                Round {
                    restart: false,
                    ..r.clone()
                },
                Round {
                    fail_first: false,
                    ..r.clone()
                },
                Round {
                    cancel_first: false,
                    ..r.clone()
                },
                plain,
            ] {
                if simpler != *r {
                    let mut c = self.clone();
                    c.rounds[i] = simpler;
                    out.push(c);
                }
            }
        }
        if self.persistent && !self.rounds.iter().any(|r| r.restart) {
            out.push(Chain {
                persistent: false,
                ..self.clone()
            });
        }
        out
    }
}
