//! What the programs of the case this thread is running need from it, so
//! that every adapter and every program it starts can open the image
//! without widening the [`Adapter`] interface: the encryption passphrase
//! (a manifest case's `secret`: [`scope`] sets it around one case,
//! [`current`] reads it) and the directory to run in ([`in_dir`], [`dir`]:
//! the private copy's own, in the case's scratch directory, beside its
//! companion files): QEMU resolves a relative external data file name
//! against its working directory, not the image's, and must never resolve
//! it in the runner's.
//!
//! A case runs on one thread from its first copy to its judgement, so a
//! thread-local value is exactly "the case being run". Every program the
//! runner starts ([`crate::runner::process::command`]) gets the secret in the
//! environment variable [`ENV`] (the exec protocol's way, see
//! `corpus/README.md`); the QEMU adapter turns it into `--object secret`
//! and `encrypt.key-secret`, and runs QEMU's tools in the directory
//! ([`crate::runner::adapters::qemu`]), as does the probe of the bitmaps-unaware
//! libraries (qcow2-rs, for one, resolves a relative backing file name
//! against its working directory; the spec leaves that resolution open,
//! and QEMU's convention is the image's directory). Exec programs run
//! where the runner runs (an exec template may name its program by a
//! relative path).
//!
//! [`Adapter`]: crate::runner::adapter::Adapter

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::thread::LocalKey;

/// The environment variable that carries the passphrase to programs.
pub const ENV: &str = "QCOW2_CONFORM_SECRET";

thread_local! {
    static SECRET: RefCell<Option<String>> = const { RefCell::new(None) };
    static DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Sets this thread's secret until the guard is dropped (then restores
/// the previous one).
pub fn scope(secret: Option<&str>) -> Scope<String> {
    Scope::set(&SECRET, secret.map(str::to_owned))
}

/// The secret of the case this thread is running, if it has one.
pub fn current() -> Option<String> {
    SECRET.with(|s| s.borrow().clone())
}

/// Runs every program this thread starts in `dir` (`None`: the runner's
/// own working directory) until the guard is dropped.
pub fn in_dir(dir: Option<&Path>) -> Scope<PathBuf> {
    Scope::set(&DIR, dir.map(Path::to_path_buf))
}

/// The directory programs of this thread run in, if set.
pub fn dir() -> Option<PathBuf> {
    DIR.with(|d| d.borrow().clone())
}

/// `cmd` set to run in this thread's directory ([`dir`]), when one is set.
pub fn run_in_dir(mut cmd: std::process::Command) -> std::process::Command {
    if let Some(d) = dir() {
        cmd.current_dir(d);
    }
    cmd
}

/// One thread-local value set until the guard is dropped, then restored.
#[must_use = "the value is reset when the guard is dropped"]
pub struct Scope<T: 'static> {
    key: &'static LocalKey<RefCell<Option<T>>>,
    previous: Option<T>,
}

impl<T: 'static> Scope<T> {
    fn set(key: &'static LocalKey<RefCell<Option<T>>>, value: Option<T>) -> Scope<T> {
        let previous = key.with(|v| v.replace(value));
        Scope { key, previous }
    }
}

impl<T: 'static> Drop for Scope<T> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        self.key.with(|v| *v.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests {
    use crate::runner::process::case_env::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current(), None);
        {
            let _a = scope(Some("a"));
            assert_eq!(current().as_deref(), Some("a"));
            {
                let _b = scope(None);
                assert_eq!(current(), None);
            }
            assert_eq!(current().as_deref(), Some("a"));
        }
        assert_eq!(current(), None);
    }
}
