//! What the programs of the case this thread is running need from it, so
//! that every adapter and every program it starts can open the image
//! without widening the [`Adapter`] interface: the encryption passphrase
//! (a manifest case's `secret`: [`scope`] sets it around one case,
//! [`current`] reads it) and, for an image with companion files, the
//! directory to run in ([`in_dir`], [`dir`]): QEMU resolves a relative
//! external data file name against its working directory, not the image's.
//!
//! A case runs on one thread from its first copy to its judgement, so a
//! thread-local value is exactly "the case being run". Every program the
//! runner starts ([`super::process::command`]) gets it in the environment
//! variable [`ENV`] (the exec protocol's way, see `corpus/README.md`);
//! the QEMU adapter turns it into `--object secret` and
//! `encrypt.key-secret` ([`super::adapters::qemu`]).
//!
//! [`Adapter`]: super::adapter::Adapter

use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The environment variable that carries the passphrase to programs.
pub const ENV: &str = "QCOW2_CONFORM_SECRET";

thread_local! {
    static SECRET: RefCell<Option<String>> = const { RefCell::new(None) };
    static DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs every program this thread starts in `dir` (`None`: the runner's
/// own working directory) until the guard is dropped.
pub fn in_dir(dir: Option<&Path>) -> DirScope {
    let previous = DIR.with(|d| d.replace(dir.map(Path::to_path_buf)));
    DirScope { previous }
}

/// The directory programs of this thread run in, if set.
pub fn dir() -> Option<PathBuf> {
    DIR.with(|d| d.borrow().clone())
}

/// Restores the previous directory when dropped.
#[must_use = "the directory is reset when the guard is dropped"]
pub struct DirScope {
    previous: Option<PathBuf>,
}

impl Drop for DirScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        DIR.with(|d| *d.borrow_mut() = previous);
    }
}

/// Sets this thread's secret until the guard is dropped (then restores
/// the previous one).
pub fn scope(secret: Option<&str>) -> Scope {
    let previous = SECRET.with(|s| s.replace(secret.map(str::to_owned)));
    Scope { previous }
}

/// The secret of the case this thread is running, if it has one.
pub fn current() -> Option<String> {
    SECRET.with(|s| s.borrow().clone())
}

/// Restores the previous secret when dropped.
#[must_use = "the secret is cleared again when the guard is dropped"]
pub struct Scope {
    previous: Option<String>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SECRET.with(|s| *s.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
