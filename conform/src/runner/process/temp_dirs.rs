//! The runner's temporary directories, named for their owner so that a
//! later run can tell the ones a dead process left behind:
//! `qcow2-conform-KIND-PID-START-XXXXXX` in the system temporary directory
//! (`TMPDIR`), where `PID` is the owner's process ID and `START` its start
//! time (field 22 of `/proc/PID/stat`, clock ticks since boot), so that a
//! reused PID does not keep a dead owner's directory alive.
//!
//! [`scratch`] makes one (removed when dropped, as `tempfile` does) and
//! holds an exclusive `flock` on the directory itself for its whole life;
//! [`sweep`] (called when `run` and `campaign` start) removes every such
//! directory whose owner is no longer running: one a runner killed with
//! SIGKILL left, with whatever its programs wrote there.
//!
//! The name alone cannot tell a dead owner from a live one in another PID
//! namespace (`unshare --pid`: its PID means another process here), so
//! the lock decides: a directory is removed only when its name's owner is
//! not running here and the sweep can take its lock (nobody holds it).
//! The lock is taken on the open directory before it gets its name, and
//! the programs under test cannot remove or replace the directory (they
//! may write inside it, not in its parent).

use rustix::fs::{flock, FlockOperation};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The start time of process `pid`, if it is running.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the command: state (field 3) ... starttime (field 22).
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's tag: `PID-START`.
fn own_tag() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", start_time(pid).unwrap_or(0))
}

/// A scratch directory, locked while it lives, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// The directory, open and `flock`ed.
    lock: File,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory is still there, the one this run made (not
    /// removed, not replaced).
    pub fn intact(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::symlink_metadata(&self.path), self.lock.metadata()) {
            (Ok(now), Ok(made)) => {
                now.is_dir() && now.ino() == made.ino() && now.dev() == made.dev()
            }
            _ => false,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh scratch directory `qcow2-conform-KIND-PID-START-XXXXXX`,
/// locked before it gets that name (it is made as `.qcow2-conform-new-*`,
/// which no sweep looks at, locked, then renamed), so that a sweep never
/// finds it unlocked while its owner lives.
pub fn scratch(kind: &str) -> std::io::Result<Scratch> {
    let staging = tempfile::Builder::new()
        .prefix(".qcow2-conform-new-")
        .tempdir()?;
    let lock = File::open(staging.path())?;
    flock(&lock, FlockOperation::LockExclusive)?;
    let random = staging
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(".qcow2-conform-new-"))
        .unwrap_or("x")
        .to_owned();
    let parent = staging.path().parent().unwrap_or(Path::new("/")).to_owned();
    let path = parent.join(format!("qcow2-conform-{kind}-{}-{random}", own_tag()));
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        staging.path(),
        rustix::fs::CWD,
        &path,
        rustix::fs::RenameFlags::NOREPLACE,
    )?;
    // Renamed: the staging name is gone, the guard must not remove it.
    let _ = staging.keep();
    Ok(Scratch { path, lock })
}

/// `name` inside the directory open as `dir`, by a path that does not
/// depend on how long the directory's own path is
/// (`/proc/self/fd/N/NAME`): a Unix socket's path must fit in 108 bytes,
/// and `TMPDIR` may be long. Valid while `dir` is open, in this process.
pub fn short_path(dir: &File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Whether nobody holds the lock of directory `path`: its owner is gone
/// (the kernel releases a lock when its holder dies, however it dies).
fn abandoned(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    // The lock taken here is released when `f` closes.
    flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// The owner `(pid, start)` a directory name carries, if it is one of the
/// runner's.
fn owner(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("qcow2-conform-")?;
    let mut parts = rest.split('-');
    let _kind = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, start))
}

/// Whether the owner `(pid, start)` is still running.
fn alive((pid, start): (u32, u64)) -> bool {
    start_time(pid).is_some_and(|s| s == start || start == 0)
}

/// Removes the scratch directories of dead owners in `dir`; returns the
/// ones removed.
pub fn sweep_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in list.flatten() {
        let name = e.file_name();
        let Some(o) = name.to_str().and_then(owner) else {
            continue;
        };
        if alive(o) || !e.file_type().is_ok_and(|t| t.is_dir()) || !abandoned(&e.path()) {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// [`sweep_in`] the system temporary directory, saying on stderr what was
/// removed.
pub fn sweep() {
    for p in sweep_in(&std::env::temp_dir()) {
        eprintln!(
            "qcow2-conform: removed {} (left by a runner that is no longer running)",
            p.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::runner::process::temp_dirs::*;

    #[test]
    fn dead_owners_directories_go_and_live_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let mine = tmp
            .path()
            .join(format!("qcow2-conform-run-{}-x1", own_tag()));
        // PID 4194304 is above Linux's PID limit: never running.
        let dead = tmp.path().join("qcow2-conform-run-4194304-77-x2");
        let reused = tmp.path().join(format!(
            "qcow2-conform-campaign-{}-1-x3",
            std::process::id()
        ));
        let other = tmp.path().join("qcow2-conform-run-notmine");
        for d in [&mine, &dead, &reused, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
        }
        // A dead-looking owner's directory that is locked (its owner lives
        // in another PID namespace) stays.
        let locked = tmp.path().join("qcow2-conform-run-4194304-78-x4");
        std::fs::create_dir(&locked).unwrap();
        let held = File::open(&locked).unwrap();
        flock(&held, FlockOperation::LockExclusive).unwrap();
        let mut removed = sweep_in(tmp.path());
        removed.sort();
        let mut want = vec![dead.clone(), reused.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(mine.exists() && other.exists() && locked.exists());
        let s = scratch("run").unwrap();
        assert!(s.intact());
        // Its lock is held: a sweep (here, of a dead-looking copy of its
        // name) cannot take it.
        assert!(!abandoned(s.path()));
        let gone = s.path().to_owned();
        std::fs::rename(&gone, tmp.path().join("moved")).unwrap();
        assert!(!s.intact());
        std::fs::rename(tmp.path().join("moved"), &gone).unwrap();
        let name = s.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            owner(&name),
            Some((std::process::id(), start_time(std::process::id()).unwrap()))
        );
        drop(s);
        assert!(!gone.exists());
    }
}
