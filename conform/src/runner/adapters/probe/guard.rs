//! The probe process's panic guard: a panic in an implementation's code
//! becomes a [`Panic`] with its message and location ([`guarded`]), recorded
//! by the hook [`install_panic_hook`] sets, instead of ending the process
//! without a report.

use std::any::Any;
use std::sync::Mutex;

/// The last panic's message and location, as the hook recorded it.
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// A panic caught in an implementation's code: its message, with its
/// location when the hook recorded it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Panic(pub String);

/// A panic payload's text, when it is a string.
fn payload_text(payload: &(dyn Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
}

/// Runs `f`, turning a panic into [`Panic`] with its message and location.
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let recorded = PANIC_MESSAGE.lock().ok().and_then(|mut m| m.take());
        Panic(recorded.unwrap_or_else(|| {
            payload_text(payload.as_ref())
                .unwrap_or_else(|| "panic with a non-string payload".into())
        }))
    })
}

/// Sets the hook that prints each panic with its location on stderr and
/// records it for [`guarded`].
pub(super) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = payload_text(info.payload()).unwrap_or_else(|| "non-string payload".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!("panicked{at}: {msg}");
        eprintln!("{line}");
        if let Ok(mut m) = PANIC_MESSAGE.lock() {
            *m = Some(line);
        }
    }));
}
