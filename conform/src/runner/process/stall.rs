//! Stalls: a program that spins without doing anything the system can
//! see is ended as a hang before its time limit.
//!
//! A program hangs when it does not end within its limit. Most hangs seen
//! in the matrix are loops that never leave user space: a reader that
//! keeps recomputing the same cluster, a library that retries a read of
//! zero bytes in memory. Waiting for the whole limit (30 s by default)
//! for each of them was most of a matrix run's time. While the program
//! runs, its process tree is sampled from `/proc` (only on a worker of a
//! run, and only after [`FIRST_LOOK`]): a sample is, for every process the
//! keeper's program started, its read and write system calls and bytes
//! (`/proc/PID/io`), the voluntary context switches of each of its
//! threads (every wait: a blocking read, a futex, a sleep), the file
//! pages it has mapped (`RssFile`: a reader that maps the image reads it
//! through page faults, not system calls) and its processor time. When
//! the program has used the run's stall time
//! ([`crate::runner::schedule::Scheduling::stall`], `run --stall`, 2 s by
//! default) of *processor* time while nothing else in the sample changed
//! — no read or write, no wait, no new page of a file, no process started
//! or ended — it is ended the way a program at its limit is, and graded a
//! hang. Anonymous memory is not part of a sample: one of the matrix's
//! hangs (a Python reader looping over the same clusters) grows by a few
//! megabytes a second and never reads again.
//!
//! What this can change: a program that computes for longer than the
//! stall time without a single read, write or wait and then ends by
//! itself within its limit (or reaches its memory limit first). Reading a
//! disk image does not work that way (every cluster comes from a read);
//! `conform/tests/step_aside.rs` checks that the outcomes of the
//! implementations with hangs in the matrix are the same with and without
//! stalls, and `conform/tests/stall.rs` what is and is not a stall.
//!
//! The stall time is processor time, not wall time: a loaded machine
//! slows the program and its stall clock alike. A program the runner
//! cannot sample (its `/proc` files unreadable) is never a stall; it runs
//! to its limit as before.

use super::procfs;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How long a program runs before its tree is first sampled: most
/// programs have ended by then, and they cost no `/proc` reading at all.
pub const FIRST_LOOK: Duration = Duration::from_millis(250);

/// Time between two samples.
const EVERY: Duration = Duration::from_millis(200);

/// The default stall time: processor time spent without any visible
/// activity.
pub const DEFAULT_STALL: Duration = Duration::from_secs(2);

/// What the runner saw of one process of the tree, but its processor
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Activity {
    /// rchar, wchar, syscr, syscw of `/proc/PID/io`.
    io: [u64; 4],
    /// The sum of every thread's voluntary context switches.
    waits: u64,
    /// Kilobytes of mapped file pages in memory (`RssFile`).
    file_pages: u64,
}

/// One sample of a program's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sample {
    activity: BTreeMap<u32, Activity>,
    /// User and system time of the tree, in clock ticks.
    ticks: u64,
}

/// How a program stalled, for its report.
#[derive(Debug, Clone)]
pub struct Stall {
    /// Processor time spent without visible activity.
    pub spun: Duration,
}

/// The watch over one program: feed it [`Watch::look`] while the program
/// runs.
#[derive(Debug)]
pub struct Watch {
    keeper: u32,
    stall: Duration,
    next: Instant,
    /// The activity last seen change, and the processor time then.
    quiet_since: Option<(BTreeMap<u32, Activity>, u64)>,
    /// The last sample found the activity unchanged and processor time
    /// spent since it last changed.
    spinning: bool,
    tick: u64,
}

impl Watch {
    /// A watch over the program under `keeper` (its process, not part of
    /// the tree watched) that calls a stall after `stall` of processor
    /// time.
    pub fn new(keeper: u32, stall: Duration, started: Instant) -> Watch {
        // SAFETY: `sysconf` reads a constant of the system.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Watch {
            keeper,
            stall,
            next: started + FIRST_LOOK,
            quiet_since: None,
            spinning: false,
            tick: u64::try_from(tick).ok().filter(|&t| t > 0).unwrap_or(100),
        }
    }

    /// Samples the tree when a sample is due; `Some` once the program has
    /// stalled.
    pub fn look(&mut self) -> Option<Stall> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + EVERY;
        self.spinning = false;
        let Some(sample) = sample(self.keeper) else {
            // Nothing readable (or nothing running): start again.
            self.quiet_since = None;
            return None;
        };
        match &self.quiet_since {
            Some((activity, ticks)) if *activity == sample.activity => {
                let spun =
                    Duration::from_millis(sample.ticks.saturating_sub(*ticks) * 1000 / self.tick);
                self.spinning = !spun.is_zero();
                (spun >= self.stall).then_some(Stall { spun })
            }
            _ => {
                self.quiet_since = Some((sample.activity, sample.ticks));
                None
            }
        }
    }

    /// The program is spinning: since its activity last changed it has
    /// only spent processor time. It keeps its worker and its priority
    /// rather than step aside ([`crate::runner::process::slots`]), so
    /// that its stall time passes at full speed: at the lowest priority
    /// on a busy machine it would get almost no processor time and run
    /// to its limit after all.
    pub fn spinning(&self) -> bool {
        self.spinning
    }
}

/// Every process below `keeper` with its [`procfs::stat_fields`], from
/// each process's parent.
fn tree(keeper: u32) -> Vec<(u32, Vec<u64>)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut stats: HashMap<u32, Vec<u64>> = HashMap::new();
    for pid in procfs::pids() {
        if let Some(f) = procfs::stat_fields(pid) {
            if let Some(&ppid) = f.get(procfs::PPID) {
                children.entry(ppid as u32).or_default().push(pid);
                stats.insert(pid, f);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![keeper];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if let Some(f) = stats.remove(&c) {
                out.push((c, f));
                todo.push(c);
            }
        }
    }
    out
}

/// The voluntary context switches of every thread of `pid`, and the
/// kilobytes of files it has mapped (`RssFile`: a program reading an image
/// through `mmap` touches new file pages without a system call).
fn waits_and_file_pages(pid: u32) -> Option<(u64, u64)> {
    let mut waits = 0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let file_pages = procfs::status_field(&status, "RssFile")?;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let status = std::fs::read_to_string(t.path().join("status")).ok()?;
        waits += procfs::status_field(&status, "voluntary_ctxt_switches")?;
    }
    Some((waits, file_pages))
}

/// A sample of the tree below `keeper`; `None` when it is empty or a
/// process of it cannot be read (then nothing can be said of it).
fn sample(keeper: u32) -> Option<Sample> {
    let procs = tree(keeper);
    if procs.is_empty() {
        return None;
    }
    let mut activity = BTreeMap::new();
    let mut ticks = 0;
    for (pid, f) in procs {
        ticks += f.get(procfs::UTIME)? + f.get(procfs::STIME)?;
        let (waits, file_pages) = waits_and_file_pages(pid)?;
        activity.insert(
            pid,
            Activity {
                io: procfs::io_counts(pid)?,
                waits,
                file_pages,
            },
        );
    }
    Some(Sample { activity, ticks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// A keeper stand-in: `sh` running the program as its child.
    fn start(script: &str) -> std::process::Child {
        Command::new("sh")
            .args(["-c", &format!("{script} & wait")])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts `script` under `sh` and watches it for up to `within`
    /// with stall time `stall`; kills it after.
    fn watched(script: &str, stall: Duration, within: Duration) -> Option<Stall> {
        let mut c = start(script);
        let mut w = Watch::new(c.id(), stall, Instant::now());
        let end = Instant::now() + within;
        let mut got = None;
        while got.is_none() && Instant::now() < end {
            got = w.look();
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("pkill")
            .args(["-P", &c.id().to_string()])
            .status();
        let _ = c.kill();
        let _ = c.wait();
        got
    }

    #[test]
    fn a_program_spinning_in_user_space_stalls() {
        let half = Duration::from_millis(500);
        let s = watched(
            "python3 -c 'while True: pass'",
            half,
            Duration::from_secs(20),
        );
        let s = s.expect("a spin with no system call is a stall");
        assert!(s.spun >= half);
    }

    #[test]
    fn a_program_that_reads_or_waits_does_not_stall() {
        // Reads all the time, and sleeps: neither is a stall, however long.
        let reads =
            "python3 -c 'f = open(\"/dev/zero\", \"rb\", buffering=0)\nwhile True: f.read(1)'";
        let s = watched(reads, Duration::from_millis(300), Duration::from_secs(3));
        assert!(s.is_none(), "{s:?}");
        // Reads a file through `mmap`, page after page, with no system
        // call: each new page of the file is activity.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("image");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let mapped = format!(
            "python3 -c 'import mmap\nf = open(\"{}\", \"rb\")\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n\
             for o in range(0, 256 << 20, 4096): m[o]; sum(range(3000))'",
            file.display()
        );
        let s = watched(&mapped, Duration::from_millis(300), Duration::from_secs(2));
        assert!(s.is_none(), "a program reading a mapped file: {s:?}");
        let s = watched("sleep 5", Duration::from_millis(1), Duration::from_secs(2));
        assert!(
            s.is_none(),
            "a sleeping program spends no processor time: {s:?}"
        );
    }
}
