//! `qcow2-conform run --impl qemu` end to end against the real QEMU tools:
//! generated valid images (QEMU profile) all pass, read-only and with the
//! write check (except for one known QEMU defect, pinned below); one-rule
//! mutants from the mutation catalogue neither crash nor hang QEMU; the
//! corpus is byte-identical afterwards.

use generator::{mutate, Config, Manifest, ManifestCase};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

/// Runs `qcow2-conform run --impl qemu` and returns the JSON report.
fn run_qemu(corpus: &Path, out: &Path, extra: &[&str]) -> Value {
    let json = out.join(format!("report-{}.json", extra.join("")));
    let mut args = vec!["--impl", "qemu", "--fail-on", "none", "--jobs", "2"];
    args.extend_from_slice(extra);
    let report = cli::run_report(corpus, &json, &args);
    // Keep the report for inspection when asked to.
    if let Some(keep) = std::env::var_os("RUNNER_QEMU_KEEP") {
        let name = corpus.file_name().unwrap().to_string_lossy().into_owned();
        let _ = std::fs::copy(
            &json,
            Path::new(&keep).join(format!(
                "{name}-{}",
                json.file_name().unwrap().to_string_lossy()
            )),
        );
    }
    report
}

fn results(report: &Value) -> Vec<(String, String, Value)> {
    cli::report_cases(report)
        .iter()
        .map(|c| {
            let r = &c["results"][0];
            (
                c["id"].as_str().unwrap().to_owned(),
                r["outcome"]["kind"].as_str().unwrap().to_owned(),
                c.clone(),
            )
        })
        .collect()
}

/// Whether the image has a bitmap whose last table entry reads as all
/// ones (no data cluster): QEMU keeps the ones past the bitmap's end when
/// it loads such an entry and writes them back as set tail bits.
fn has_trailing_all_ones_entry(image: &Path) -> bool {
    let m = spec_model::Model::open(std::fs::File::open(image).unwrap()).unwrap();
    m.analysis().entries.iter().any(|e| {
        e.table
            .as_ref()
            .and_then(|t| t.last())
            .is_some_and(|&x| x & 1 == 1 && x & 0x00ff_ffff_ffff_fe00 == 0)
    })
}

#[test]
fn generated_valid_images_pass_under_qemu() {
    let started = std::time::Instant::now();
    let (tmp, corpus) = cli::generated_corpus(
        "valid",
        &[
            "--seed",
            "11",
            "--count",
            "60",
            "--profile",
            "qemu",
            "--valid",
        ],
    );

    // Read-only: info, check and every bitmap exported over NBD agree.
    let report = run_qemu(&corpus, tmp.path(), &["--read-only"]);
    let rs = results(&report);
    assert_eq!(rs.len(), 60);
    let bad: Vec<String> = rs
        .iter()
        .filter(|(_, k, _)| k != "pass")
        .map(|(id, k, c)| format!("{id}: {k}: {}", c["results"][0]["outcome"]["detail"]))
        .collect();
    assert!(
        bad.is_empty(),
        "valid cases that do not pass:\n{}",
        bad.join("\n")
    );
    let exported: usize = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["results"][0]["observation"]["bitmaps"]
                .as_array()
                .unwrap()
        })
        .filter(|b| b["content_sha256"].is_string())
        .count();
    assert!(
        exported >= 20,
        "only {exported} bitmaps exported and compared"
    );

    // With the write check: qemu-io writes into a copy, the model judges
    // the result. Everything passes but for QEMU's tail-bit defect.
    let report = run_qemu(&corpus, tmp.path(), &[]);
    let mut written = 0;
    for (id, kind, case) in results(&report) {
        let w = &case["results"][0]["observation"]["write"];
        if w.is_object() {
            written += 1;
        }
        match kind.as_str() {
            "pass" => {}
            "corrupting" => {
                let problems = w["problems"].as_array().unwrap();
                let image = corpus.join(case["file"].as_str().unwrap());
                assert!(
                    problems.len() == 1
                        && problems[0]
                            .as_str()
                            .unwrap()
                            .contains("bitmaps.data.tail-bits")
                        && has_trailing_all_ones_entry(&image),
                    "{id}: corrupting for another reason: {w}"
                );
            }
            other => panic!("{id}: {other}: {}", case["results"][0]["outcome"]),
        }
    }
    assert!(written >= 15, "only {written} write checks ran");
    cli::assert_within(started, 90);
}

/// A corpus of one mutant per (non-heavy) mutation, QEMU profile: from
/// `generate --mutants` when it works, else from the mutation catalogue.
fn mutant_corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("mutants");
    let n = mutate::catalogue().iter().filter(|m| !m.heavy).count();
    let g = Command::new(BIN)
        .args([
            "generate",
            "--seed",
            "5",
            "--count",
            &n.to_string(),
            "--profile",
            "qemu",
            "--mutants",
            "--out",
        ])
        .arg(&corpus)
        .output()
        .unwrap();
    if g.status.success() {
        return corpus;
    }
    std::fs::create_dir_all(corpus.join("images")).unwrap();
    let cfg = Config::qemu();
    let mut cases = Vec::new();
    for (i, m) in mutate::catalogue().iter().filter(|m| !m.heavy).enumerate() {
        let Ok(mutant) = mutate::make(m, 5 + i as u64, &cfg) else {
            continue;
        };
        let file = format!("images/mutant-{i:04}.qcow2");
        std::fs::write(corpus.join(&file), &mutant.bytes).unwrap();
        cases.push(ManifestCase {
            id: format!("{}/{i:04}", m.rule.id()),
            file,
            expected: mutant.expected,
            description: format!("{}: {}", m.id, mutant.description),
            companions: Vec::new(),
            secret: None,
        });
    }
    std::fs::write(corpus.join("manifest.json"), Manifest::new(cases).to_json()).unwrap();
    corpus
}

#[test]
fn mutants_neither_crash_nor_hang_qemu() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = mutant_corpus(tmp.path());
    let report = run_qemu(&corpus, tmp.path(), &["--timeout", "20"]);
    let rs = results(&report);
    assert!(rs.len() >= 30, "only {} mutants", rs.len());
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines = Vec::new();
    for (id, kind, case) in &rs {
        *tally.entry(kind.clone()).or_default() += 1;
        if kind != "pass" {
            lines.push(format!(
                "{id}: {kind}: {}",
                case["results"][0]["outcome"]["detail"][0]
            ));
        }
    }
    eprintln!(
        "QEMU over {} mutants: {tally:?}\n{}",
        rs.len(),
        lines.join("\n")
    );
    for (id, kind, case) in &rs {
        assert!(
            kind != "crash" && kind != "hang",
            "{id}: {kind}: {}",
            case["results"][0]
        );
    }
    // A mutant that QEMU's checker calls corrupt while info still lists its
    // bitmaps is reported with both facts.
    for (_, _, case) in &rs {
        let r = &case["results"][0];
        let o = &r["observation"];
        let corrupt = o["integrity"]["corruptions"].as_u64().unwrap_or(0) > 0;
        if case["expected"]["verdict"] == "invalid" && o["opened"] == true && corrupt {
            assert!(
                r["outcome"]["detail"].to_string().contains("corruption"),
                "{r}"
            );
        }
    }
    cli::assert_within(started, 90);
}
