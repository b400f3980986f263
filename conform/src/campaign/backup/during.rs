//! What happens to a backup job while it runs: guest writes issued during
//! an incremental's job, and a job cancelled part-way.
//!
//! Both follow QEMU's bitmaps.rst and the `bitmap-mode` descriptions of
//! its QAPI schema, in this project's words:
//! - a backup's point in time is when its job starts: writes made while
//!   it runs reach the disk, not the backup, and are recorded in the
//!   bitmap for the next incremental (on success, the bitmap keeps
//!   exactly them in the clearing modes, everything in `never`);
//! - when the job fails (a cancel is a failure), `on-success`,
//!   `incremental` and `never` leave the bitmap as it was, with the
//!   writes since added; `always` synchronises it anyway: what the job
//!   copied is no longer dirty, what it did not copy still is. The model
//!   cannot know which clusters the job reached, so after a cancelled
//!   `always` job it requires no bit and allows every granule of a backup
//!   cluster (64 KiB) that was dirty; the partial backup joins the chain,
//!   and the restore at the next point shows any cluster the bitmap
//!   dropped without the job having copied it.

use super::{refused, running, ChainResult, Run, Stop};
use crate::campaign::backup::restore::{self, Extents};
use crate::runner::adapters::qemu_live::backup as qb;
use crate::runner::adapters::qemu_live::backup::Mode;
use crate::runner::adapters::qemu_live::daemon::DaemonError;
use crate::runner::adapters::qemu_live::oracle;
use serde_json::json;
use spec_model::semantics::{granules, DiscardMode, Op};
use std::time::{Duration, Instant};

/// The speed limit (bytes per second) a job runs under while the guest
/// writes or before it is cancelled: slow enough that it is still running
/// when the harness acts.
const SLOW: u64 = 1;

/// `args` of a job made slow: one 64 KiB chunk at a time by one worker
/// (QEMU's `x-perf`), under [`SLOW`]: it copies its first cluster, then
/// waits, so that it is still running while the harness acts (when more
/// than one cluster is dirty).
fn slow(args: &mut serde_json::Value) {
    args["speed"] = json!(SLOW);
    args["x-perf"] = json!({"max-workers": 1, "max-chunk": 1u64 << JOB_CLUSTER_BITS});
}

/// log2 of the cluster size a backup job copies in (QEMU's default for a
/// target of 64 KiB clusters, as the chain's targets are).
const JOB_CLUSTER_BITS: u8 = 16;

impl Run<'_> {
    /// A push incremental whose job runs slowly while the guest issues
    /// `during`, then at full speed until it concludes. Returns the
    /// backup's extents and the disk as it was when the job started;
    /// counts in `r` a job still running after the writes.
    pub(super) fn push_during(
        &mut self,
        k: usize,
        during: &[Op],
        r: &mut ChainResult,
    ) -> Result<(Extents, Vec<u8>), Stop> {
        let start = qb::read_disk(self.guest()?).map_err(DaemonError::from)?;
        let (node, path) = self.target(k)?;
        let job = format!("j{k}");
        self.start_slow(&job, &node, &format!("incremental backup {k}"))?;
        for op in during {
            if let Err(e) = oracle::execute(running(&mut self.daemon)?, &mut self.guest, op)? {
                return Err(refused(&format!("{op:?} while backup {k} runs"), e));
            }
            self.shadow.apply(op);
        }
        // The job may have concluded already (nothing to copy).
        if let Some((status, _)) = qb::job_state(running(&mut self.daemon)?, &job)? {
            if status == "running" {
                r.counts.written_during += 1;
            }
        }
        let _ = qb::set_speed(running(&mut self.daemon)?, &job, 0)?;
        let done = qb::wait_job(running(&mut self.daemon)?, &job, self.opts.limits.timeout)?;
        // The bitmap as the job found it is consumed (clearing modes);
        // the writes made while it ran are recorded either way.
        self.incremental_done(k, &node, done)?;
        // While the job runs, its copy-before-write filter sits above the
        // node, and QEMU 10.0.2 drops discards there (not opened with the
        // node's `discard=unmap`): a dropped discard changes nothing, so
        // no bit is required for it, as on a `discard=ignore` node. Were
        // it carried out unrecorded, the next point's restore would show.
        let node_discard = std::mem::replace(&mut self.model.discard, DiscardMode::Ignore);
        for op in during {
            self.model.apply(op);
        }
        self.model.discard = node_discard;
        if self.opts.bare {
            return Ok((Vec::new(), start));
        }
        let x = restore::image_extents(&path)
            .map_err(|e| Stop::Problems(vec![format!("incremental backup {k}: {e}")]))?;
        Ok((x, start))
    }

    /// A backup job slowed down and cancelled once it has started (or
    /// concluded, if it was faster), before incremental `k`. Its partial
    /// backup joins the restored chain; the bitmap is judged as the mode
    /// says for a failed job (see the module's notes).
    pub(super) fn cancelled_backup(&mut self, k: usize, r: &mut ChainResult) -> Result<(), Stop> {
        let (node, path) = self.new_target(
            format!("c{k}"),
            &format!("cancelled{k}"),
            qb::Target::Plain,
            "the target of the cancelled backup",
        )?;
        let job = format!("cj{k}");
        self.start_slow(
            &job,
            &node,
            &format!("the backup cancelled before incremental {k}"),
        )?;
        // Cancelled once it has copied something, or after a moment when
        // it has not (nothing dirty, or not started yet).
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            match qb::job_state(running(&mut self.daemon)?, &job)? {
                Some((status, done)) if status == "running" && done == 0 => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => break,
            }
        }
        let _ = qb::cancel(running(&mut self.daemon)?, &job)?;
        let done = qb::wait_job(running(&mut self.daemon)?, &job, self.opts.limits.timeout)?;
        if let Err(e) = qb::detach(running(&mut self.daemon)?, &node)? {
            return Err(refused("detaching the cancelled backup's target", e));
        }
        let mode = self.chain.mode;
        match done {
            Err(_) => {
                r.counts.failed_jobs += 1;
                if mode == Mode::BitmapAlways {
                    self.forget_what_may_be_copied();
                }
            }
            Ok(()) if mode.clears_on_success() => self.model.apply(&Op::Clear {
                name: self.bitmap.clone(),
            }),
            Ok(()) => {}
        }
        if self.opts.bare {
            return Ok(());
        }
        let extents = restore::image_extents(&path)
            .map_err(|e| Stop::Problems(vec![format!("the cancelled backup {k}: {e}")]))?;
        restore::apply(&mut self.restored, &extents);
        let how = if done.is_err() {
            "cancelled"
        } else {
            "finished before its cancel"
        };
        self.agree(&format!("after a backup job {how} before incremental {k}"))
    }

    /// Starts job `job` of the chain's mode to node `node`, made slow
    /// ([`slow`]); a refusal is a problem about `what`.
    fn start_slow(&mut self, job: &str, node: &str, what: &str) -> Result<(), Stop> {
        let mut args = self.push_arguments(job, node);
        slow(&mut args);
        match qb::start_job(running(&mut self.daemon)?, args)? {
            Ok(()) => Ok(()),
            Err(e) => Err(refused(what, e)),
        }
    }

    /// After a failed `always` job: no bit of the chain's bitmap is
    /// required any more, and every granule of a job cluster that held a
    /// dirty one may stay set.
    fn forget_what_may_be_copied(&mut self) {
        let size = self.chain.size;
        if let Some(b) = self.model.bitmaps.get_mut(&self.bitmap) {
            let dirty = granules::merge(b.bits.iter().chain(&b.unspecified).copied().collect());
            let clusters =
                granules::regranulate(&dirty, b.gbits, JOB_CLUSTER_BITS.max(b.gbits), size);
            b.unspecified =
                granules::regranulate(&clusters, JOB_CLUSTER_BITS.max(b.gbits), b.gbits, size);
            b.bits.clear();
        }
    }
}
