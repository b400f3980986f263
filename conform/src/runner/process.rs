//! Running one program of an implementation under test: its own process
//! group, a wall-clock limit (the whole group is killed when it runs out),
//! an optional address-space limit through util-linux's `prlimit`, and
//! everything it printed kept for the report.

use super::text::command_line;
use serde::Serialize;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
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
    /// Address-space limit (`RLIMIT_AS`, set through util-linux `prlimit`);
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

    /// The first sanitizer report line in standard error, if any.
    pub fn sanitizer(&self) -> Option<String> {
        sanitizer_line(&self.stderr)
    }

    /// The first non-empty line of standard error (for error messages).
    pub fn first_error_line(&self) -> Option<String> {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    }

    /// How it ended, in words.
    pub fn describe_end(&self) -> String {
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

/// The first line of `text` that carries a sanitizer marker.
pub fn sanitizer_line(text: &str) -> Option<String> {
    text.lines()
        .find(|l| SANITIZER_MARKERS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_owned())
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

/// A command for `program args..`, wrapped in `prlimit --as=N --` when the
/// limits carry a memory limit. The child leads its own process group so
/// that everything it starts can be killed together.
pub fn command<S: AsRef<OsStr>>(program: &OsStr, args: &[S], limits: &Limits) -> Command {
    let mut cmd = match limits.memory_bytes {
        Some(bytes) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--as={bytes}")).arg("--").arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args);
    cmd.process_group(0);
    if let Some(secret) = super::case_env::current() {
        cmd.env(super::case_env::ENV, secret);
    }
    cmd
}

/// Sends SIGKILL to every process of group `pgid` (through `kill(1)`; the
/// runner has no `unsafe`).
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
    done: mpsc::Sender<()>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = done.send(());
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` (built by [`command`]) to completion with stdin closed,
/// capturing its output; kills its process group after `timeout`. Fails
/// only when the program cannot be started at all.
///
/// Nothing polls: a helper thread blocks in `wait` and the caller blocks
/// on a channel with the time limit, so a short program costs no more
/// than its own run time.
pub fn run(mut cmd: Command, timeout: Duration) -> std::io::Result<Proc> {
    let line = command_line(&cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start `{line}`: {e}")))?;
    let pgid = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let out = drain(child.stdout.take(), done_tx.clone());
    let err = drain(child.stderr.take(), done_tx);
    let (status_tx, status_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let (status, timed_out) = match status_rx.recv_timeout(timeout) {
        Ok(status) => (status?, false),
        Err(_) => {
            kill_group(pgid);
            let status = status_rx
                .recv()
                .map_err(|_| std::io::Error::other("the waiter thread ended"))??;
            (status, true)
        }
    };
    let _ = waiter.join();
    // A descendant left behind may hold the pipes open: give the readers a
    // moment, then end the group.
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut finished = 0;
    while finished < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => finished += 1,
            Err(_) => {
                kill_group(pgid);
                break;
            }
        }
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Proc {
        command: line,
        status: if timed_out { None } else { status.code() },
        signal: if timed_out { None } else { status.signal() },
        timed_out,
        stdout,
        stderr,
        duration_ms: start.elapsed().as_millis() as u64,
    })
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

    /// Stops it (SIGKILL to its group unless it already exited) and says
    /// how it ended; `killed` is true when the runner had to kill it.
    pub fn stop(mut self, killed_means_timeout: bool) -> Proc {
        let status = match self.try_wait() {
            Some(s) => Some(s),
            None => {
                // The server is the group's only process (`prlimit` execs
                // into it): a direct SIGKILL ends it without starting
                // kill(1).
                let _ = self.child.kill();
                self.ended = self.child.wait().ok();
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
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.ended.is_none() && self.child.try_wait().ok().flatten().is_none() {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}
