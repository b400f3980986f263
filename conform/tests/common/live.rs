//! What the tests against the installed `qemu-storage-daemon` share: the
//! daemon (a missing one fails the test) and the limits it runs under.

use conform::campaign::backup::chain::ChainOptions;
use conform::runner::adapters::qemu::Tool;
use conform::runner::process::Limits;
use std::path::PathBuf;
use std::time::Duration;

/// The installed daemon.
pub fn qsd() -> PathBuf {
    Tool::StorageDaemon
        .locate()
        .expect("qemu-storage-daemon is required (scripts/setup.sh installs qemu-utils)")
}

/// A minute per process: a loaded machine starts daemons slowly.
pub fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: None,
    }
}

/// A backup chain run checked in full, under [`limits`].
#[allow(dead_code)]
pub fn chain_options() -> ChainOptions {
    ChainOptions {
        limits: limits(),
        tamper: None,
        bare: false,
    }
}
