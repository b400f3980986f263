//! One backup chain against a real daemon: guest writes, a full backup
//! (a `transaction` adding the bitmap and starting the job, so no write
//! falls between them), then rounds of guest writes (and, for a
//! persistent bitmap, clean restarts) each ended by an incremental backup
//! in the chain's [`Mode`]. At every backup point the semantic model's
//! bitmap says which bytes the incremental must hold (more is allowed, a
//! missing byte is a defect), the chain so far is restored
//! ([`super::restore`]) and compared byte for byte with the disk as the
//! guest export reads it at that point, and the daemon's bitmaps are
//! compared with the model's ([`oracle::compare`]).

pub use super::gen::{Chain, Round};
use super::restore::{self, Extents};
use crate::campaign::sequences::run::create_image;
use crate::runner::adapters::qemu_live::backup::{self as qb, Mode};
use crate::runner::adapters::qemu_live::daemon::{Daemon, DaemonError, NODE};
use crate::runner::adapters::qemu_live::nbd::NbdClient;
use crate::runner::adapters::qemu_live::oracle::{self, fill_byte, Contents};
use crate::runner::process::Limits;

#[path = "during.rs"]
mod during;
use serde::{Deserialize, Serialize};
use serde_json::json;
use spec_model::semantics::{DiscardMode, Disk, Op};
use std::path::Path;

/// What one chain found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChainResult {
    /// The problems of the first backup point that had any.
    pub problems: Vec<String>,
    /// That point (0: the full backup, k: the k-th incremental).
    pub at_point: Option<usize>,
    /// The daemon failed (died, did not answer): a finding too.
    pub error: Option<String>,
    /// The daemon never started within the limit (twice): a harness
    /// failure, never a finding.
    pub unstarted: Option<String>,
    #[serde(flatten)]
    pub counts: ChainCounts,
    /// Per backup point: what the model required and what came.
    pub points: Vec<Point>,
    /// QMP transcript.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub transcript: Vec<String>,
}

/// What one chain did, counted: the campaign adds each count to its
/// totals under [`ChainCounts::named`]'s name.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ChainCounts {
    /// Incremental backups taken and restored.
    pub incrementals: u64,
    /// Backup points restored and compared (the full one included).
    pub restored: u64,
    /// Bytes compared between restored chains and the disk.
    pub bytes_compared: u64,
    /// Bytes the incrementals held beyond what the model required.
    pub extra_bytes: u64,
    /// Backup jobs that failed as injected (and left the bitmap whole).
    #[serde(default)]
    pub failed_jobs: u64,
    /// Incremental jobs the guest wrote to the disk while they ran.
    #[serde(default)]
    pub written_during: u64,
}

impl ChainCounts {
    /// Each count with its name in the campaign's totals (`state.json`).
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("incrementals", self.incrementals),
            ("restored", self.restored),
            ("bytes-compared", self.bytes_compared),
            ("extra-bytes", self.extra_bytes),
            ("failed-jobs", self.failed_jobs),
            ("written-during", self.written_during),
        ]
    }
}

impl ChainResult {
    /// Whether the chain found something.
    pub fn failed(&self) -> bool {
        self.unstarted.is_none() && (!self.problems.is_empty() || self.error.is_some())
    }
}

/// One backup point as replayed and reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    pub index: usize,
    /// Bytes the model says the backup must hold.
    pub required: u64,
    /// Bytes the backup holds.
    pub held: u64,
    /// Whether the restored chain equals the disk.
    pub restored_equal: bool,
    pub problems: Vec<String>,
}

/// How a chain is run.
#[derive(Clone, Copy)]
pub struct ChainOptions {
    pub limits: Limits,
    /// Applied to each backup's extents before they are checked (a test
    /// drops a cluster to see the check fail): point index, extents.
    pub tamper: Option<fn(usize, &mut Extents)>,
    /// Only the QMP and NBD operations: nothing read back, predicted or
    /// compared (the benchmark's baseline).
    pub bare: bool,
}

/// The guest's view: what it wrote where (`None`: a byte whose contents
/// the request left open, a discard's).
struct Shadow(Vec<Option<u8>>);

impl Shadow {
    fn apply(&mut self, op: &Op) {
        let (offset, len, v) = match op {
            Op::Write { offset, len } => (*offset, *len, Some(fill_byte(*offset))),
            Op::WriteZeroes { offset, len } => (*offset, *len, Some(0)),
            Op::Discard { offset, len } => (*offset, *len, None),
            _ => return,
        };
        let end = ((offset + len) as usize).min(self.0.len());
        self.0[(offset as usize).min(end)..end].fill(v);
    }

    /// The first byte the disk reads differently from what the guest wrote.
    fn differs(&self, disk: &[u8]) -> Option<String> {
        let i = self
            .0
            .iter()
            .zip(disk)
            .position(|(s, d)| s.is_some_and(|s| s != *d))?;
        Some(format!(
            "the disk reads {:#04x} at {i:#x}, where the guest wrote {:#04x}",
            disk[i],
            self.0[i].unwrap_or(0)
        ))
    }
}

/// The running pieces of a chain.
struct Run<'a> {
    program: &'a Path,
    image: &'a Path,
    work: &'a Path,
    chain: &'a Chain,
    opts: ChainOptions,
    /// The daemon (`None` only while it restarts).
    daemon: Option<Daemon>,
    guest: Option<NbdClient>,
    model: Disk,
    shadow: Shadow,
    restored: Vec<u8>,
    /// The bitmap the next incremental reads (pull mode renames it).
    bitmap: String,
    transcript: Vec<String>,
}

/// Why a chain stopped: the daemon failed, or a point had problems.
enum Stop {
    Daemon(DaemonError),
    Problems(Vec<String>),
}

impl From<DaemonError> for Stop {
    fn from(e: DaemonError) -> Stop {
        Stop::Daemon(e)
    }
}

fn refused(what: &str, e: impl std::fmt::Display) -> Stop {
    Stop::Problems(vec![format!("QEMU refused {what}: {e}")])
}

/// Runs `chain` on a fresh image in `work` with the daemon `program`.
pub fn run_chain(
    program: &Path,
    chain: &Chain,
    work: &Path,
    opts: ChainOptions,
) -> Result<ChainResult, crate::campaign::sequences::SetupError> {
    let image = work.join("disk.qcow2");
    create_image(&image, chain.size, &opts.limits)?;
    let mut r = ChainResult::default();
    let d = match start_retrying(program, &image, &opts.limits) {
        Ok(d) => d,
        Err(DaemonError::NotListening(t)) => {
            r.unstarted = Some(format!(
                "qemu-storage-daemon did not listen within {t:?}, twice"
            ));
            return Ok(r);
        }
        Err(e) => {
            r.error = Some(e.to_string());
            return Ok(r);
        }
    };
    let mut run = Run {
        program,
        image: &image,
        work,
        chain,
        opts,
        daemon: Some(d),
        guest: None,
        model: Disk::new(chain.size).with_discard(DiscardMode::Unmap),
        shadow: Shadow(vec![Some(0); chain.size as usize]),
        restored: Vec::new(),
        bitmap: "bk0".to_owned(),
        transcript: Vec::new(),
    };
    let mut point = 0;
    let outcome = (|| -> Result<(), Stop> {
        run.full(&mut r)?;
        for (k, round) in chain.rounds.iter().enumerate() {
            point = k + 1;
            run.round(round, point, &mut r)?;
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => {}
        Err(Stop::Problems(p)) => {
            r.problems = p;
            r.at_point = Some(point);
        }
        Err(Stop::Daemon(DaemonError::NotListening(t))) => {
            r.at_point = Some(point);
            r.unstarted = Some(format!(
                "qemu-storage-daemon did not listen within {t:?} on a restart, twice"
            ));
        }
        Err(Stop::Daemon(e)) => {
            r.at_point = Some(point);
            let died = run.daemon.as_mut().is_some_and(Daemon::ended);
            r.error = Some(if died {
                format!("qemu-storage-daemon died during backup point {point}: {e}")
            } else {
                e.to_string()
            });
        }
    }
    if let Some(g) = run.guest.take() {
        g.disconnect();
    }
    if let Some(d) = run.daemon.take() {
        run.transcript.extend(d.qmp.transcript.iter().cloned());
        let p = d.quit();
        if p.status != Some(0) && !r.failed() {
            r.error = Some(format!(
                "qemu-storage-daemon did not end cleanly: {}",
                p.describe_end()
            ));
        }
    }
    r.transcript = run.transcript;
    Ok(r)
}

/// Starts the daemon; one that does not listen within the limit (a loaded
/// machine) is given a second chance.
pub fn start_retrying(
    program: &Path,
    image: &Path,
    limits: &Limits,
) -> Result<Daemon, DaemonError> {
    match Daemon::start(program, image, limits) {
        Err(DaemonError::NotListening(_)) => Daemon::start(program, image, limits),
        other => other,
    }
}

/// The running daemon.
fn running(daemon: &mut Option<Daemon>) -> Result<&mut Daemon, Stop> {
    daemon
        .as_mut()
        .ok_or_else(|| Stop::Problems(vec!["the daemon is not running".into()]))
}

impl Run<'_> {
    fn guest(&mut self) -> Result<&mut NbdClient, Stop> {
        if self.guest.is_none() {
            let c = running(&mut self.daemon)?.guest()?;
            self.guest = Some(c);
        }
        Ok(self.guest.as_mut().expect("connected just now"))
    }

    fn guest_ops(&mut self, ops: &[Op]) -> Result<(), Stop> {
        for op in ops {
            if let Err(e) = oracle::execute(running(&mut self.daemon)?, &mut self.guest, op)? {
                return Err(refused(&format!("{op:?}"), e));
            }
            self.model.apply(op);
            self.shadow.apply(op);
        }
        Ok(())
    }

    fn target(&mut self, k: usize) -> Result<(String, std::path::PathBuf), Stop> {
        self.new_target(
            format!("t{k}"),
            &format!("backup{k}"),
            qb::Target::Plain,
            "the backup target",
        )
    }

    /// A fresh backup target of the disk's size, `WORK/FILE.qcow2`,
    /// attached as node `node` as `kind` says (`what` names it in a
    /// refusal).
    pub(super) fn new_target(
        &mut self,
        node: String,
        file: &str,
        kind: qb::Target,
        what: &str,
    ) -> Result<(String, std::path::PathBuf), Stop> {
        let path = self.work.join(format!("{file}.qcow2"));
        create_image(&path, self.chain.size, &self.opts.limits)
            .map_err(|e| Stop::Problems(vec![format!("cannot create the target: {e}")]))?;
        if let Err(e) = qb::attach_target(running(&mut self.daemon)?, &node, &path, kind)? {
            return Err(refused(what, e));
        }
        Ok((node, path))
    }

    fn full(&mut self, r: &mut ChainResult) -> Result<(), Stop> {
        let chain = self.chain;
        self.guest_ops(&chain.before)?;
        let (node, path) = self.target(0)?;
        let add = Op::Add {
            name: self.bitmap.clone(),
            gbits: chain.gbits,
            persistent: chain.persistent,
            disabled: false,
        };
        let (_, add_args) = oracle::qmp_command(&add).expect("a bitmap add");
        let actions = json!([
            {"type": "block-dirty-bitmap-add", "data": add_args},
            {"type": "blockdev-backup", "data": qb::full_arguments("j0", &node)},
        ]);
        if let Err(e) = qb::transaction(running(&mut self.daemon)?, actions)? {
            return Err(refused("the full backup's transaction", e));
        }
        let job = qb::wait_job(running(&mut self.daemon)?, "j0", self.opts.limits.timeout)?;
        if let Err(e) = qb::detach(running(&mut self.daemon)?, &node)? {
            return Err(refused("detaching the target", e));
        }
        if let Err(e) = job {
            return Err(Stop::Problems(vec![format!("the full backup failed: {e}")]));
        }
        self.model.apply(&add);
        if self.opts.bare {
            return Ok(());
        }
        let extents = restore::image_extents(&path)
            .map_err(|e| Stop::Problems(vec![format!("the full backup: {e}")]))?;
        self.restored = vec![0; chain.size as usize];
        let mut extents = extents;
        if let Some(t) = self.opts.tamper {
            t(0, &mut extents);
        }
        restore::apply(&mut self.restored, &extents);
        let must = vec![(0, chain.size)];
        self.check(0, &must, &extents, None, r)
    }

    fn round(&mut self, round: &Round, k: usize, r: &mut ChainResult) -> Result<(), Stop> {
        let chain = self.chain;
        if round.restart {
            if let Some(g) = self.guest.take() {
                g.disconnect();
            }
            if let Some(old) = self.daemon.take() {
                self.transcript.extend(old.qmp.transcript.iter().cloned());
                let p = old.quit();
                if p.status != Some(0) {
                    return Err(Stop::Problems(vec![format!(
                        "qemu-storage-daemon did not quit cleanly before incremental {k}: {}",
                        p.describe_end()
                    )]));
                }
            }
            self.transcript.push("# quit, started again".into());
            self.daemon = Some(start_retrying(self.program, self.image, &self.opts.limits)?);
        }
        self.guest_ops(&round.ops)?;
        if round.fail_first && self.chain.mode.keeps_bitmap_on_failure() {
            self.failing_backup(k, r)?;
        }
        if round.cancel_first && chain.mode != Mode::Pull {
            self.cancelled_backup(k, r)?;
        }
        let must = self
            .model
            .bitmaps
            .get(&self.bitmap)
            .map(|b| b.dirty_ranges(chain.size))
            .unwrap_or_default();
        if !self.opts.bare {
            self.agree(&format!("before incremental {k}"))?;
        }
        let (mut extents, at) = if chain.mode == Mode::Pull {
            (self.pull(k)?, None)
        } else if !round.during.is_empty() {
            let (x, at) = self.push_during(k, &round.during, r)?;
            (x, Some(at))
        } else {
            (self.push(k)?, None)
        };
        r.counts.incrementals += 1;
        if self.opts.bare {
            return Ok(());
        }
        if let Some(t) = self.opts.tamper {
            t(k, &mut extents);
        }
        restore::apply(&mut self.restored, &extents);
        self.check(k, &must, &extents, at, r)?;
        self.agree(&format!("after incremental {k}"))
    }

    /// The daemon's bitmaps compared with the model's
    /// ([`oracle::compare`]): any difference stops the chain, each problem
    /// said to be `when`.
    fn agree(&mut self, when: &str) -> Result<(), Stop> {
        let p = oracle::compare(running(&mut self.daemon)?, &self.model, Contents::Hash)?;
        if p.is_empty() {
            return Ok(());
        }
        Err(Stop::Problems(
            p.into_iter().map(|m| format!("{when}: {m}")).collect(),
        ))
    }

    /// The arguments of backup job `job` of the chain's mode (a push mode:
    /// pull mode runs no job) to node `node`.
    fn push_arguments(&self, job: &str, node: &str) -> serde_json::Value {
        self.chain
            .mode
            .backup_arguments(job, node, &self.bitmap)
            .expect("a push mode")
    }

    /// A `blockdev-backup` incremental to a fresh target, read back.
    fn push(&mut self, k: usize) -> Result<Extents, Stop> {
        let (node, path) = self.target(k)?;
        let args = self.push_arguments(&format!("j{k}"), &node);
        let job = qb::run_job(running(&mut self.daemon)?, args, self.opts.limits.timeout)?;
        self.incremental_done(k, &node, job)?;
        if self.opts.bare {
            return Ok(Vec::new());
        }
        restore::image_extents(&path)
            .map_err(|e| Stop::Problems(vec![format!("incremental backup {k}: {e}")]))
    }

    /// The end of incremental `k`'s job (`job`: how it ended): its target
    /// detached, a failure a problem, and on success the bitmap consumed
    /// as the mode says.
    fn incremental_done(
        &mut self,
        k: usize,
        node: &str,
        job: Result<(), crate::runner::adapters::qemu_live::qmp::Refused>,
    ) -> Result<(), Stop> {
        if let Err(e) = qb::detach(running(&mut self.daemon)?, node)? {
            return Err(refused("detaching the target", e));
        }
        if let Err(e) = job {
            return Err(Stop::Problems(vec![format!(
                "incremental backup {k} ({}) failed: {e}",
                self.chain.mode.name()
            )]));
        }
        if self.chain.mode.clears_on_success() {
            self.model.apply(&Op::Clear {
                name: self.bitmap.clone(),
            });
        }
        Ok(())
    }

    /// A backup to a target whose data writes fail. A job that fails must
    /// leave the bitmap as it was (the model is unchanged, and compared
    /// after it); a job with no data to write (nothing dirty, or only
    /// zeroes) may succeed, and is then an ordinary incremental.
    fn failing_backup(&mut self, k: usize, r: &mut ChainResult) -> Result<(), Stop> {
        let (node, _) = self.new_target(
            format!("f{k}"),
            &format!("failing{k}"),
            qb::Target::FailingWrites,
            "the failing backup target",
        )?;
        let args = self.push_arguments(&format!("fj{k}"), &node);
        let job = qb::run_job(running(&mut self.daemon)?, args, self.opts.limits.timeout)?;
        if let Err(e) = qb::detach(running(&mut self.daemon)?, &node)? {
            return Err(refused("detaching the failing target", e));
        }
        match job {
            Err(_) => r.counts.failed_jobs += 1,
            Ok(()) if self.chain.mode.clears_on_success() => self.model.apply(&Op::Clear {
                name: self.bitmap.clone(),
            }),
            Ok(()) => {}
        }
        if self.opts.bare {
            return Ok(());
        }
        let how = if job.is_err() { "failed" } else { "succeeded" };
        self.agree(&format!(
            "after a backup job that {how} before incremental {k}"
        ))
    }

    /// Pull mode: a new bitmap takes over recording and the old one is
    /// frozen (one `transaction`), the old one's dirty extents are read
    /// over NBD and copied, then it is removed.
    fn pull(&mut self, k: usize) -> Result<Extents, Stop> {
        let old = std::mem::replace(&mut self.bitmap, format!("bk{k}"));
        let add = Op::Add {
            name: self.bitmap.clone(),
            gbits: self.chain.gbits,
            persistent: self.chain.persistent,
            disabled: false,
        };
        let disable = Op::Disable { name: old.clone() };
        let remove = Op::Remove { name: old.clone() };
        let data = |op: &Op| oracle::qmp_command(op).expect("a bitmap operation").1;
        let actions = json!([
            {"type": "block-dirty-bitmap-add", "data": data(&add)},
            {"type": "block-dirty-bitmap-disable", "data": data(&disable)},
        ]);
        if let Err(e) = qb::transaction(running(&mut self.daemon)?, actions)? {
            return Err(refused("the pull's transaction", e));
        }
        self.model.apply(&add);
        self.model.apply(&disable);
        let x = match qb::pull(
            running(&mut self.daemon)?,
            &format!("p{k}"),
            &old,
            self.opts.limits.timeout,
        )? {
            Ok(x) => x,
            Err(e) => return Err(refused(&format!("to export bitmap {old:?}"), e)),
        };
        if let Err(e) = running(&mut self.daemon)?
            .execute(
                "block-dirty-bitmap-remove",
                json!({"node": NODE, "name": old}),
            )?
            .ok()
        {
            return Err(refused(&format!("removing bitmap {old:?}"), e));
        }
        self.model.apply(&remove);
        Ok(x)
    }

    /// The checks of one backup point: the backup holds every byte the
    /// model requires, the restored chain equals the disk (as it was when
    /// the job started, `at`, when the guest wrote while it ran), and the
    /// disk holds what the guest wrote.
    fn check(
        &mut self,
        k: usize,
        must: &[(u64, u64)],
        extents: &Extents,
        at: Option<Vec<u8>>,
        r: &mut ChainResult,
    ) -> Result<(), Stop> {
        let mut p = Vec::new();
        let what = if k == 0 {
            "the full backup".to_owned()
        } else {
            format!("incremental {k} ({})", self.chain.mode.name())
        };
        let lacking = restore::missing(must, extents);
        if !lacking.is_empty() {
            p.push(format!(
                "{what} lacks {} byte(s) the model says it must hold (dirty since the last backup): {}",
                spec_model::semantics::granules::count(&lacking),
                restore::show(&lacking)
            ));
        }
        let now = qb::read_disk(self.guest()?).map_err(DaemonError::from)?;
        if let Some(s) = self.shadow.differs(&now) {
            p.push(format!("at backup point {k}: {s}"));
        }
        let disk = at.unwrap_or(now);
        let equal = match restore::difference(&self.restored, &disk) {
            None => true,
            Some((at, n)) => {
                p.push(format!(
                    "the chain restored up to {what} differs from the disk: {n} byte(s), the first at {at:#x}"
                ));
                false
            }
        };
        let held = restore::covered(extents);
        let required = spec_model::semantics::granules::count(must);
        let held_n = spec_model::semantics::granules::count(&held);
        r.counts.extra_bytes += spec_model::semantics::granules::count(
            &spec_model::semantics::granules::subtract(&held, must),
        );
        r.counts.bytes_compared += disk.len() as u64;
        r.counts.restored += 1;
        r.points.push(Point {
            index: k,
            required,
            held: held_n,
            restored_equal: equal,
            problems: p.clone(),
        });
        if p.is_empty() {
            Ok(())
        } else {
            Err(Stop::Problems(p))
        }
    }
}
