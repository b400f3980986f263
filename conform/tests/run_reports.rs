//! What `run` gives a CI system, pinned on the bundled corpus with small
//! exec-protocol programs (a refuser, a crasher, a hanger) and the real
//! QEMU and imago: JUnit as junitparser reads it, the case filters,
//! expectations files, and the provenance (versions) in every report.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/cli.rs"]
mod cli;
#[path = "common/junit.rs"]
mod junit;
use cli::{workspace as root, BIN};

fn corpus() -> PathBuf {
    root().join("corpus")
}

fn manifest() -> Value {
    serde_json::from_slice(&std::fs::read(corpus().join("manifest.json")).unwrap()).unwrap()
}

/// An exec-protocol program: answers `capabilities` (with `identity`
/// spliced into the answer) and does `observe` as the shell code says.
fn program(dir: &Path, name: &str, identity: &str, observe: &str) -> String {
    cli::sh_program(
        dir,
        &format!("{name}.sh"),
        &format!("\"capabilities\": [\"observe\"]{identity}"),
        &format!("observe) {observe} ;;\n*) exit 1 ;;"),
    )
}

fn refuser(dir: &Path) -> String {
    program(
        dir,
        "refuser",
        ", \"name\": \"refuser\", \"version\": \"3.1.4\"",
        "echo '{\"protocol\": 1, \"opened\": false, \"error\": \"refused\"}'",
    )
}

fn run(args: &[&str], impls: &[&str]) -> (Output, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("--corpus").arg(corpus());
    for i in impls {
        cmd.arg("--impl").arg(i);
    }
    cmd.args(args);
    let o = cmd.output().expect("run qcow2-conform");
    let text = cli::output_text(&o);
    (o, text)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn case_ids(report: &Value) -> BTreeSet<String> {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The first case of the manifest whose expected verdict is `verdict`.
fn first_case(verdict: &str) -> String {
    manifest()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["expected"]["verdict"] == verdict)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn junit_marks_failures_errors_and_skips_exactly_where_the_run_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let impls = [
        refuser(tmp.path()),
        program(tmp.path(), "crasher", "", "kill -SEGV $$"),
        program(tmp.path(), "hanger", "", "sleep 30"),
    ];
    let impls: Vec<&str> = impls.iter().map(String::as_str).collect();
    let unspecified = first_case("unspecified");
    let invalid = first_case("invalid");
    let cases = [
        "--case",
        "valid/cluster-64k",
        "--case",
        &unspecified,
        "--case",
        &invalid,
    ];
    for fail_on in ["default", "strict", "none"] {
        let json = tmp.path().join(format!("{fail_on}.json"));
        let xml = tmp.path().join(format!("{fail_on}.xml"));
        let mut args = cases.to_vec();
        let (json_s, xml_s) = (json.to_str().unwrap(), xml.to_str().unwrap());
        args.extend([
            "--timeout",
            "2",
            "--jobs",
            "4",
            "--fail-on",
            fail_on,
            "--json",
            json_s,
            "--junit",
            xml_s,
        ]);
        let (o, text) = run(&args, &impls);
        let report = read_json(&json);
        let failing: BTreeSet<&str> = match fail_on {
            "default" => cli::FAILING_BY_DEFAULT.into(),
            "strict" => ["strict"].into(),
            _ => BTreeSet::new(),
        };
        let j = junit::read(&xml);
        let mut seen = BTreeSet::new();
        let mut fails = 0;
        for (s, spec) in j["suites"].as_array().unwrap().iter().zip(&impls) {
            let name = &cli::implementation_key(&report, spec);
            assert_eq!(s["name"], name.as_str());
            assert!(!name.contains(' '), "JUnit names have no spaces: {name}");
            let cases = s["cases"].as_array().unwrap();
            // Every suite's counts agree with its test cases.
            for (attr, tag) in [
                ("failures", "failure"),
                ("errors", "error"),
                ("skipped", "skipped"),
            ] {
                let n = cases.iter().filter(|c| junit::tag(c) == tag).count();
                assert_eq!(s[attr], n, "{attr} of {name}");
            }
            assert_eq!(s["tests"], cases.len());
            assert!(s["time"].as_f64().unwrap() > 0.0);
            assert!(!s["timestamp"].as_str().unwrap().is_empty());
            for c in cases {
                let id = c["name"].as_str().unwrap();
                let kind = cli::report_result(&report, id, name)["outcome"]["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let want = match kind.as_str() {
                    "pass" => "pass",
                    k if failing.contains(k) && matches!(k, "crash" | "hang") => "error",
                    k if failing.contains(k) => "failure",
                    _ => "skipped",
                };
                let tag = junit::tag(c);
                assert_eq!(
                    tag, want,
                    "{id} under {name}: {kind} with --fail-on {fail_on}"
                );
                if tag == "skipped" {
                    let why = c["results"][0]["message"].as_str().unwrap();
                    assert!(why.starts_with(&format!("{kind}:")), "{why}");
                }
                if want != "pass" && want != "skipped" {
                    fails += 1;
                }
                seen.insert((kind, tag));
            }
        }
        // The run fails exactly when JUnit shows a failure or error.
        let want_status = if fails > 0 { 2 } else { 0 };
        assert_eq!(o.status.code(), Some(want_status), "{text}");
        assert_eq!(
            report["gate"]["failed"].as_array().unwrap().len(),
            fails,
            "{}",
            report["gate"]
        );
        if fail_on == "default" {
            // Every mapping was exercised.
            for (k, t) in [
                ("crash", "error"),
                ("hang", "error"),
                ("strict", "failure"),
                ("pass", "pass"),
                ("recorded", "skipped"),
            ] {
                assert!(
                    seen.contains(&(k.to_owned(), t.to_owned())),
                    "{k} as {t} not seen: {seen:?}"
                );
            }
        }
    }
}

#[test]
fn filters_pick_cases_by_glob_rule_and_earlier_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let r = refuser(tmp.path());
    let m = manifest();
    let all: Vec<&Value> = m["cases"].as_array().unwrap().iter().collect();
    let ids = |f: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        all.iter()
            .filter(|c| f(c))
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let report_of = |name: &str, args: &[&str]| -> Value {
        let json = tmp.path().join(name);
        let mut a = args.to_vec();
        a.extend(["--fail-on", "none", "--json", json.to_str().unwrap()]);
        let (o, text) = run(&a, &[&r]);
        assert_eq!(o.status.code(), Some(0), "{text}");
        read_json(&json)
    };

    // --case, repeated: any glob.
    let got = report_of(
        "globs.json",
        &["--case", "valid/cluster-*", "--case", "valid/granularity-9"],
    );
    let want = ids(&|c| {
        let id = c["id"].as_str().unwrap();
        id.starts_with("valid/cluster-") || id == "valid/granularity-9"
    });
    assert!(want.len() >= 2);
    assert_eq!(case_ids(&got), want);

    // --rule: the cases whose expected rules name it.
    let rule = "bitmaps.dir.flags-reserved";
    let got = report_of("rule.json", &["--rule", rule]);
    let want = ids(&|c| {
        c["expected"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == rule)
            || c["id"].as_str().unwrap().starts_with(&format!("{rule}/"))
    });
    assert!(!want.is_empty());
    assert_eq!(case_ids(&got), want);

    // --rerun: only what failed there (the refuser's refusals of valid
    // images fail by default; its refusals of invalid ones pass).
    let first = tmp.path().join("first.json");
    let (o, text) = run(
        &[
            "--case",
            "valid/cluster-*",
            "--case",
            &format!("{rule}/*"),
            "--json",
            first.to_str().unwrap(),
        ],
        &[&r],
    );
    assert_eq!(o.status.code(), Some(2), "{text}");
    let first = read_json(&first);
    let failed: BTreeSet<String> = first["gate"]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["case"].as_str().unwrap().to_owned())
        .collect();
    assert!(!failed.is_empty() && failed.len() < case_ids(&first).len());
    let again = report_of(
        "rerun.json",
        &["--rerun", tmp.path().join("first.json").to_str().unwrap()],
    );
    assert_eq!(case_ids(&again), failed);

    // A filter that matches nothing stops the run.
    let (o, text) = run(&["--case", "no-such-case/*"], &[&r]);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("no case"), "{text}");

    // An unknown --rule is named, with the catalogue's nearest IDs.
    let (o, text) = run(&["--rule", "bitmaps.dir.granularty"], &[&r]);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("unknown rule") && text.contains("bitmaps.dir.granularity"),
        "{text}"
    );

    // --rerun of a report where nothing failed: nothing to do, exit 0.
    let clean = report_of(
        "clean.json",
        &["--case", "valid/cluster-64k", "--impl", "qemu"],
    );
    assert!(clean["gate"]["failed"]
        .as_array()
        .is_none_or(|f| f.is_empty()));
    let (o, text) = run(
        &["--rerun", tmp.path().join("clean.json").to_str().unwrap()],
        &[&r],
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("nothing to rerun"), "{text}");
}

#[test]
fn expectations_pass_the_known_and_name_each_change() {
    let tmp = tempfile::tempdir().unwrap();
    let r = refuser(tmp.path());
    let file = tmp.path().join("expect.toml");
    let f = file.to_str().unwrap();
    let invalid = first_case("invalid");
    let cases = ["--case", "valid/cluster-*", "--case", invalid.as_str()];
    let with = |extra: &[&str]| {
        let mut a = cases.to_vec();
        a.extend(extra);
        run(&a, &[&r])
    };
    // Recording is the point of --write-expect: it exits 0 whatever the
    // outcomes (issue 24: the documented first CI step must not fail).
    let (o, text) = with(&["--write-expect", f]);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("outcome(s) recorded"), "{text}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with("# "), "{written}");
    assert!(
        written.contains("[expect.\"refuser\".\"3.1.4\"]"),
        "{written}"
    );
    let lines: Vec<&str> = written.lines().filter(|l| l.contains(" = \"")).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "entries are sorted");
    assert!(
        written.contains("\"valid/cluster-64k\" = \"strict\""),
        "{written}"
    );
    assert!(
        written.contains(&format!("\"{invalid}\" = \"pass\"")),
        "{written}"
    );

    let (o, text) = with(&["--expect", f]);
    assert_eq!(o.status.code(), Some(0), "{text}");
    // The same program started from elsewhere, by a relative path through
    // another directory, finds the same expectations: they are keyed by
    // its own name, not by the command line.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--corpus")
        .arg(corpus())
        .args(["--impl", "exec:sh ../refuser.sh", "--expect", f])
        .args(cases)
        .current_dir(&elsewhere);
    let o = cmd.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A regression and an improvement, each named.
    let edited = written
        .replace(
            "\"valid/cluster-64k\" = \"strict\"",
            "\"valid/cluster-64k\" = \"pass\" # was strict",
        )
        .replace(
            &format!("\"{invalid}\" = \"pass\""),
            &format!("\"{invalid}\" = \"lenient\""),
        );
    std::fs::write(&file, &edited).unwrap();
    let (o, text) = with(&["--expect", f]);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(
        text.contains("regressed ")
            && text.contains("valid/cluster-64k: expected pass, now strict"),
        "{text}"
    );
    assert!(
        text.contains("improved ")
            && text.contains(&format!(
                "{invalid}: expected lenient, now pass (update the expectations file)"
            )),
        "{text}"
    );
    assert_eq!(
        text.matches("regressed ").count() + text.matches("improved ").count(),
        2,
        "{text}"
    );

    // The recorded table keyed by another version: `--expect` exits `code`.
    let expect_under = |version: &str, code: i32| {
        std::fs::write(&file, written.replace("\"3.1.4\"", version)).unwrap();
        let (o, text) = with(&["--expect", f]);
        assert_eq!(o.status.code(), Some(code), "{text}");
        text
    };
    // Another version has no table: the run stops before any case.
    let text = expect_under("\"3.0\"", 1);
    assert!(
        text.contains("no expectations for") && text.contains("3.1.4"),
        "{text}"
    );
    // ... unless a `*` table covers every version.
    let text = expect_under("\"*\"", 0);
    // A green run ends with one line saying so.
    assert!(
        text.contains("outcome(s) as expected by") && text.contains("known non-pass outcomes"),
        "{text}"
    );

    // --write-expect keeps the entries of cases that did not run.
    std::fs::write(&file, &written).unwrap();
    let (o, text) = run(
        &["--case", "valid/granularity-9", "--write-expect", f],
        &[&r],
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
    let merged = std::fs::read_to_string(&file).unwrap();
    assert!(
        merged.contains("\"valid/granularity-9\" = \"strict\""),
        "{merged}"
    );
    assert!(
        merged.contains("\"valid/cluster-64k\" = \"strict\""),
        "{merged}"
    );
}

/// The version `Cargo.lock` pins for `package`.
fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let at = lock
        .find(&format!("name = \"{package}\"\n"))
        .unwrap_or_else(|| panic!("{package} not in Cargo.lock"));
    lock[at..]
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("version = ")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn reports_carry_tool_corpus_implementation_versions_host_time_and_command() {
    let tmp = tempfile::tempdir().unwrap();
    let r = refuser(tmp.path());
    let (json, xml, html) = (
        tmp.path().join("r.json"),
        tmp.path().join("r.xml"),
        tmp.path().join("r.html"),
    );
    let (o, text) = run(
        &[
            "--case",
            "valid/cluster-64k",
            "--fail-on",
            "none",
            "--json",
            json.to_str().unwrap(),
            "--junit",
            xml.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        &["qemu", "imago", "qcow2-rs", "qcow2", "libqcow", &r],
    );
    assert_eq!(o.status.code(), Some(0), "{text}");
    let p = read_json(&json)["provenance"].clone();
    assert_eq!(
        p["tool"],
        format!("qcow2-conform {}", env!("CARGO_PKG_VERSION"))
    );

    // QEMU's version as qemu-img tells it.
    let qv = Command::new("qemu-img").arg("--version").output().unwrap();
    let first = String::from_utf8_lossy(&qv.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let qemu_version = first.split_whitespace().nth(2).unwrap().to_owned();
    let by_name = |n: &str| -> Value {
        p["implementations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("qemu")["version"], qemu_version.as_str());
    assert_eq!(by_name("qemu")["detail"], first.as_str());
    // The crates this binary links, and libqcow as its bindings say.
    for c in ["imago", "qcow2-rs", "qcow2"] {
        assert_eq!(by_name(c)["version"], locked_version(c).as_str(), "{c}");
    }
    let lv = Command::new("/usr/bin/python3")
        .args(["-c", "import pyqcow; print(pyqcow.get_version())"])
        .output()
        .unwrap();
    let lv = String::from_utf8_lossy(&lv.stdout).trim().to_owned();
    assert!(!lv.is_empty());
    assert_eq!(by_name("libqcow")["version"], lv.as_str());
    // An exec adapter's own name and version.
    assert_eq!(by_name("refuser")["version"], "3.1.4");
    assert_eq!(by_name("refuser")["detail"], r.as_str());
    assert_eq!(by_name("refuser")["product"], "refuser");

    let digest = p["corpus_digest"].as_str().unwrap();
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
    let started = p["started"].as_str().unwrap();
    let shape: String = started
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99Z", "{started}");
    let uname = Command::new("uname").arg("-n").output().unwrap();
    assert_eq!(p["host"], String::from_utf8_lossy(&uname.stdout).trim());
    let argv: Vec<&str> = p["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.windows(2)
            .any(|w| w == ["--case", "valid/cluster-64k"]),
        "{argv:?}"
    );

    // The same in the HTML page and the JUnit properties.
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in [&format!("qemu {qemu_version}"), digest, started, "imago "] {
        assert!(page.contains(needle), "{needle} missing from the page");
    }
    let j = junit::read(&xml);
    let props = &j["suites"][0]["properties"];
    assert_eq!(props["implementation.qemu.version"], qemu_version.as_str());
    assert_eq!(props["corpus_digest"], digest);
    assert_eq!(props["started"], started);
    assert_eq!(props["tool"], p["tool"]);

    // The same corpus gives the same digest in a later run.
    let json2 = tmp.path().join("r2.json");
    let (o, text) = run(
        &[
            "--case",
            "valid/cluster-64k",
            "--json",
            json2.to_str().unwrap(),
        ],
        &[&r],
    );
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert_eq!(read_json(&json2)["provenance"]["corpus_digest"], digest);
}

#[test]
fn generate_records_tool_seed_and_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--seed",
        "42",
        "--count",
        "2",
        "--valid",
        "--profile",
        "small",
    ];
    let make = |out: &str| -> String {
        let out = tmp.path().join(out);
        cli::run_ok(
            Command::new(BIN)
                .arg("generate")
                .args(args)
                .arg("--out")
                .arg(&out),
        );
        std::fs::read_to_string(out.join("manifest.json")).unwrap()
    };
    let a = make("a");
    let m: Value = serde_json::from_str(&a).unwrap();
    let g = &m["generated_by"];
    assert_eq!(
        g["tool"],
        format!("qcow2-conform {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(g["seed"], 42);
    assert_eq!(g["arguments"], serde_json::json!(args));
    // Where the output goes is not part of it: the manifests are identical.
    assert_eq!(make("b"), a);
}
