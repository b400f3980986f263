//! The campaign's minimised reproducers, kept as regression cases:
//! `fuzz_targets/regressions/KEY/{image.qcow2, finding.json}` (see
//! docs/findings.md, "Campaign"). Each image is replayed through the model,
//! which must still give the expectation recorded in `finding.json` (verdict,
//! extension state, rules, bitmap contents), and through the fuzz targets'
//! logic, which must not panic on it.

use generator::expected::Expected;
use std::path::{Path, PathBuf};

/// The directory of the live sequence campaign's reproducers.
const LIVE: &str = "qemu-live";

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        // The live sequence campaign's reproducers (QMP transcripts, not
        // images) are replayed by conform/tests/qemu_live_regressions.rs.
        .filter(|p| !p.ends_with(LIVE))
        .collect();
    dirs.sort();
    dirs
}

fn load(dir: &Path) -> (Vec<u8>, serde_json::Value, Expected) {
    let image = std::fs::read(dir.join("image.qcow2"))
        .unwrap_or_else(|e| panic!("{}/image.qcow2: {e}", dir.display()));
    let text = std::fs::read_to_string(dir.join("finding.json"))
        .unwrap_or_else(|e| panic!("{}/finding.json: {e}", dir.display()));
    let finding: serde_json::Value = serde_json::from_str(&text).expect("finding.json parses");
    let expected: Expected =
        serde_json::from_value(finding["expected"].clone()).expect("finding.json has expected");
    (image, finding, expected)
}

#[test]
fn every_regression_keeps_its_recorded_verdict() {
    let dirs = cases();
    assert!(!dirs.is_empty(), "no regression cases");
    for dir in dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let (image, finding, want) = load(&dir);
        assert_eq!(
            finding["key"].as_str(),
            Some(name.as_ref()),
            "directory name is the key"
        );
        let r = spec_model::check_bytes(&image);
        // The verdict and extension state, every recorded rule still
        // reported, no error beyond them (a valid or unspecified verdict
        // has none), and the recorded bitmaps.
        let differences: Vec<String> = want
            .differences(&r)
            .iter()
            .map(|d| format!("{d:#}"))
            .collect();
        assert!(
            differences.is_empty(),
            "{name}: {}: {:#?}",
            differences.join("; "),
            r.findings
        );
    }
}

#[test]
fn fuzz_targets_do_not_panic_on_regressions() {
    for dir in cases() {
        let (image, _, _) = load(&dir);
        fuzz_targets::check_bytes(&image);
        fuzz_targets::dump_json(&image);
    }
}

#[test]
fn regression_images_stay_small() {
    for dir in cases() {
        let len = std::fs::metadata(dir.join("image.qcow2"))
            .expect("image.qcow2")
            .len();
        assert!(len <= 4 << 20, "{}: {len} bytes", dir.display());
    }
}
