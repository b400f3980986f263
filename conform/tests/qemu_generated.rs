//! Generated valid images within QEMU's limits, judged by the real QEMU:
//! `qemu-img check` finds no errors and no leaks, `qemu-img info` lists
//! exactly the expected bitmaps, and each bitmap exported over NBD
//! (`qemu-nbd -B`) has exactly the expected dirty ranges.

#[path = "common/qemu.rs"]
mod qemu;

use generator::cases::{case_seed, spec_from_seed};
use generator::{build, Config, ImageSpec};
use rayon::prelude::*;

/// Dirty virtual byte ranges of every bitmap, from the spec alone.
fn expected_ranges(spec: &ImageSpec) -> Vec<Vec<(u64, u64)>> {
    spec.bitmaps
        .iter()
        .map(|b| {
            let geo = spec.geometry(b);
            let mut out: Vec<(u64, u64)> = Vec::new();
            for (a, z) in b.contents.ranges(geo.nbits()) {
                let (s, e) = geo.virtual_range(a, z);
                match out.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => out.push((s, e)),
                }
            }
            out
        })
        .collect()
}

fn judge(index: u64, dir: &std::path::Path) -> Result<usize, String> {
    let spec = spec_from_seed(case_seed(2026, index), &Config::qemu());
    let built = build(&spec).map_err(|e| format!("case {index}: build: {e}"))?;
    let path = dir.join(format!("case-{index}.qcow2"));
    std::fs::write(&path, &built.bytes).map_err(|e| e.to_string())?;
    let ctx = |what: &str| {
        format!(
            "case {index} ({what}): {}",
            serde_json::to_string(&spec).unwrap()
        )
    };

    let check = qemu::check_json(&path).map_err(|e| format!("{}: {e:#}", ctx("check")))?;
    if !check.is_clean() {
        return Err(format!("{}: qemu-img check: {check:?}", ctx("check")));
    }
    let info = qemu::info_json(&path).map_err(|e| format!("{}: {e:#}", ctx("info")))?;
    let listed = info.bitmaps();
    if listed.len() != spec.bitmaps.len() {
        return Err(format!(
            "{}: info lists {} bitmaps, expected {}",
            ctx("info"),
            listed.len(),
            spec.bitmaps.len()
        ));
    }
    for (got, want) in listed.iter().zip(&spec.bitmaps) {
        let same = got.name.as_bytes() == want.name.as_slice()
            && got.granularity_bits() == Some(want.granularity_bits)
            && got.in_use() == want.in_use
            && got.auto() == want.auto;
        if !same {
            return Err(format!(
                "{}: info {got:?} vs spec {:?}",
                ctx("info"),
                String::from_utf8_lossy(&want.name)
            ));
        }
    }
    let ranges = expected_ranges(&spec);
    for (b, want) in spec.bitmaps.iter().zip(&ranges) {
        let name = String::from_utf8_lossy(&b.name).into_owned();
        let got =
            qemu::nbd_dirty_ranges(&path, &name).map_err(|e| format!("{}: {e:#}", ctx("nbd")))?;
        if &got != want {
            return Err(format!(
                "{}: bitmap {name:?} over NBD {got:?}, expected {want:?}",
                ctx("nbd")
            ));
        }
    }
    std::fs::remove_file(&path).ok();
    Ok(spec.bitmaps.len())
}

#[test]
fn three_hundred_generated_images_agree_with_qemu() {
    let n: u64 = std::env::var("QEMU_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let results: Vec<Result<usize, String>> = (0..n)
        .into_par_iter()
        .map(|i| judge(i, dir.path()))
        .collect();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let bitmaps: usize = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    assert!(
        failures.is_empty(),
        "{} of {n} cases disagree with QEMU:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // The run must have exercised bitmaps, not only bare images.
    assert!(
        bitmaps as u64 >= n / 2,
        "only {bitmaps} bitmaps in {n} cases"
    );
}
