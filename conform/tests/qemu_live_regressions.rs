//! Replays every finding of the live sequence campaign kept under
//! `fuzz_targets/regressions/qemu-live/` (the minimised sequence of a
//! `findings/KEY/finding.json`) against the installed
//! `qemu-storage-daemon`, with the semantic model as the oracle. On the
//! QEMU version that produced a finding the replay must fail the same way
//! (same key); on another version it must either fail the same way or
//! pass outright (the bug fixed), never fail differently.

use conform::campaign::sequences::{self, SeqFinding};
use conform::runner::adapters::qemu::Tool;
use conform::runner::process::Limits;
use std::path::Path;
use std::time::Duration;

#[test]
fn live_sequence_findings_replay() {
    let qsd = Tool::StorageDaemon
        .locate()
        .expect("qemu-storage-daemon is required (scripts/setup.sh installs qemu-utils)");
    let limits = Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: None,
    };
    let installed = sequences::version(&qsd, &limits);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz_targets/regressions/qemu-live");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no findings under {}", dir.display());
    for file in files {
        let f: SeqFinding = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let (r, same) = sequences::replay(&qsd, &file, &limits).unwrap();
        if f.qemu.is_some() && f.qemu == installed {
            assert!(
                same,
                "{}: no longer fails as {} on {:?}: {r:#?}",
                file.display(),
                f.key,
                installed
            );
        } else {
            assert!(
                same || !r.failed(),
                "{}: fails differently: {r:#?}",
                file.display()
            );
        }
    }
}
