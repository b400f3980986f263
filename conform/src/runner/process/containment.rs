//! Containment: every process a program under test starts ends when that
//! program's run ends, and every one dies with the runner, even when the
//! runner is killed with SIGKILL.
//!
//! Each program runs under a *keeper*: the process `std` forks for the
//! command does not exec; it makes itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), forks the program, and waits. Whatever the
//! program starts and abandons (a double fork, `setsid`, a daemon that
//! closed its output) is reparented to the keeper instead of to init, so
//! the keeper sees all of it as its own children. When the program ends
//! (or the keeper is told to stop: SIGTERM from the runner on a timeout,
//! or from the kernel when the runner dies, through `PR_SET_PDEATHSIG`),
//! the keeper kills its children with SIGKILL layer by layer (a killed
//! child's own children come to the keeper next) until it has none, then
//! exits the way the program did (same status, same signal), so the
//! runner reads the program's end from the keeper's. The program itself
//! gets `PR_SET_PDEATHSIG` = SIGKILL towards the keeper.
//!
//! Why a subreaper, not a PID namespace or a cgroup: it needs no
//! privilege and no kernel or container set-up. A PID namespace needs
//! `CLONE_NEWPID`, which an unprivileged user only has through a user
//! namespace, and many distributions and container runtimes forbid those;
//! cgroup v2 needs a delegated, writable subtree, which most CI containers
//! (and hybrid cgroup v1 hosts) lack. A subreaper per program also scopes
//! the kill to one program of one case while other cases run in parallel,
//! which one subreaper for the whole runner could not.
//!
//! Limits: a process that escapes the keeper's tree while the keeper
//! lives cannot exist, but one that kills the keeper itself with SIGKILL
//! (it runs as the same user) leaves its abandoned descendants to init;
//! the runner then kills the program's process group as a fallback.
//! `PR_SET_PDEATHSIG` fires when the runner *thread* that started the
//! program ends: the runner starts each program on the thread that waits
//! for it.
//!
//! The keeper runs between `fork` and `exec` in a copy of a threaded
//! process, so it only makes system calls: no allocation, no locks. The
//! program's sandbox ([`crate::runner::process::sandbox`]) is applied in the program's
//! process after the keeper's fork, so the keeper itself (which reads
//! `/proc` and signals the tree) stays outside it.

use crate::runner::process::sandbox::Restriction;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

/// The exit status of a keeper whose runner was already gone when it
/// started (its program never ran).
pub const ORPHANED: i32 = 125;

/// Runs `cmd`'s program under a keeper (see the module doc), with its
/// address space limited to `address_limit` bytes when given (the program
/// sets it on itself before exec, soft and hard, as `prlimit --as` would),
/// sandboxed by `sandbox` when given ([`crate::runner::process::sandbox`]: the ruleset was built
/// here, the program only applies it). `Err` holds the error the program
/// fails to start with when its ruleset could not be built.
pub fn keep(
    cmd: &mut Command,
    sandbox: Option<Result<Arc<Restriction>, i32>>,
    address_limit: Option<u64>,
) {
    let runner = Pid::this();
    // SAFETY: the hook runs in the forked child before exec and only makes
    // system calls (through `nix` and `libc`) on stack data: it allocates
    // nothing and takes no lock, as code after `fork` in a threaded
    // process must. The ruleset's descriptor lives as long as the hook.
    unsafe {
        cmd.pre_exec(move || {
            let sandbox = match &sandbox {
                None => None,
                Some(Ok(r)) => Some(r.raw()),
                Some(Err(errno)) => return Err(io::Error::from_raw_os_error(*errno)),
            };
            keeper(runner, sandbox, address_limit)
        });
    }
}

/// Applies the Landlock ruleset `fd` to this process (the program, after
/// the keeper's fork): no new privileges, then restrict itself.
fn restrict(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain system calls on integers.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Asks the keeper `pid` to end its program and everything it started.
pub fn end(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
}

/// Kills process group `pgid` outright (the fallback when a keeper did not
/// end in time).
pub fn kill_group(pgid: u32) {
    let _ = kill(Pid::from_raw(-(pgid as i32)), Signal::SIGKILL);
}

/// The signals the keeper waits for.
fn keeper_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// The `pre_exec` hook: in the keeper, never returns; in the program,
/// returns so that `std` execs it.
fn keeper(runner: Pid, sandbox: Option<RawFd>, address_limit: Option<u64>) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Some(Signal::SIGTERM))?;
    if getppid() != runner {
        // The runner died before the parent-death signal was armed.
        unsafe { libc::_exit(ORPHANED) };
    }
    nix::sys::prctl::set_child_subreaper(true)?;
    let signals = keeper_signals();
    // Blocked before the fork, so that an early end of the program is
    // not lost.
    signals.thread_block()?;
    let me = getpid();
    // SAFETY: this process has one thread (the one `std` forked).
    match unsafe { fork() }? {
        ForkResult::Child => {
            nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL))?;
            if getppid() != me {
                unsafe { libc::_exit(ORPHANED) };
            }
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            nix::sys::prctl::set_child_subreaper(false)?;
            if let Some(bytes) = address_limit {
                // Soft and hard, as `prlimit --as=BYTES` sets them.
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_AS,
                    bytes,
                    bytes,
                )?;
            }
            if let Some(fd) = sandbox {
                restrict(fd)?;
            }
            Ok(())
        }
        ForkResult::Parent { child } => supervise(child, &signals),
    }
}

/// The keeper's life: wait for the program to end or for a stop request,
/// kill everything left, exit as the program did.
fn supervise(program: Pid, signals: &SigSet) -> ! {
    // Hold no pipe open: the runner reads the program's output to its
    // end, and `std` waits for its exec-error pipe to close.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            // Kernels before 5.9: one by one, up to the descriptor limit.
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            for fd in 0..lim.rlim_cur.min(1 << 20) as libc::c_int {
                libc::close(fd);
            }
        }
    }
    let mut end = None;
    while end.is_none() {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(s) if s.pid() == Some(program) => {
                        end = Some(s);
                        break;
                    }
                    Ok(_) => {}
                }
            },
            Ok(_) => end = Some(WaitStatus::Signaled(program, Signal::SIGKILL, false)),
            Err(_) => {}
        }
    }
    kill_all_children();
    match end {
        Some(WaitStatus::Exited(_, code)) => unsafe { libc::_exit(code) },
        Some(WaitStatus::Signaled(_, sig, _)) => die_by(sig),
        _ => unsafe { libc::_exit(ORPHANED) },
    }
}

/// Ends this process with signal `sig` (no core file), as the program did.
fn die_by(sig: Signal) -> ! {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(sig as libc::c_int, libc::SIG_DFL);
        let mut set = SigSet::empty();
        set.add(sig);
        let _ = set.thread_unblock();
        libc::raise(sig as libc::c_int);
        libc::_exit(128 + sig as i32)
    }
}

/// Kills this process's children with SIGKILL and reaps them, again and
/// again (their orphans come here next), until none is left.
fn kill_all_children() {
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return, // ECHILD: none left
            }
        }
        for_each_child(getpid(), |pid| {
            let _ = kill(pid, Signal::SIGKILL);
        });
        match waitpid(None, None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Calls `f` with every process whose parent is `parent`, read from
/// `/proc/PID/stat` with stack buffers only.
fn for_each_child(parent: Pid, mut f: impl FnMut(Pid)) {
    let dir = unsafe {
        libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir,
                buf.as_mut_ptr(),
                buf.len() as libc::c_uint,
            )
        };
        if n <= 0 {
            break;
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &buf[at + 19..(at + reclen).min(n as usize)];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(pid) = number(name) {
                if parent_of(name) == Some(parent.as_raw() as u64) {
                    f(Pid::from_raw(pid as i32));
                }
            }
            at += reclen;
        }
    }
    unsafe { libc::close(dir) };
}

/// A decimal number, if `s` is one.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The parent of process `pid` (its decimal name under `/proc`).
fn parent_of(pid: &[u8]) -> Option<u64> {
    let mut path = [0u8; 40];
    let parts: [&[u8]; 3] = [b"/proc/", pid, b"/stat\0"];
    let mut len = 0;
    for p in parts {
        path.get_mut(len..len + p.len())?.copy_from_slice(p);
        len += p.len();
    }
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut stat = [0u8; 1024];
    let n = unsafe { libc::read(fd, stat.as_mut_ptr().cast(), stat.len()) };
    unsafe { libc::close(fd) };
    if n <= 0 {
        return None;
    }
    let stat = &stat[..n as usize];
    // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    fields.next()?;
    number(fields.next()?)
}

#[cfg(test)]
mod tests {
    use crate::runner::process::containment::*;

    #[test]
    fn reads_parents_from_proc() {
        let me = std::process::id().to_string();
        let parent = std::os::unix::process::parent_id() as u64;
        assert_eq!(parent_of(me.as_bytes()), Some(parent));
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let mut seen = Vec::new();
        for_each_child(Pid::this(), |p| seen.push(p.as_raw() as u32));
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.contains(&child.id()), "{seen:?}");
    }
}
