//! The exec protocol's edges: a program that cannot start, or whose
//! `capabilities` answer fails, stops `run` with exit status 1 and one line
//! before any case; a crash shows the program's standard error in the
//! terminal and in the HTML tooltip; the `read` verb gives a program that
//! does not know bitmaps the guest-data checks (here a reader built on
//! `qemu-img convert`, honest and then lying about one range); and the
//! optional `name`/`version` of a `capabilities` answer are read.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

fn corpus(dir: &Path) -> PathBuf {
    let c = dir.join("corpus");
    cli::generate(&c, &["--seed", "5", "--count", "4", "--profile", "qemu"]);
    c
}

fn run(corpus: &Path, implementation: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["run", "--corpus"])
        .arg(corpus)
        .arg("--impl")
        .arg(implementation)
        .args(extra)
        .env("COLUMNS", "100")
        .output()
        .unwrap()
}

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Exit 1, one line on stderr naming the adapter, nothing on stdout (no
/// case ran), no report written.
fn assert_setup_error(out: &Output, json: &Path, wants: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for w in wants {
        assert!(stderr.contains(w), "{w:?} not in {stderr}");
    }
    assert!(
        out.stdout.is_empty(),
        "no matrix: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!json.exists(), "no report before any case");
}

#[test]
fn programs_that_cannot_start_or_answer_capabilities_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus(tmp.path());
    let json = tmp.path().join("r.json");
    let j = json.to_str().unwrap();

    let out = run(&corpus, "exec:/nonexistent/adapter", &["--json", j]);
    assert_setup_error(&out, &json, &["cannot start", "/nonexistent/adapter"]);
    // Through a wrapper (env, a shell) a missing program is exit status
    // 127: still a setup error, not one crash per case.
    let out = run(&corpus, "exec:env /nonexistent/adapter", &["--json", j]);
    assert_setup_error(
        &out,
        &json,
        &["capabilities", "exit status 127", "could not be executed"],
    );

    let missing = tmp.path().join("missing.py");
    let out = run(
        &corpus,
        &format!("exec:python3 {}", missing.display()),
        &["--json", j],
    );
    assert_setup_error(
        &out,
        &json,
        &["`capabilities` failed", "exit status 2", "missing.py"],
    );

    // Shell programs whose answer to `capabilities` is unusable: (name,
    // text, what the one line on stderr says).
    let programs: [(&str, &str, &[&str]); 3] = [
        (
            "garbage.sh",
            "#!/bin/sh\necho hello\n",
            &["answer unusable", "hello"],
        ),
        (
            "future.sh",
            "#!/bin/sh\necho '{\"protocol\": 2, \"capabilities\": [\"observe\"]}'\n",
            &["protocol 2 is not supported"],
        ),
        (
            "segv.sh",
            "#!/bin/sh\nkill -SEGV $$\n",
            &["capabilities", "signal 11"],
        ),
    ];
    for (name, text, wants) in programs {
        let program = script(tmp.path(), name, text);
        let out = run(
            &corpus,
            &format!("exec:sh {}", program.display()),
            &["--json", j],
        );
        assert_setup_error(&out, &json, wants);
    }
}

#[test]
fn a_crash_shows_the_programs_stderr_in_the_terminal_and_the_page() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus(tmp.path());
    let crash = script(
        tmp.path(),
        "crash.sh",
        "#!/bin/sh\n[ \"$1\" = capabilities ] && exec echo '{\"protocol\": 1}'\n\
         echo 'Traceback: adapter exploded at line 42' >&2\nkill -SEGV $$\n",
    );
    let html = tmp.path().join("r.html");
    let out = run(
        &corpus,
        &format!("exec:sh {}", crash.display()),
        &["--html", html.to_str().unwrap(), "--fail-on", "crash"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("    stderr: Traceback: adapter exploded at line 42"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<pre class=\"stderr\">Traceback: adapter exploded at line 42</pre>"));
}

/// A bitmaps-unaware reader (after [`cli::PY_PROLOGUE`]): `read` answers
/// from `qemu-img convert -O raw`. Mode `flip` misreports the hash of the
/// first range it reads.
const READER: &str = r#"
if verb == "capabilities":
    reply({"capabilities": ["read"], "name": "raw-reader", "version": "1.2.3"})
if verb != "read":
    sys.exit(3)
image, ranges = sys.argv[3], sys.argv[4:]
with tempfile.TemporaryDirectory() as d:
    raw = os.path.join(d, "raw")
    r = subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw],
                       capture_output=True, text=True)
    if r.returncode != 0:
        reply({"opened": False, "error": r.stderr.strip() or "convert failed"})
    size = os.path.getsize(raw)
    out = []
    with open(raw, "rb") as f:
        for i, a in enumerate(ranges):
            o, l = (int(x) for x in a.split(":"))
            f.seek(o)
            data = f.read(l)
            h = hashlib.sha256(data).hexdigest()
            if mode == "flip" and i == 0:
                h = hashlib.sha256(data + b"x").hexdigest()
            out.append({"offset": o, "length": l, "sha256": h})
reply({"opened": True, "error": None, "size": size, "ranges": out})
"#;

#[test]
fn the_read_verb_gives_unaware_programs_the_guest_data_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus(tmp.path());
    let honest = cli::py_program(tmp.path(), "reader.py", READER, "honest");
    let json = tmp.path().join("honest.json");
    let report = cli::run_report(&corpus, &json, &["--impl", &honest, "--read-only"]);
    let mut compared = 0;
    for c in report["cases"].as_array().unwrap() {
        let r = &c["results"][0];
        let obs = &r["observation"];
        assert_eq!(obs["bitmaps_unaware"], true, "{}", c["id"]);
        let size = &c["results"][0]["observation"]["guest"]["size_header"];
        if c["expected"]["verdict"] == "valid" && size != 0 {
            assert_eq!(
                r["outcome"]["kind"], "pass",
                "{}: {}",
                c["id"], r["outcome"]
            );
            let g = &obs["guest"];
            assert!(
                g["ranges_compared"].as_u64().unwrap() > 0,
                "{}: {g}",
                c["id"]
            );
            assert_eq!(g["mismatch_count"], 0);
            assert_eq!(g["size_reported"], g["size_header"]);
            compared += 1;
        }
    }
    assert!(compared >= 3, "valid non-empty cases compared: {compared}");

    let liar = cli::py_program(tmp.path(), "reader.py", READER, "flip");
    let out = run(
        &corpus,
        &liar,
        &["--read-only", "--json", json.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let valid: Vec<&Value> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["expected"]["verdict"] == "valid"
                && c["results"][0]["observation"]["guest"]["size_header"] != 0
        })
        .collect();
    for c in valid {
        let r = &c["results"][0];
        assert_eq!(
            r["outcome"]["kind"], "mismatch",
            "{}: {}",
            c["id"], r["outcome"]
        );
        let detail = r["outcome"]["detail"].to_string();
        assert!(detail.contains("guest data of range 0x0+"), "{detail}");
    }
}

#[test]
fn capabilities_may_name_the_program_and_its_version() {
    let tmp = tempfile::tempdir().unwrap();
    let honest = cli::py_program(tmp.path(), "reader.py", READER, "honest");
    let a =
        conform::runner::adapters::exec::ExecAdapter::new(honest.strip_prefix("exec:").unwrap())
            .unwrap();
    assert_eq!(a.reported(), (Some("raw-reader"), Some("1.2.3")));
    use conform::runner::Adapter;
    let caps = a.capabilities();
    assert!(caps.read_guest_data && !caps.read_bitmap_contents && !caps.write_guest_data);
}
