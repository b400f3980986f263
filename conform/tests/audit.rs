//! The audit of `docs/findings.md` ("Audit: every cause, per
//! implementation"), replayed. `audit/causes.json` lists, for each
//! implementation, every distinct cause the suite has seen it give: the
//! outcome, the cause key (`runner::judge::cause`), the spec section and sentence
//! the judgement rests on, and a reproducer (a corpus case, or a campaign
//! reproducer under `fuzz_targets/regressions/`). This test runs each
//! implementation over its reproducers with `qcow2-conform run` (write
//! check on, as by default) and checks that every one still ends in the
//! recorded outcome with the recorded key, that each entry cites the
//! obligation the outcome names (with its sentence), and that the doc lists
//! every entry.

#[path = "common/cli.rs"]
mod cli;

use cli::{run_report, BIN};
use conform::runner::judge::cause::Cause;
use generator::{Expected, Manifest, ManifestCase};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
struct Audit {
    causes: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    implementation: String,
    outcome: String,
    key: String,
    /// A corpus case ID, or `regression:KEY`.
    reproducer: String,
    section: String,
    spec: String,
    /// The obligation the outcome names, else the rules the spec is silent
    /// about, else `-`.
    cites: String,
    /// Its sentence (the catalogue's, in the project's words).
    sentence: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn audit() -> Audit {
    let path = root().join("audit/causes.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("audit/causes.json parses")
}

/// The case a reproducer names, with its files copied under `dir` at the
/// paths the case gives (relative to `dir`).
fn stage(reproducer: &str, corpus: &Manifest, dir: &Path) -> ManifestCase {
    let copy = |from: &Path, to: &str| {
        let dest = dir.join(to);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    };
    if let Some(key) = reproducer.strip_prefix("regression:") {
        let src = root().join("fuzz_targets/regressions").join(key);
        let finding: serde_json::Value = serde_json::from_slice(
            &std::fs::read(src.join("finding.json"))
                .unwrap_or_else(|e| panic!("{}/finding.json: {e}", src.display())),
        )
        .unwrap();
        let expected: Expected = serde_json::from_value(finding["expected"].clone()).unwrap();
        let file = format!("regressions/{key}/image.qcow2");
        copy(&src.join("image.qcow2"), &file);
        ManifestCase {
            id: reproducer.to_owned(),
            file,
            expected,
            description: String::new(),
            companions: Vec::new(),
            secret: None,
        }
    } else {
        let case = corpus
            .cases
            .iter()
            .find(|c| c.id == reproducer)
            .unwrap_or_else(|| panic!("no corpus case {reproducer}"))
            .clone();
        for f in std::iter::once(&case.file).chain(&case.companions) {
            copy(&root().join("corpus").join(f), f);
        }
        case
    }
}

#[test]
fn every_audited_cause_replays() {
    let audit = audit();
    assert!(!audit.causes.is_empty());
    let corpus =
        Manifest::from_json(&std::fs::read_to_string(root().join("corpus/manifest.json")).unwrap())
            .unwrap();
    let mut by_impl: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in &audit.causes {
        by_impl.entry(&e.implementation).or_default().push(e);
    }
    let mut wrong = Vec::new();
    for (imp, entries) in by_impl {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("corpus");
        let mut cases: Vec<ManifestCase> = Vec::new();
        for e in &entries {
            if !cases.iter().any(|c| c.id == e.reproducer) {
                cases.push(stage(&e.reproducer, &corpus, &dir));
            }
        }
        std::fs::write(dir.join("manifest.json"), Manifest::new(cases).to_json()).unwrap();
        let report = run_report(
            &dir,
            &tmp.path().join("report.json"),
            &["--impl", imp, "--jobs", "2", "--fail-on", "none"],
        );
        for e in entries {
            let case = report["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == e.reproducer.as_str())
                .unwrap_or_else(|| panic!("{imp}: no result for {}", e.reproducer));
            let outcome = &case["results"][0]["outcome"];
            let kind = outcome["kind"].as_str().unwrap_or_default();
            let cause: Cause = serde_json::from_value(outcome["cause"].clone())
                .unwrap_or_else(|err| panic!("{imp} {}: cause: {err}", e.reproducer));
            let key = cause.key(kind);
            let cited = !cause.obligation.is_empty() && cause.obligation != e.cites;
            if cited || e.sentence.is_empty() {
                wrong.push(format!(
                    "{imp} {}: cites {:?} ({:?}), the outcome names {:?}",
                    e.reproducer, e.cites, e.sentence, cause.obligation
                ));
            }
            if kind != e.outcome || key != e.key {
                wrong.push(format!(
                    "{imp} {}: recorded {} {}, now {kind} {key}: {}",
                    e.reproducer, e.outcome, e.key, outcome["detail"]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{BIN}: causes changed:\n{}",
        wrong.join("\n")
    );
}

/// `docs/findings.md` lists every audited cause (its implementation, key
/// and reproducer) and cites a spec section for each.
#[test]
fn the_doc_lists_every_audited_cause() {
    let doc = std::fs::read_to_string(root().join("docs/findings.md")).unwrap();
    let start = doc
        .find("## Audit: every cause, per implementation")
        .expect("the audit section");
    let section = &doc[start..];
    let mut missing = Vec::new();
    for e in audit().causes {
        assert!(!e.section.is_empty() && !e.spec.is_empty(), "{e:?}");
        let row = format!("| `{}` | {} | `{}` |", e.key, e.outcome, e.reproducer);
        if !section.contains(&row) {
            missing.push(format!("{} {row}", e.implementation));
        }
    }
    assert!(
        missing.is_empty(),
        "rows missing from docs/findings.md (regenerate the audit section):\n{}",
        missing.join("\n")
    );
}
