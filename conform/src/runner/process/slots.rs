//! Worker slots: how much of a run works at once, and the programs that
//! wait out their time limit without holding a worker.
//!
//! A run has as many slots as workers (`--jobs`); a worker thread holds
//! one ([`Slots::hold`]) while it sets a case up, runs its programs and
//! judges it. A program still running after the grace time has most
//! likely hung, and waiting for its limit would keep the slot idle for
//! the rest of it. [`crate::runner::process::run`] then *steps aside*
//! ([`step_aside`]): its thread gives the slot up, so another worker
//! thread starts the next case, and the program (every process of its
//! group but its keeper) is set to the lowest CPU priority (nice 19), so
//! that a program that spins
//! takes a processor only when the rest of the run leaves one free. At
//! most `max_waiting` programs of a run wait aside at once; past that a
//! program keeps its slot, as every program did before.
//!
//! Nothing else about the program changes: it keeps its keeper, its
//! sandbox and its memory limit, and the same thread still waits for it,
//! kills its process group at the same deadline and grades it the same
//! way (a hang is a hang at exactly the limit). When it ends, its thread
//! takes a slot back ([`Aside`]'s drop) before it carries on with the
//! case, ahead of any thread that would start a new case, so the cases in
//! progress stay bounded by `jobs + max_waiting`.
//!
//! The one thing a lower priority could change is a program that is not
//! hung, is still running after the grace time and would have finished
//! just inside its limit: it now gets a processor only when the run's
//! other programs leave one. The grace time (5 s) is kept well above the
//! longest single program of the full matrix that ends by itself (about
//! 2 s on a 2-core machine at a load average of 15), and
//! `conform/tests/step_aside.rs` checks that outcomes are the same with
//! and without stepping aside.

use super::procfs;
use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The lowest CPU priority: the nice value a program waiting aside gets.
pub const WAITING_NICE: i32 = 19;

/// How long a program runs on its worker before it may step aside, by
/// default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How many programs of a run may wait aside at once, by default.
pub const DEFAULT_MAX_WAITING: usize = 4;

/// The slots of one run.
#[derive(Debug)]
pub struct Slots {
    jobs: usize,
    max_waiting: usize,
    grace: Duration,
    stall: Option<Duration>,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Slots held by threads.
    held: usize,
    /// Programs waiting aside, and their threads waiting for a slot back.
    waiting: usize,
    /// Threads whose program ended aside, waiting for a slot back.
    returning: usize,
    /// Programs that stepped aside so far.
    stepped_aside: usize,
}

thread_local! {
    /// The slots of the run whose slot this thread holds.
    static HELD: RefCell<Option<Arc<Slots>>> = const { RefCell::new(None) };
}

impl Slots {
    /// `jobs` slots (at least one); up to `max_waiting` programs may step
    /// aside after `grace` (0: none ever does); a program on a slot that
    /// spins for `stall` of processor time is ended as a hang
    /// ([`crate::runner::process::stall`]; `None`: never).
    pub fn new(
        jobs: usize,
        max_waiting: usize,
        grace: Duration,
        stall: Option<Duration>,
    ) -> Arc<Slots> {
        Arc::new(Slots {
            jobs: jobs.max(1),
            max_waiting,
            grace,
            stall,
            state: Mutex::new(State::default()),
            turn: Condvar::new(),
        })
    }

    /// The worker threads a run needs: one per slot and one per program
    /// that may wait aside.
    pub fn threads(&self) -> usize {
        self.jobs + self.max_waiting
    }

    /// How many programs stepped aside so far.
    pub fn stepped_aside(&self) -> usize {
        self.lock().stepped_aside
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked left consistent counts (each change is one
        // statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until a slot is free (and no thread is waiting to take one
    /// back), then holds it on this thread until the guard drops.
    pub fn hold(self: &Arc<Self>) -> Held {
        let mut s = self.lock();
        while s.held >= self.jobs || s.returning > 0 {
            s = self.turn.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.held += 1;
        drop(s);
        HELD.with(|h| *h.borrow_mut() = Some(Arc::clone(self)));
        Held(Arc::clone(self))
    }

    fn release(&self) {
        self.lock().held -= 1;
        self.turn.notify_all();
    }
}

/// A slot held by the current thread; dropping it frees the slot.
#[derive(Debug)]
pub struct Held(Arc<Slots>);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| *h.borrow_mut() = None);
        self.0.release();
    }
}

/// The grace time after which a program run on this thread may step
/// aside: `None` when the thread holds no slot of a run or its run lets
/// no program wait aside.
pub fn grace() -> Option<Duration> {
    HELD.with(|h| {
        h.borrow()
            .as_ref()
            .filter(|s| s.max_waiting > 0)
            .map(|s| s.grace)
    })
}

/// The stall time of the run whose slot this thread holds
/// ([`crate::runner::process::stall`]); `None` off a run's worker or when
/// the run calls no stalls.
pub fn stall() -> Option<Duration> {
    HELD.with(|h| h.borrow().as_ref().and_then(|s| s.stall))
}

/// A program waiting aside; dropping it (once the program has ended)
/// blocks until its thread has a slot again.
#[derive(Debug)]
pub struct Aside(Arc<Slots>);

/// Steps the program whose process group is `pgid` aside (see the module
/// doc): frees this thread's slot and lowers the group's CPU priority.
/// `None` (nothing changes) when the thread holds no slot or the run's
/// programs waiting aside are at their bound.
pub fn step_aside(pgid: u32) -> Option<Aside> {
    let slots = HELD.with(|h| h.borrow().clone())?;
    {
        let mut s = slots.lock();
        if s.waiting >= slots.max_waiting {
            return None;
        }
        s.waiting += 1;
        s.held -= 1;
        s.stepped_aside += 1;
    }
    slots.turn.notify_all();
    lower_priority(pgid);
    Some(Aside(slots))
}

impl Drop for Aside {
    fn drop(&mut self) {
        let slots = &self.0;
        let mut s = slots.lock();
        s.returning += 1;
        while s.held >= slots.jobs {
            s = slots.turn.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.returning -= 1;
        s.waiting -= 1;
        s.held += 1;
        drop(s);
        slots.turn.notify_all();
    }
}

/// Sets every process of group `pgid` but its leader, the keeper (the
/// program and what it started; what they start later inherits it), to
/// [`WAITING_NICE`]. The keeper keeps its priority, so that at the
/// deadline it ends the program's tree as quickly as it always did. Best
/// effort: a process that left the group, or one that cannot be
/// reniced, keeps its priority, which only makes the rest of the run
/// slower.
fn lower_priority(pgid: u32) {
    for pid in group_members(pgid) {
        if pid != pgid {
            // SAFETY: `setpriority` takes plain integers and touches no
            // memory of this process.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, WAITING_NICE);
            }
        }
    }
}

/// The processes of group `pgid`, from `/proc/PID/stat`.
fn group_members(pgid: u32) -> Vec<u32> {
    procfs::pids()
        .into_iter()
        .filter(|&pid| {
            procfs::stat_fields(pid).and_then(|f| f.get(procfs::PGRP).copied())
                == Some(u64::from(pgid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn slots_bound_the_workers_and_the_programs_waiting_aside() {
        let slots = Slots::new(2, 1, Duration::ZERO, None);
        assert_eq!(slots.threads(), 3);
        assert_eq!(grace(), None, "no slot held: nothing steps aside");
        let busy = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..slots.threads() {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _h = slots.hold();
                        assert_eq!(grace(), Some(Duration::ZERO));
                        let n = busy.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        // pgid 0 would be this test's own group: a group
                        // that cannot exist keeps the test's priority.
                        busy.fetch_sub(1, Ordering::SeqCst);
                        let aside = step_aside(u32::MAX >> 1);
                        if aside.is_none() {
                            busy.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        if let Some(a) = aside {
                            drop(a);
                            let n = busy.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                        }
                        busy.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "never more at work than slots"
        );
        assert!(slots.stepped_aside() > 0);
        let s = slots.lock();
        assert_eq!((s.held, s.waiting, s.returning), (0, 0, 0));
    }

    #[test]
    fn the_members_of_a_process_group_are_found() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let id = child.id();
        assert_eq!(group_members(id), [id]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(group_members(id).is_empty());
    }

    #[test]
    fn a_run_without_waiting_aside_never_steps_aside() {
        let slots = Slots::new(1, 0, Duration::ZERO, None);
        let _h = slots.hold();
        assert_eq!(grace(), None);
        assert!(step_aside(u32::MAX >> 1).is_none());
    }
}
