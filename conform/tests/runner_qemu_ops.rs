//! QEMU's write path beyond guest writes: `qcow2-conform run --impl qemu
//! --bitmap-ops` runs `qemu-img bitmap --add/--merge/--disable/--enable/
//! --clear/--remove`, `qemu-io` writes in between, `qemu-img convert
//! --bitmaps` and `qemu-img resize` (grow, then shrink back) on a copy of
//! every generated valid image with bitmaps, and the model checks each
//! result: still conforming, and the bits equal to the expected algebra
//! (`conform/src/runner/adapters/qemu/ops.rs`). A wrapped `qemu-img` that silently skips
//! an operation is caught as `corrupting`.

use generator::{cases, Config, Manifest, ManifestCase};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qcow2-conform");

/// Valid version 3 images with a consistent bitmaps extension, QEMU
/// profile plus `in_use` bitmaps, without "all ones" table entries (QEMU's tail-bit defect,
/// docs/findings.md, would stop every sequence at its first step).
fn corpus(dir: &Path, seed: u64, want: usize, cfg: &Config) -> PathBuf {
    let corpus = dir.join(format!("ops-{seed}"));
    std::fs::create_dir_all(corpus.join("images")).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < want {
        assert!(i < 2000, "too few images with bitmaps");
        let c = cases::valid(seed, i, cfg).unwrap();
        i += 1;
        let with_bitmaps = c.expected.bitmaps.as_ref().is_some_and(|b| !b.is_empty());
        if c.expected.bitmaps_extension != spec_model::ExtensionState::Consistent || !with_bitmaps {
            continue;
        }
        let file = format!("images/{}", c.file_name);
        std::fs::write(corpus.join(&file), &c.bytes).unwrap();
        out.push(ManifestCase {
            id: c.id,
            file,
            expected: c.expected,
            description: c.description,
            companions: Vec::new(),
            secret: None,
        });
    }
    std::fs::write(corpus.join("manifest.json"), Manifest::new(out).to_json()).unwrap();
    corpus
}

fn config() -> Config {
    Config {
        versions: vec![3],
        allow_ones_entries: false,
        allow_in_use: true,
        max_size: 64 << 20,
        ..Config::qemu()
    }
}

fn run(corpus: &Path, env: &[(&str, &Path)]) -> Value {
    let json = corpus.join("report.json");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--impl", "qemu", "--bitmap-ops", "--corpus"])
        .arg(corpus)
        .arg("--json")
        .arg(&json)
        .args(["--jobs", "2", "--fail-on", "none"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

#[test]
fn qemu_bitmap_operations_keep_images_conforming_and_bits_right() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus(tmp.path(), 21, 16, &config());
    let report = run(&corpus, &[]);
    let mut full = 0;
    let mut steps_seen = std::collections::BTreeSet::new();
    for c in report["cases"].as_array().unwrap() {
        let r = &c["results"][0];
        let ops = &r["observation"]["ops"];
        assert!(
            ops.is_object(),
            "{}: no bitmap operations ran: {r}",
            c["id"]
        );
        assert_eq!(
            ops["problems"].as_array().unwrap().len(),
            0,
            "{}: {}",
            c["id"],
            ops
        );
        assert_eq!(
            r["outcome"]["kind"], "pass",
            "{}: {}",
            c["id"], r["outcome"]
        );
        let steps = ops["steps"].as_array().unwrap();
        for s in steps {
            let op = s["op"].as_str().unwrap();
            let word = op
                .split_whitespace()
                .filter(|w| !w.starts_with(|c: char| c.is_ascii_digit() || c == '"'))
                .collect::<Vec<_>>()
                .join(" ");
            steps_seen.insert(word);
            // QEMU refuses to resize an image with an in_use bitmap
            // ("... is inconsistent and cannot be used"): a note, and the
            // image must stay as it was (checked by the runner).
            assert!(
                s["ok"] == true
                    || (op.starts_with("qemu-img resize")
                        && s["error"].as_str().unwrap().contains("inconsistent")),
                "{}: {op} refused: {s}",
                c["id"]
            );
        }
        if steps.len() >= 10 {
            full += 1;
        }
        for n in ops["notes"].as_array().unwrap() {
            eprintln!("{}: note: {}", c["id"], n);
        }
    }
    eprintln!("operations seen: {steps_seen:?}");
    for op in [
        "qemu-img bitmap --add",
        "qemu-img bitmap --merge",
        "qemu-img bitmap --disable",
        "qemu-img bitmap --enable",
        "qemu-img bitmap --clear",
        "qemu-img bitmap --remove",
        "qemu-img measure -O qcow2 -o cluster_size=65536",
        "qemu-img measure -O qcow2 -o cluster_size=4096",
        "qemu-img convert --bitmaps",
        "qemu-io write",
        "qemu-img resize",
        "qemu-img resize --shrink",
    ] {
        assert!(
            steps_seen.iter().any(|s| s.starts_with(op)),
            "{op} never ran: {steps_seen:?}"
        );
    }
    assert!(full >= 12, "only {full} complete sequences");
    assert!(
        started.elapsed().as_secs() < 120,
        "took {:?}",
        started.elapsed()
    );
}

/// A `qemu-img` that does nothing for one operation (chosen by
/// `SKIP_OP`) but reports success, and otherwise runs the real one.
const WRAPPER: &str = r#"#!/bin/sh
for a in "$@"; do
  if [ "$a" = "$SKIP_OP" ]; then exit 0; fi
done
exec "$REAL_QEMU_IMG" "$@"
"#;

fn real_qemu_img() -> PathBuf {
    conform::runner::adapters::qemu::Tool::Img.locate().unwrap()
}

#[test]
fn skipped_operations_are_corrupting() {
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = tmp.path().join("qemu-img");
    std::fs::write(&wrapper, WRAPPER).unwrap();
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    assert!(chmod.success());
    let real = real_qemu_img();
    for (skip, expect) in [
        ("--clear", "after qemu-img bitmap --clear"),
        ("--merge", "after qemu-img bitmap --merge"),
        ("--bitmaps", "after qemu-img convert --bitmaps"),
    ] {
        let corpus = corpus(tmp.path(), 31, 3, &config());
        let report = run(
            &corpus,
            &[
                ("QEMU_IMG_PROG", &wrapper),
                ("REAL_QEMU_IMG", &real),
                ("SKIP_OP", Path::new(skip)),
            ],
        );
        let mut hits = 0;
        for c in report["cases"].as_array().unwrap() {
            let r = &c["results"][0];
            let detail = r["outcome"]["detail"].to_string();
            if detail.contains(expect) {
                assert_eq!(r["outcome"]["kind"], "corrupting", "{r}");
                hits += 1;
            }
        }
        assert!(
            hits >= 1,
            "skipping {skip} went unnoticed: {}",
            report["cases"]
        );
        std::fs::remove_dir_all(&corpus).unwrap();
    }
}

/// `qemu-img measure` of generated images with bitmaps (some `in_use`,
/// granularities and names of every size the generator draws), each
/// answer judged by the model's `bitmaps::space::copy_size`; an answer off
/// by one cluster is a problem.
#[test]
fn qemu_img_measure_reports_the_bitmaps_size_the_model_computes() {
    use conform::runner::adapters::qemu::measure;
    use spec_model::bitmaps::space::Planned;
    let tmp = tempfile::tempdir().unwrap();
    let img = real_qemu_img();
    let cfg = config();
    let mut judged = 0;
    let mut i = 0;
    while judged < 8 {
        assert!(i < 2000, "too few images with bitmaps");
        let c = cases::valid(41, i, &cfg).unwrap();
        i += 1;
        let Some(bms) = c.expected.bitmaps.as_ref().filter(|b| !b.is_empty()) else {
            continue;
        };
        let planned: Vec<Planned> = bms
            .iter()
            .map(|b| Planned {
                name_len: b.name.len(),
                granularity_bits: b.granularity_bits,
            })
            .collect();
        let size = spec_model::check_bytes(&c.bytes);
        assert_eq!(size.verdict, spec_model::Verdict::Valid);
        let path = tmp.path().join(&c.file_name);
        std::fs::write(&path, &c.bytes).unwrap();
        let virtual_size = u64::from_be_bytes(c.bytes[24..32].try_into().unwrap());
        for bits in measure::CLUSTER_BITS {
            let o = Command::new(&img)
                .args(measure::arguments(&path, bits))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let answer = String::from_utf8(o.stdout).unwrap();
            let p = measure::judge(&answer, &planned, virtual_size, bits);
            assert!(p.is_empty(), "{}: {p:?} ({answer})", c.id);
            // The same answer with one cluster more is caught.
            let v: Value = serde_json::from_str(&answer).unwrap();
            let wrong = v["bitmaps"].as_u64().unwrap() + (1 << bits);
            let tampered = answer.replace(
                &format!("\"bitmaps\": {}", v["bitmaps"]),
                &format!("\"bitmaps\": {wrong}"),
            );
            assert_ne!(tampered, answer, "{answer}");
            assert_eq!(
                measure::judge(&tampered, &planned, virtual_size, bits).len(),
                1
            );
        }
        judged += 1;
    }
}
