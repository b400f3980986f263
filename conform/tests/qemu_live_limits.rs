//! QEMU's limit of 65535 persistent bitmaps, against a running
//! qemu-storage-daemon (issue 22 item 1: the dedicated fast scenario).
//! Adding 65535 bitmaps one QMP command at a time and hashing each after
//! every step would take minutes; instead the generator writes an image
//! that already holds 65535 (512-byte clusters keep it near 40 MiB) and
//! the daemon loads it. Measured on the 2-core machine: reading it with
//! the model takes 0.16 s; qemu-storage-daemon 10.0.2 takes about 60 s to
//! start on it (loading the bitmaps), 1.5 s to list them and 11 s to store
//! them on `quit`; hence the 120 s limit.

#[path = "common/live.rs"]
mod live;

use conform::runner::adapters::qemu_live::daemon::{Daemon, NODE};
use conform::runner::adapters::qemu_live::session::read_file;
use conform::runner::process::Limits;
use generator::contents::Contents;
use generator::{BitmapSpec, ImageSpec};
use live::add;
use spec_model::semantics::state::MAX_BITMAPS;
use spec_model::semantics::{Disk, Expect};
use std::time::Duration;

#[test]
fn a_full_directory_refuses_the_65536th_persistent_bitmap_and_keeps_the_rest() {
    let qsd = live::qsd();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("full.qcow2");
    let mut spec = ImageSpec::empty(1 << 20);
    spec.cluster_bits = 9;
    spec.bitmaps = (0..MAX_BITMAPS)
        .map(|i| BitmapSpec::new(&format!("{i:04x}"), 16, Contents::Ranges(Vec::new())))
        .collect();
    std::fs::write(&img, generator::build(&spec).unwrap().bytes).unwrap();

    let before = read_file(&img).unwrap();
    assert_eq!(before.bitmaps.len(), MAX_BITMAPS, "the generator's image");
    // The model: one more persistent bitmap is past QEMU's documented
    // limit, so it may be refused; a non-persistent one must succeed.
    let model = Disk::reopened(&before);
    assert!(
        matches!(model.expect(&add("one-more", true)), Expect::Either(ref m) if m.contains("65535")),
        "{:?}",
        model.expect(&add("one-more", true))
    );
    assert!(matches!(
        model.expect(&add("temporary", false)),
        Expect::Succeed
    ));

    let limits = Limits {
        timeout: Duration::from_secs(300),
        memory_bytes: None,
    };
    let mut d = Daemon::start(&qsd, &img, &limits).unwrap();
    let (_, loaded) = d.bitmaps().unwrap();
    assert_eq!(loaded.len(), MAX_BITMAPS, "QEMU loads all 65535");
    let persistent = serde_json::json!({
        "node": NODE, "name": "one-more", "granularity": 65536, "persistent": true
    });
    let refused = d
        .execute("block-dirty-bitmap-add", persistent)
        .unwrap()
        .ok()
        .expect_err("QEMU 10.0 refuses a 65536th persistent bitmap");
    assert!(!refused.0.is_empty());
    let temporary = serde_json::json!({
        "node": NODE, "name": "temporary", "granularity": 65536
    });
    d.execute("block-dirty-bitmap-add", temporary)
        .unwrap()
        .ok()
        .expect("a non-persistent bitmap is not limited by the directory");
    let (_, live) = d.bitmaps().unwrap();
    assert_eq!(live.len(), MAX_BITMAPS + 1);
    let end = d.quit();
    assert!(!end.ended_badly(), "{}", end.describe_end());

    // Stored on close: still the 65535, consistent, nothing lost.
    let after = read_file(&img).unwrap();
    assert_eq!(after.bitmaps.len(), MAX_BITMAPS);
    assert!(after.error_rules.is_empty(), "{:?}", after.error_rules);
    assert!(after.bitmaps.values().all(|b| !b.in_use && b.usable));
}
