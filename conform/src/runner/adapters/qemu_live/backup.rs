//! The pieces of an incremental backup against a running daemon, as a
//! backup application drives them: a target image attached as a node
//! (`blockdev-add`), a `blockdev-backup` job (full, `sync=bitmap` with a
//! `bitmap-mode`, `sync=incremental`) waited on until it concludes, the
//! target detached again, and pull mode: an export carrying a bitmap
//! whose dirty extents a backup client reads over NBD
//! (`qemu:dirty-bitmap:NAME`) and copies, data and all. What the chain
//! must contain and how it is restored are the campaign's
//! (`crate::campaign::backup`).

use super::daemon::{Daemon, DaemonError, NODE};
use super::nbd::{NbdClient, NbdError};
use super::qmp::{Refused, Reply};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How an incremental backup is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `blockdev-backup sync=bitmap bitmap-mode=on-success`.
    BitmapOnSuccess,
    /// `sync=bitmap bitmap-mode=never`: the bitmap is never cleared, so
    /// each incremental holds everything since the full backup.
    BitmapNever,
    /// `sync=bitmap bitmap-mode=always`.
    BitmapAlways,
    /// `sync=incremental` (on-success implied).
    Incremental,
    /// Pull mode: the bitmap exported over NBD, its dirty extents read
    /// and copied by the suite's own client.
    Pull,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 5] = [
        Mode::BitmapOnSuccess,
        Mode::BitmapNever,
        Mode::BitmapAlways,
        Mode::Incremental,
        Mode::Pull,
    ];

    /// The name used in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Mode::BitmapOnSuccess => "bitmap-on-success",
            Mode::BitmapNever => "bitmap-never",
            Mode::BitmapAlways => "bitmap-always",
            Mode::Incremental => "incremental",
            Mode::Pull => "pull",
        }
    }

    /// Whether a successful backup leaves the bitmap empty (the writes
    /// it copied are no longer dirty).
    pub fn clears_on_success(self) -> bool {
        !matches!(self, Mode::BitmapNever)
    }

    /// Whether a failed job must leave the bitmap as it was (`always`
    /// clears what it did copy; pull mode runs no job).
    pub fn keeps_bitmap_on_failure(self) -> bool {
        matches!(
            self,
            Mode::BitmapOnSuccess | Mode::BitmapNever | Mode::Incremental
        )
    }

    /// The `blockdev-backup` arguments of an incremental backup of
    /// `bitmap` to node `target`; `None` for pull mode.
    pub fn backup_arguments(self, job: &str, target: &str, bitmap: &str) -> Option<Value> {
        let mut a = json!({"job-id": job, "device": NODE, "target": target,
                           "bitmap": bitmap, "auto-dismiss": false});
        match self {
            Mode::Pull => return None,
            Mode::Incremental => a["sync"] = json!("incremental"),
            _ => {
                a["sync"] = json!("bitmap");
                a["bitmap-mode"] = json!(match self {
                    Mode::BitmapNever => "never",
                    Mode::BitmapAlways => "always",
                    _ => "on-success",
                });
            }
        }
        Some(a)
    }
}

/// The `blockdev-backup` arguments of a full backup to node `target`.
pub fn full_arguments(job: &str, target: &str) -> Value {
    json!({"job-id": job, "device": NODE, "target": target, "sync": "full",
           "auto-dismiss": false})
}

/// QEMU's answer as `Ok(value)` or its refusal.
fn answer(d: &mut Daemon, cmd: &str, args: Value) -> Result<Result<Value, Refused>, DaemonError> {
    Ok(d.execute(cmd, args)?.ok())
}

/// How a backup target's data writes behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An ordinary file.
    Plain,
    /// Over a `blkdebug` layer that fails every guest data write with
    /// EIO: a backup to it fails once it has data to copy.
    FailingWrites,
}

/// Attaches the qcow2 image at `path` as node `node`, read-write, as a
/// backup target (`backing: null`: a target is made without one and QEMU
/// is given no name to follow), its file node inline as `kind` says.
pub fn attach_target(
    d: &mut Daemon,
    node: &str,
    path: &Path,
    kind: Target,
) -> Result<Result<(), Refused>, DaemonError> {
    let file = json!({"driver": "file", "filename": path.to_string_lossy()});
    let file = match kind {
        Target::Plain => file,
        Target::FailingWrites => json!({"driver": "blkdebug",
               "inject-error": [{"event": "write_aio", "errno": 5}],
               "image": file}),
    };
    Ok(answer(
        d,
        "blockdev-add",
        json!({"driver": "qcow2", "node-name": node, "backing": null, "file": file}),
    )?
    .map(drop))
}

/// Detaches node `node` (its image is flushed and closed).
pub fn detach(d: &mut Daemon, node: &str) -> Result<Result<(), Refused>, DaemonError> {
    Ok(answer(d, "blockdev-del", json!({"node-name": node}))?.map(drop))
}

/// Runs `transaction` with `actions` (each `{type, data}`).
pub fn transaction(d: &mut Daemon, actions: Value) -> Result<Result<(), Refused>, DaemonError> {
    Ok(answer(d, "transaction", json!({"actions": actions}))?.map(drop))
}

/// Starts `blockdev-backup` with `args` (whose `auto-dismiss` is false) and
/// waits until job `job` concludes; dismisses it. `Ok(Err(_))`: QEMU
/// refused the job or the job failed (its error).
pub fn run_job(
    d: &mut Daemon,
    args: Value,
    timeout: Duration,
) -> Result<Result<(), Refused>, DaemonError> {
    let job = args["job-id"].as_str().unwrap_or_default().to_owned();
    if let Err(e) = answer(d, "blockdev-backup", args)? {
        return Ok(Err(e));
    }
    wait_job(d, &job, timeout)
}

/// Starts `blockdev-backup` with `args` and returns at once (the job runs
/// on; [`wait_job`] waits for it). `Ok(Err(_))`: QEMU refused the job.
pub fn start_job(d: &mut Daemon, args: Value) -> Result<Result<(), Refused>, DaemonError> {
    Ok(answer(d, "blockdev-backup", args)?.map(drop))
}

/// Job `job`'s status and bytes done as `query-jobs` lists them (`None`:
/// no such job).
pub fn job_state(d: &mut Daemon, job: &str) -> Result<Option<(String, u64)>, DaemonError> {
    let jobs = answer(d, "query-jobs", json!({}))?.map_err(|e| DaemonError::Answer {
        command: "query-jobs".into(),
        detail: e.0,
    })?;
    Ok(jobs
        .as_array()
        .and_then(|a| a.iter().find(|j| j["id"] == job))
        .map(|j| {
            (
                j["status"].as_str().unwrap_or_default().to_owned(),
                j["current-progress"].as_u64().unwrap_or(0),
            )
        }))
}

/// Sets job `job`'s speed limit in bytes per second (0: none).
pub fn set_speed(
    d: &mut Daemon,
    job: &str,
    speed: u64,
) -> Result<Result<(), Refused>, DaemonError> {
    Ok(answer(
        d,
        "block-job-set-speed",
        json!({"device": job, "speed": speed}),
    )?
    .map(drop))
}

/// Cancels job `job` (`Ok(Err(_))`: QEMU refused, e.g. the job had
/// concluded already).
pub fn cancel(d: &mut Daemon, job: &str) -> Result<Result<(), Refused>, DaemonError> {
    Ok(answer(d, "job-cancel", json!({"id": job}))?.map(drop))
}

/// Waits until job `job` concludes, then dismisses it: its error, if any.
pub fn wait_job(
    d: &mut Daemon,
    job: &str,
    timeout: Duration,
) -> Result<Result<(), Refused>, DaemonError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let jobs = answer(d, "query-jobs", json!({}))?.map_err(|e| DaemonError::Answer {
            command: "query-jobs".into(),
            detail: e.0,
        })?;
        let me = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["id"] == job).cloned());
        let Some(me) = me else {
            return Err(DaemonError::Answer {
                command: "query-jobs".into(),
                detail: format!("job {job} vanished before it concluded"),
            });
        };
        if me["status"] == "concluded" {
            let error = me["error"].as_str().map(str::to_owned);
            if let Err(e) = answer(d, "job-dismiss", json!({"id": job}))? {
                return Err(DaemonError::Answer {
                    command: "job-dismiss".into(),
                    detail: e.0,
                });
            }
            return Ok(error.map_or(Ok(()), |e| Err(Refused(e))));
        }
        if start.elapsed() > timeout {
            return Err(DaemonError::Answer {
                command: "blockdev-backup".into(),
                detail: format!("job {job} did not conclude within {timeout:?}: {me}"),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Extents copied by a backup: (virtual offset, bytes), ascending.
pub type Extents = Vec<(u64, Vec<u8>)>;

/// The largest single NBD read a pull issues.
const PULL_READ: u64 = 1 << 20;

/// Pull mode: bitmap `bitmap` exported (read-only) as `export`, its dirty
/// extents read over NBD with the `qemu:dirty-bitmap:NAME` context, and
/// the data of those extents read over the same connection; the export
/// removed again. `Ok(Err(_))`: QEMU refused to export the bitmap.
pub fn pull(
    d: &mut Daemon,
    export: &str,
    bitmap: &str,
    timeout: Duration,
) -> Result<Result<Extents, Refused>, DaemonError> {
    let add = d.execute(
        "block-export-add",
        json!({"type": "nbd", "id": export, "node-name": NODE, "name": export,
               "writable": false, "bitmaps": [bitmap]}),
    )?;
    if let Reply::Error(e) = add {
        return Ok(Err(Refused(e)));
    }
    let ctx = format!("qemu:dirty-bitmap:{bitmap}");
    let read =
        NbdClient::connect(&d.nbd_socket(), export, Some(&ctx), timeout).and_then(|mut c| {
            let r = read_extents(&mut c);
            c.disconnect();
            r
        });
    let del = d.execute("block-export-del", json!({"id": export, "mode": "hard"}))?;
    if let Reply::Return(_) = del {
        d.wait_export_gone(export)?;
    }
    match read {
        Ok(x) => Ok(Ok(x)),
        Err(e @ (NbdError::NoContext(_) | NbdError::OptionRefused { .. })) => {
            Ok(Err(Refused(e.to_string())))
        }
        Err(e) => Err(e.into()),
    }
}

fn read_extents(c: &mut NbdClient) -> Result<Extents, NbdError> {
    let mut out = Vec::new();
    for (start, end) in c.dirty_extents()? {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(PULL_READ);
            out.push((pos, c.read(pos, n as u32)?));
            pos += n;
        }
    }
    Ok(out)
}

/// The whole virtual disk as the guest export reads it now.
pub fn read_disk(c: &mut NbdClient) -> Result<Vec<u8>, NbdError> {
    let mut out = Vec::with_capacity(c.size as usize);
    let mut pos = 0;
    while pos < c.size {
        let n = (c.size - pos).min(PULL_READ);
        out.extend(c.read(pos, n as u32)?);
        pos += n;
    }
    Ok(out)
}
