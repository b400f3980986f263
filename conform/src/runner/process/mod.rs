//! Running one program of an implementation under test: its own process
//! group under a keeper ([`containment`]: everything it starts ends with
//! it, and it dies with the runner), a wall-clock limit, an early end
//! when it spins ([`stall`]), an optional address-space limit
//! (`RLIMIT_AS`, set by the program on itself before exec), and its output
//! read while it runs within fixed caps ([`output`]).

pub mod case_env;
pub mod containment;
pub mod output;
pub mod procfs;
pub mod sandbox;
pub mod signals;
pub mod slots;
pub mod stall;
pub mod temp_dirs;

use crate::runner::text::{command_line, ADDRESS_LIMIT_ENV};
pub use output::{STDERR_KEEP, STDOUT_CAP};
use serde::Serialize;
use std::ffi::OsStr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Per-process limits for a program under test.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time of one process; the whole process group is killed
    /// when it runs out.
    pub timeout: Duration,
    /// Address-space limit (`RLIMIT_AS`, shown as util-linux `prlimit --as`);
    /// `None` for no limit.
    pub memory_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: None,
        }
    }
}

/// How many bytes of a program's standard error a report keeps.
pub const STDERR_EXCERPT: usize = 4000;

/// Text that sanitizers (ASan, UBSan, LSan, TSan, MSan) print when they
/// find something; any of it in standard error makes the run a crash.
const SANITIZER_MARKERS: &[&str] = &[
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: ThreadSanitizer",
    "WARNING: MemorySanitizer",
    "UndefinedBehaviorSanitizer",
    ": runtime error: ",
];

/// How one program run ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Proc {
    /// The command line as run, quoted for a shell.
    pub command: String,
    /// Exit status, when the program exited normally.
    pub status: Option<i32>,
    /// The signal that ended it, unless it was the runner's own kill after
    /// the time limit.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// With `timed_out`: the program was ended before its limit, having
    /// spun this many milliseconds of processor time without a read, a
    /// write or a wait ([`stall`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_ms: Option<u64>,
    /// Why the runner ended it for printing too much (standard output
    /// past [`STDOUT_CAP`]): "protocol answer larger than N bytes".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
    /// The runner ended it because it was asked to stop (SIGINT, SIGTERM).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    #[serde(skip)]
    pub stdout: String,
    #[serde(skip)]
    pub stderr: String,
    pub duration_ms: u64,
}

impl Proc {
    /// Exited normally with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The first sanitizer report line in standard error with its top
    /// frames ([`sanitizer_line`]), if any.
    pub fn sanitizer(&self) -> Option<String> {
        sanitizer_line(&self.stderr)
    }

    /// The first non-empty line of standard error (for error messages).
    pub fn first_error_line(&self) -> Option<String> {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !is_sanitizer_note(l))
            .map(str::to_owned)
    }

    /// It ended abnormally: ran out of time, died by a signal, printed
    /// too much, or was interrupted.
    pub fn ended_badly(&self) -> bool {
        self.timed_out || self.signal.is_some() || self.overflow.is_some() || self.interrupted
    }

    /// How it ended, in words.
    pub fn describe_end(&self) -> String {
        if let Some(o) = &self.overflow {
            return format!("ended by the runner: {o}");
        }
        if self.interrupted {
            return "ended by the runner: the run was interrupted".into();
        }
        if let (true, Some(spun)) = (self.timed_out, self.stalled_ms) {
            return format!(
                "killed after {} ms, having spun {spun} ms of processor time without a read, \
                 a write or a wait (a stall: run --stall)",
                self.duration_ms
            );
        }
        if self.timed_out {
            return format!("killed after the time limit ({} ms)", self.duration_ms);
        }
        match (self.status, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
            _ => "unknown end".into(),
        }
    }
}

/// A line a sanitizer's runtime prints about itself rather than about a
/// defect (ASan's warnings on QEMU's coroutine stack switches: `==PID==WARNING:
/// ...`, "False positive error reports may follow"): not the program's
/// own error message.
pub fn is_sanitizer_note(line: &str) -> bool {
    let l = line.trim();
    (l.starts_with("==") && !SANITIZER_MARKERS.iter().any(|m| l.contains(m)))
        || l == "False positive error reports may follow"
        || l.starts_with("For details see https://github.com/google/sanitizers/")
}

/// How many stack frames of a sanitizer report name its bucket.
const SANITIZER_FRAMES: usize = 3;

/// How many lines after a sanitizer's first line its stack may start in.
const STACK_SEARCH: usize = 40;

/// The first line of `text` that carries a sanitizer marker, followed by
/// the functions of the top [`SANITIZER_FRAMES`] frames of the stack
/// printed after it (`#0 0x... in FUNCTION FILE:LINE`), as
/// `LINE (top frames: f0 < f1 < f2)`: the line says what went wrong, the
/// frames where, so that one defect reached from two places makes two
/// buckets and two runs of one defect (other addresses, another process
/// ID, which the cause's normalisation removes) make one.
pub fn sanitizer_line(text: &str) -> Option<String> {
    let mut lines = text.lines();
    let first = lines
        .by_ref()
        .find(|l| SANITIZER_MARKERS.iter().any(|m| l.contains(m)))?
        .trim()
        .to_owned();
    // The first stack after the line (ASan may print a few `==PID==` notes
    // before it): its frames up to the first line that is not one.
    let frames: Vec<&str> = lines
        .map(str::trim)
        .take(STACK_SEARCH)
        .skip_while(|l| !l.starts_with('#'))
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "in").and_then(|_| w.next())
        })
        .take(SANITIZER_FRAMES)
        .collect();
    Some(if frames.is_empty() {
        first
    } else {
        format!("{first} (top frames: {})", frames.join(" < "))
    })
}

/// The conventional name of a signal number (Linux numbering).
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

/// `bytes`, lowered to the runner's own hard address-space limit: a
/// program cannot be given more than the runner has (raising it would
/// fail and the program would never start), so a runner started under a
/// limit passes that limit on instead.
fn within_own_limit(bytes: u64) -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    match getrlimit(Resource::RLIMIT_AS) {
        Ok((_, hard)) => bytes.min(hard),
        Err(_) => bytes,
    }
}

/// A command for `program args..`, its address space limited when the
/// limits carry a memory limit (set by the program on itself before exec;
/// shown as `prlimit --as=N --`, which does the same). The child leads
/// its own process group and runs under a keeper ([`containment`]): everything it starts ends with
/// it, and it dies with the runner. When the run is sandboxed
/// ([`sandbox`]) it may read the program's own directory besides the
/// system's and write only the thread's scratch directories.
pub fn command<S: AsRef<OsStr>>(program: &OsStr, args: &[S], limits: &Limits) -> Command {
    command_reading(program, args, limits, &[])
}

/// Puts the address-space limit of `limits` (within the runner's own) in
/// `cmd`'s environment, where [`command_line`] shows it as `prlimit
/// --as=BYTES --`, which is what the keeper does; the limit, if any.
fn mark_address_limit(cmd: &mut Command, limits: &Limits) -> Option<u64> {
    let bytes = limits.memory_bytes.map(within_own_limit)?;
    cmd.env(ADDRESS_LIMIT_ENV, bytes.to_string());
    Some(bytes)
}

/// The command line [`command`] would show for `program args` under
/// `limits` run in `dir`, for a step the runner did itself in that
/// program's stead (nothing is sandboxed or started).
pub fn shown_command_line<S: AsRef<OsStr>>(
    program: &OsStr,
    args: &[S],
    limits: &Limits,
    dir: &Path,
) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    mark_address_limit(&mut cmd, limits);
    command_line(&cmd)
}

/// Where programs write gcov counters (`GCOV_PREFIX`), when set by
/// [`set_gcov_prefix`].
static GCOV_PREFIX: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Every program started from now on writes the counters of a gcov build
/// beneath `dir` (the build's absolute paths below it); the first call
/// wins.
pub fn set_gcov_prefix(dir: &Path) {
    let _ = GCOV_PREFIX.set(dir.to_owned());
}

/// [`command`], with `reads` (an installation prefix, library
/// directories, an interpreter's script) readable in the sandbox too.
pub fn command_reading<S: AsRef<OsStr>>(
    program: &OsStr,
    args: &[S],
    limits: &Limits,
    reads: &[PathBuf],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let address_limit = mark_address_limit(&mut cmd, limits);
    cmd.process_group(0);
    if let Some(p) = GCOV_PREFIX.get() {
        cmd.env("GCOV_PREFIX", p).env("GCOV_PREFIX_STRIP", "0");
    }
    let restriction = sandbox::restriction(program, reads).map(|r| {
        r.map_err(|e| {
            eprintln!("qcow2-conform: {e}");
            libc::EPERM
        })
    });
    if restriction.is_some() {
        // Temporary files go where the program may write.
        match sandbox::writable_dirs().first() {
            Some(d) => cmd.env("TMPDIR", d),
            None => cmd.env_remove("TMPDIR"),
        };
    }
    containment::keep(&mut cmd, restriction, address_limit);
    if let Some(secret) = case_env::current() {
        cmd.env(case_env::ENV, secret);
    }
    cmd
}

/// Sends SIGKILL to every process of group `pgid`.
pub fn kill_group(pgid: u32) {
    containment::kill_group(pgid);
}

/// How long a keeper may take to end its program's tree after it was
/// asked to, before the runner kills the group outright.
const KEEPER_GRACE: Duration = Duration::from_secs(5);

/// What the threads of one run tell the waiting one.
enum Event {
    Exited(std::io::Result<std::process::ExitStatus>),
    /// Standard output passed [`STDOUT_CAP`].
    Overflow,
}

/// Ends the keeper `pid` and waits for it on `events` (up to
/// [`KEEPER_GRACE`], then kills the group); the exit status if it came.
fn end_and_wait(
    pid: u32,
    events: &mpsc::Receiver<Event>,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    containment::end(pid);
    let deadline = Instant::now() + KEEPER_GRACE;
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Exited(s)) => return Some(s),
            Ok(Event::Overflow) => {}
            Err(_) => {
                kill_group(pid);
                return events
                    .recv_timeout(KEEPER_GRACE)
                    .ok()
                    .and_then(|e| match e {
                        Event::Exited(s) => Some(s),
                        Event::Overflow => None,
                    });
            }
        }
    }
}

/// Runs `cmd` (built by [`command`]) to completion with stdin closed,
/// reading its output while it runs ([`STDOUT_CAP`], [`STDERR_KEEP`]);
/// ends it and everything it started after `timeout`, when its standard
/// output passes the cap, or when the runner is asked to stop
/// ([`signals`]). Fails only when the program cannot be started at all.
///
/// Nothing polls the program: a helper thread blocks in `wait`, two
/// readers block in `read`, and the caller blocks on a channel (waking
/// every [`signals::POLL`] to look at the stop flag). On a worker of a
/// run, a program still running after the run's grace time steps aside
/// ([`slots`]): the worker's slot goes to the next case while this thread
/// waits for the program exactly as before, and takes a slot back once
/// the program has ended.
pub fn run(mut cmd: Command, timeout: Duration) -> std::io::Result<Proc> {
    let line = command_line(&cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start `{line}`: {e}")))?;
    let pid = child.id();
    let (tx, events) = mpsc::channel::<Event>();
    let out = {
        let tx = tx.clone();
        output::read_stdout(child.stdout.take(), move || {
            let _ = tx.send(Event::Overflow);
        })
    };
    let err = output::read_stderr(child.stderr.take());
    let waiter = {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send(Event::Exited(child.wait()));
        })
    };
    drop(tx);
    let deadline = start + timeout;
    let aside_after = slots::grace();
    let mut watch = slots::stall().map(|s| stall::Watch::new(pid, s, start));
    let mut aside = None;
    let mut ended_by_runner = None;
    let status = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left.min(signals::POLL)) {
            Ok(Event::Exited(s)) => break Some(s),
            Ok(Event::Overflow) => {
                ended_by_runner = Some(End::Overflow);
                break end_and_wait(pid, &events);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if signals::stop_requested().is_some() {
                    ended_by_runner = Some(End::Stopped);
                    break end_and_wait(pid, &events);
                }
                if left.is_zero() {
                    ended_by_runner = Some(End::Timeout);
                    break end_and_wait(pid, &events);
                }
                if let Some(s) = watch.as_mut().and_then(stall::Watch::look) {
                    ended_by_runner = Some(End::Stalled(s));
                    break end_and_wait(pid, &events);
                }
                // A spinning program keeps its worker until it stalls
                // (see `stall::Watch::spinning`).
                let spinning = watch.as_ref().is_some_and(stall::Watch::spinning);
                if aside.is_none() && !spinning && aside_after.is_some_and(|g| start.elapsed() >= g)
                {
                    aside = slots::step_aside(pid);
                }
            }
        }
    };
    let status = match status {
        Some(s) => Some(s?),
        None => None,
    };
    let _ = waiter.join();
    // Should the program have killed its keeper, whatever stayed in its
    // process group goes now (nothing, when the keeper did its work).
    kill_group(pid);
    // The keeper ended the whole tree, so the pipes are closed; should a
    // process have escaped it, whatever was read by now is kept.
    let stdout = out.finish(Duration::from_millis(500));
    let stderr = err.finish(Duration::from_millis(200));
    let overflow = matches!(ended_by_runner, Some(End::Overflow))
        || (stdout.overflowed && ended_by_runner.is_none());
    let by_runner = ended_by_runner.is_some() || overflow;
    let duration_ms = start.elapsed().as_millis() as u64;
    // Everything of the program is over: back to a slot before the case
    // goes on.
    drop(aside);
    Ok(Proc {
        command: line,
        status: if by_runner {
            None
        } else {
            status.and_then(|s| s.code())
        },
        signal: if by_runner {
            None
        } else {
            status.and_then(|s| s.signal())
        },
        timed_out: matches!(ended_by_runner, Some(End::Timeout | End::Stalled(_))),
        stalled_ms: match &ended_by_runner {
            Some(End::Stalled(s)) => Some(s.spun.as_millis() as u64),
            _ => None,
        },
        overflow: overflow.then(|| format!("protocol answer larger than {STDOUT_CAP} bytes")),
        interrupted: matches!(ended_by_runner, Some(End::Stopped)),
        stdout: stdout.text,
        stderr: stderr.text,
        duration_ms,
    })
}

/// Why the runner ended a program.
enum End {
    Timeout,
    /// Before the limit: the program spun without visible activity.
    Stalled(stall::Stall),
    Overflow,
    Stopped,
}

/// A program that keeps running in the background (a server), in its own
/// process group, with its output going to a log file. Dropping it kills
/// the group.
pub struct Background {
    child: Child,
    pub command: String,
    log: std::path::PathBuf,
    start: Instant,
    ended: Option<std::process::ExitStatus>,
}

impl Background {
    pub fn spawn(mut cmd: Command, log: &std::path::Path) -> std::io::Result<Background> {
        let line = command_line(&cmd);
        let file = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start `{line}`: {e}")))?;
        Ok(Background {
            child,
            command: line,
            log: log.to_owned(),
            start: Instant::now(),
            ended: None,
        })
    }

    /// The process id of its keeper (the program is the keeper's child).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and how).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        if self.ended.is_none() {
            self.ended = self.child.try_wait().ok().flatten();
        }
        self.ended
    }

    /// Everything it has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (its keeper ends it and everything it started, unless it
    /// already exited) and says how it ended; `killed` is true when the
    /// runner had to kill it.
    pub fn stop(mut self, killed_means_timeout: bool) -> Proc {
        let status = match self.try_wait() {
            Some(s) => Some(s),
            None => {
                self.end();
                None
            }
        };
        let stderr = self.log();
        Proc {
            command: self.command.clone(),
            status: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out: status.is_none() && killed_means_timeout,
            stdout: String::new(),
            stderr,
            duration_ms: self.start.elapsed().as_millis() as u64,
            ..Proc::default()
        }
    }

    /// Asks its keeper to end it, waits up to [`KEEPER_GRACE`], then kills
    /// the group.
    fn end(&mut self) {
        containment::end(self.child.id());
        let deadline = Instant::now() + KEEPER_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.ended = Some(s);
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        kill_group(self.child.id());
        self.ended = self.child.wait().ok();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.ended.is_none() && self.child.try_wait().ok().flatten().is_none() {
            self.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sanitizer_report_is_named_by_its_line_and_top_frames() {
        let report = "noise\n==4242==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000010 (pc 0x5581 bp 0x7ffd sp 0x7ffc T0)\n\
            ==4242==The signal is caused by a READ memory access.\n\
            \x20   #0 0x55d1 in merge_fn ../block/x.c:10:3\n\
            \x20   #1 0x55d2 in caller_fn ../block/y.c:20:1\n\
            \x20   #2 0x55d3 in qmp_entry ../qapi/z.c:30:9\n\
            \x20   #3 0x55d4 in main ../main.c:1\n";
        let got = sanitizer_line(report).unwrap();
        assert!(
            got.starts_with("==4242==ERROR: AddressSanitizer: SEGV"),
            "{got}"
        );
        assert!(
            got.ends_with("(top frames: merge_fn < caller_fn < qmp_entry)"),
            "{got}"
        );
        let ub = "../block/q.c:5:7: runtime error: shift exponent 64 is too large\n";
        assert_eq!(
            sanitizer_line(ub).unwrap(),
            "../block/q.c:5:7: runtime error: shift exponent 64 is too large"
        );
        assert_eq!(sanitizer_line("all fine\n"), None);
        assert!(is_sanitizer_note(
            "==7==WARNING: ASan doesn't fully support makecontext/swapcontext functions"
        ));
        assert!(is_sanitizer_note("False positive error reports may follow"));
        assert!(!is_sanitizer_note(
            "==7==ERROR: AddressSanitizer: heap-buffer-overflow"
        ));
        assert!(!is_sanitizer_note(
            "qemu-io: write failed: Input/output error"
        ));
    }
}
