//! Reading a JUnit file the way CI systems do: through `junitparser`
//! (installed by `scripts/setup.sh` into the project's `.venv`), returned
//! as JSON. A missing venv fails the test that asks, loudly. Included with
//! `#[path = "common/junit.rs"] mod junit;` beside `common/cli.rs` as `cli`.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's Python: `QCOW2_CONFORM_VENV/bin/python`, else the
/// workspace's `.venv/bin/python`.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("QCOW2_CONFORM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::cli::workspace().join(".venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh (it makes the venv with junitparser)",
        py.display()
    );
    py
}

const READ: &str = r#"
import json, sys
from junitparser import JUnitXml, TestSuite
xml = JUnitXml.fromfile(sys.argv[1])
suites = [xml] if isinstance(xml, TestSuite) else list(xml)
out = {"tests": xml.tests, "failures": xml.failures, "errors": xml.errors,
       "skipped": xml.skipped, "time": xml.time, "suites": []}
for s in suites:
    cases = []
    for c in s:
        cases.append({"name": c.name, "classname": c.classname, "time": c.time,
                      "results": [{"tag": type(r).__name__.lower(),
                                   "message": r.message, "type": r.type}
                                  for r in c.result]})
    out["suites"].append({
        "name": s.name, "tests": s.tests, "failures": s.failures,
        "errors": s.errors, "skipped": s.skipped, "time": s.time,
        "timestamp": s.timestamp, "hostname": s.hostname,
        "properties": {p.name: p.value for p in s.properties()},
        "cases": cases})
print(json.dumps(out))
"#;

/// The JUnit file at `path` as junitparser reads it: totals, and per suite
/// its attributes, properties and test cases with their results
/// (`failure`, `error`, `skipped`).
pub fn read(path: &Path) -> Value {
    let o = Command::new(python())
        .arg("-c")
        .arg(READ)
        .arg(path)
        .output()
        .expect("run the venv's python");
    assert!(
        o.status.success(),
        "junitparser could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The result tag of a test case (`pass` for none).
pub fn tag(case: &Value) -> String {
    case["results"]
        .as_array()
        .and_then(|r| r.first())
        .map(|r| r["tag"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| "pass".into())
}
