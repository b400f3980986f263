//! Stopping cleanly on SIGINT and SIGTERM: [`install`] (called by `run`
//! and `campaign`) turns the first of them into a flag; every program the
//! runner is waiting for is then ended with everything it started
//! ([`crate::runner::process::run`] looks at the flag every [`POLL`]), no new case
//! starts, the temporary directories are removed as their owners return,
//! and the reports are written and marked incomplete. A second signal of
//! the same kind ends the runner at once (exit status 1): its programs
//! still die with it ([`crate::runner::process::containment`]), and the next `run` or
//! `campaign` removes its temporary directories
//! ([`crate::runner::process::temp_dirs::sweep`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often a waiting runner looks at the stop flag.
pub const POLL: Duration = Duration::from_millis(50);

/// The signal that asked the runner to stop (0: none).
fn stop() -> &'static Arc<AtomicUsize> {
    static STOP: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    STOP.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Turns SIGINT and SIGTERM into the stop flag (once per process; later
/// calls do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let seen = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // The second signal exits at once; the first raises the flags.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&seen))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&seen)))
                .and_then(|_| {
                    signal_hook::flag::register_usize(sig, Arc::clone(stop()), sig as usize)
                });
        }
    });
}

/// The signal that asked the runner to stop, if one did.
pub fn stop_requested() -> Option<i32> {
    match stop().load(Ordering::SeqCst) {
        0 => None,
        s => Some(s as i32),
    }
}

/// Why the run is incomplete, in words, when it was asked to stop.
pub fn interrupted() -> Option<String> {
    stop_requested().map(|s| {
        let name = match s {
            signal_hook::consts::SIGINT => "SIGINT",
            _ => "SIGTERM",
        };
        format!("interrupted by {name}")
    })
}
