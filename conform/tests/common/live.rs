//! What the tests of the live path share: the installed
//! `qemu-storage-daemon` (a missing one fails the test, never skips it),
//! the limits one daemon step runs under, the bitmap they add most, and a
//! backup chain run checked in full, and what a tampered chain must report.
//! Included with `#[path = "common/live.rs"] mod live;`.
#![allow(dead_code)]

use conform::campaign::backup::chain::{run_chain, Chain, ChainOptions, ChainResult};
use conform::runner::adapters::qemu::Tool;
use conform::runner::process::Limits;
use spec_model::semantics::Op;
use std::path::PathBuf;
use std::time::Duration;

/// The `qemu-storage-daemon` the tests run.
pub fn qsd() -> PathBuf {
    Tool::StorageDaemon
        .locate()
        .expect("qemu-storage-daemon is required (scripts/setup.sh installs qemu-utils)")
}

/// One minute per step (a loaded machine starts daemons slowly), no
/// memory limit.
pub fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: None,
    }
}

/// `block-dirty-bitmap-add` of an enabled bitmap with 64 KiB granules.
pub fn add(name: &str, persistent: bool) -> Op {
    Op::Add {
        name: name.into(),
        gbits: 16,
        persistent,
        disabled: false,
    }
}

/// A backup chain run checked in full, under [`limits`].
pub fn chain_options() -> ChainOptions {
    ChainOptions {
        limits: limits(),
        tamper: None,
        bare: false,
    }
}

/// Runs `chain` under `o` on a fresh image in a scratch directory the
/// sandbox lets the daemon write.
pub fn run_in_scratch(chain: &Chain, o: ChainOptions) -> ChainResult {
    let dir = tempfile::tempdir().unwrap();
    let _w = conform::runner::process::sandbox::writable(dir.path());
    run_chain(&qsd(), chain, dir.path(), o).unwrap()
}

/// Asserts that the chain `r` (`what`, for the message) stopped at its
/// first incremental with, for each of `saying`, a problem that says it.
pub fn assert_stopped_at_first_incremental(r: &ChainResult, saying: &[&str], what: &str) {
    assert_eq!(r.at_point, Some(1), "{what}: {r:#?}");
    for s in saying {
        assert!(
            r.problems.iter().any(|p| p.contains(s)),
            "{what}: no problem says {s:?}: {:#?}",
            r.problems
        );
    }
}
