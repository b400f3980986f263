//! The shared corpus: `corpus verify` passes on the checked-in corpus and
//! fails when one image byte or one manifest field changes; `corpus build`
//! is byte-identical run to run and reproduces the checked-in tree; every
//! catalogue rule and every draft revision has a case; `corpus pack` makes a
//! tarball whose SHA256SUMS check out.

#[path = "common/cli.rs"]
mod cli;

use generator::Manifest;
use std::path::{Path, PathBuf};
use std::process::Command;

fn conform() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
}

fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// Every file below `dir` (the vendor kit included: `corpus build` writes
/// it), by relative path, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    cli::tree_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.strip_prefix(dir).unwrap().display().to_string(), bytes)
        })
        .collect()
}

fn verify(dir: &Path) -> i32 {
    conform()
        .args(["corpus", "verify"])
        .arg(dir)
        .output()
        .unwrap()
        .status
        .code()
        .unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    for (rel, bytes) in files(from) {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

#[test]
fn checked_in_corpus_verifies_and_detects_tampering() {
    assert_eq!(
        verify(&checked_in()),
        0,
        "run `qcow2-conform corpus build` and commit"
    );

    let t = tempfile::tempdir().unwrap();
    copy_tree(&checked_in(), t.path());
    assert_eq!(verify(t.path()), 0);
    // One byte of one image.
    let m = Manifest::from_json(&std::fs::read_to_string(t.path().join("manifest.json")).unwrap())
        .unwrap();
    let img = t.path().join(&m.cases[3].file);
    let mut b = std::fs::read(&img).unwrap();
    b[7] ^= 1;
    std::fs::write(&img, &b).unwrap();
    assert_eq!(verify(t.path()), 2, "a changed image byte is caught");
    b[7] ^= 1;
    std::fs::write(&img, &b).unwrap();
    assert_eq!(verify(t.path()), 0);
    // One manifest field: the expected verdict of one case.
    let text = std::fs::read_to_string(t.path().join("manifest.json")).unwrap();
    let changed = text.replacen("\"verdict\": \"valid\"", "\"verdict\": \"unspecified\"", 1);
    assert_ne!(text, changed);
    std::fs::write(t.path().join("manifest.json"), changed).unwrap();
    assert_eq!(verify(t.path()), 2, "a changed manifest field is caught");
}

#[test]
fn two_builds_are_identical_and_match_the_checked_in_corpus() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [a.path(), b.path()] {
        assert!(conform()
            .args(["corpus", "build"])
            .arg(d)
            .status()
            .unwrap()
            .success());
    }
    let fa = files(a.path());
    assert_eq!(fa, files(b.path()), "two builds differ");
    let fc = files(&checked_in());
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&fa),
        names(&fc),
        "the checked-in corpus has other files than a fresh build"
    );
    for ((n, x), (_, y)) in fa.iter().zip(&fc) {
        assert!(
            x == y,
            "{n} differs from a fresh build: rebuild the corpus and commit"
        );
    }
    let total: usize = fc.iter().map(|(_, b)| b.len()).sum();
    assert!(total < 20 << 20, "the corpus is {total} bytes, over 20 MiB");
}

#[test]
fn every_rule_and_every_draft_has_a_case() {
    let m =
        Manifest::from_json(&std::fs::read_to_string(checked_in().join("manifest.json")).unwrap())
            .unwrap();
    let mut missing = Vec::new();
    for r in spec_model::Rule::ALL {
        if !m
            .cases
            .iter()
            .any(|c| c.expected.rules.iter().any(|x| x == r.id()))
        {
            missing.push(r.id());
        }
    }
    assert!(
        missing.is_empty(),
        "rules without a corpus case: {missing:?}"
    );
    for rev in spec_model::Revision::ALL
        .iter()
        .filter(|r| **r != spec_model::Revision::Final)
    {
        let prefix = format!("revision/{rev}/");
        assert!(
            m.cases.iter().any(|c| c.id.starts_with(&prefix)),
            "no case for {rev}"
        );
    }
    let ids: std::collections::BTreeSet<_> = m.cases.iter().map(|c| &c.id).collect();
    assert_eq!(ids.len(), m.cases.len(), "case IDs are unique");
}

#[test]
fn pack_makes_a_tarball_whose_checksums_hold() {
    let out = tempfile::tempdir().unwrap();
    let o = conform()
        .args(["corpus", "pack"])
        .arg(checked_in())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tarball: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(tarball.len(), 1);
    let st = Command::new("sha256sum")
        .arg("-c")
        .arg(format!(
            "{}.sha256",
            tarball[0].file_name().unwrap().to_string_lossy()
        ))
        .current_dir(out.path())
        .status()
        .unwrap();
    assert!(st.success(), "tarball checksum");
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball[0])
        .current_dir(out.path())
        .status()
        .unwrap();
    assert!(st.success());
    let root = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let st = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(st.success(), "SHA256SUMS inside the tarball");
    assert!(root.join("README.md").exists());
    // Packing twice gives the same tarball.
    let again = tempfile::tempdir().unwrap();
    assert!(conform()
        .args(["corpus", "pack"])
        .arg(checked_in())
        .arg("--out")
        .arg(again.path())
        .output()
        .unwrap()
        .status
        .success());
    let name = tarball[0].file_name().unwrap();
    assert_eq!(
        std::fs::read(&tarball[0]).unwrap(),
        std::fs::read(again.path().join(name)).unwrap()
    );
}

#[test]
fn the_covering_auto_bitmap_covers_the_runners_write_range() {
    // `valid/auto-bits-cover-write-range` exists to show whether a writer
    // that sets no new bit still handles the header: its bits must cover
    // every granule the runner's write touches.
    let (_, spec) = generator::corpus::hand_specs()
        .into_iter()
        .find(|(id, _)| *id == "auto-bits-cover-write-range")
        .expect("the case is planned");
    let (offset, len) = conform::runner::judge::write_check::write_range(spec.size);
    assert!(len > 0);
    let b = &spec.bitmaps[0];
    assert!(b.auto);
    let g = u32::from(b.granularity_bits);
    let nbits = spec.geometry(b).nbits();
    let set = b.contents.ranges(nbits);
    let (first, last) = (offset >> g, (offset + len - 1) >> g);
    assert!(
        set.iter().any(|&(a, z)| a <= first && last < z),
        "granules {first}..={last} not all set in {set:?}"
    );
}
