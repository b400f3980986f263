//! A corpus from anyone is safe to run (issue 21, sandbox and references):
//! images whose external data file or backing file names a file outside
//! their directory, a FIFO, a secret or an NBD server over TCP are the
//! runner's `error`, never run and never charged to QEMU, and every file
//! outside the scratch directory is byte-identical afterwards; a
//! sandboxed program can neither write outside its scratch directory nor
//! open a TCP connection; sockets work whatever TMPDIR's length; a sweep
//! from another PID namespace leaves a live run's scratch alone; and
//! `--memory`/`--timeout` bind an exec program's `capabilities` call.

use generator::{Expected, Manifest, ManifestCase};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

/// Runs `qemu-img ARGS` in `dir`; must succeed.
fn qemu_img(dir: &Path, args: &[&str]) {
    cli::run_ok(Command::new("qemu-img").args(args).current_dir(dir));
}

/// A valid image `dir/NAME` of 4 MiB with a bitmap and some data, made
/// with `-o OPTS` (and `-u` so that no backing file is opened); `extra`
/// are more `create` arguments (`-b`, `-F`).
fn image(dir: &Path, name: &str, opts: &str, extra: &[&str], bitmap: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut args = vec!["create", "-q", "-f", "qcow2", "-u"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend(extra);
    args.extend([name, "4M"]);
    qemu_img(dir, &args);
    if bitmap {
        qemu_img(dir, &["bitmap", "--add", name, "b0"]);
    }
    dir.join(name)
}

/// The manifest case for `file` (relative to `corpus`), expected as the
/// model reads it.
fn case(corpus: &Path, id: &str, file: &str) -> ManifestCase {
    let f = std::fs::File::open(corpus.join(file)).unwrap();
    let report = spec_model::check(f).unwrap();
    ManifestCase {
        id: id.into(),
        file: file.into(),
        expected: Expected::from_report(&report),
        description: String::new(),
        companions: Vec::new(),
        secret: None,
    }
}

fn write_manifest(corpus: &Path, cases: Vec<ManifestCase>) {
    std::fs::write(corpus.join("manifest.json"), Manifest::new(cases).to_json()).unwrap();
}

/// `qcow2-conform run` over `corpus` in working directory `cwd` with
/// `TMPDIR` = `tmp`: its output and JSON report.
fn run(corpus: &Path, cwd: &Path, tmp: &Path, args: &[&str]) -> (Output, Value) {
    let json = tmp.parent().unwrap().join("report.json");
    let _ = std::fs::remove_file(&json);
    let out = Command::new(BIN)
        .arg("run")
        .arg("--corpus")
        .arg(corpus)
        .arg("--json")
        .arg(&json)
        .args(["--fail-on", "none"])
        .args(if args.contains(&"--timeout") {
            &[][..]
        } else {
            &["--timeout", "10"][..]
        })
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", tmp)
        .output()
        .unwrap();
    let report = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out, report)
}

/// Every case's (ID, outcome, first detail line) for the one implementation.
fn outcomes(report: &Value) -> Vec<(String, String, String)> {
    report["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases in {report}"))
        .iter()
        .map(|c| {
            let o = &c["results"][0]["outcome"];
            (
                c["id"].as_str().unwrap().to_owned(),
                o["kind"].as_str().unwrap().to_owned(),
                o["detail"][0].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// SHA-256 of every regular file below `dir` except under `skip` (FIFOs
/// and sockets are listed by kind, never opened).
fn hashes(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let h = sha2::Sha256::digest(std::fs::read(&p).unwrap());
                out.insert(p, hex::encode(h));
            } else {
                out.insert(p, format!("{t:?}"));
            }
        }
    }
    out
}

/// A test's directories: the corpus (with `images/`), the runner's
/// working directory, its TMPDIR and a directory outside all of them.
struct Dirs {
    _root: tempfile::TempDir,
    root: PathBuf,
    corpus: PathBuf,
    cwd: PathBuf,
    tmp: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    let d = Dirs {
        corpus: r.join("corpus"),
        cwd: r.join("cwd"),
        tmp: r.join("tmp"),
        outside: r.join("outside"),
        root: r,
        _root: root,
    };
    for p in [&d.corpus.join("images"), &d.cwd, &d.tmp, &d.outside] {
        std::fs::create_dir_all(p).unwrap();
    }
    d
}

/// Asserts every case is `error` naming `names[i]` and nothing was run.
fn all_refused(report: &Value, names: &[&str]) {
    let got = outcomes(report);
    assert_eq!(got.len(), names.len(), "{got:?}");
    for ((id, kind, detail), name) in got.iter().zip(names) {
        assert_eq!(kind, "error", "{id}: {detail}");
        assert!(detail.contains(name), "{id}: {detail} should name {name}");
    }
    for c in report["cases"].as_array().unwrap() {
        let commands = &c["results"][0]["observation"]["commands"];
        assert!(
            commands.as_array().is_none_or(|a| a.is_empty()),
            "{}: programs ran: {commands}",
            c["id"]
        );
    }
}

#[test]
fn a_data_file_outside_the_corpus_is_error_and_never_written_or_cut() {
    let d = dirs();
    let victim = d.outside.join("victim.data");
    let opts = format!("data_file={}", victim.display());
    image(&d.corpus.join("images"), "abs.qcow2", &opts, &[], true);
    write_manifest(&d.corpus, vec![case(&d.corpus, "abs", "images/abs.qcow2")]);
    let before = std::fs::read(&victim).unwrap();
    assert_eq!(before.len(), 4 << 20);
    for extra in [&[][..], &["--bitmap-ops"][..]] {
        let mut args = vec!["--impl", "qemu"];
        args.extend(extra);
        let (out, report) = run(&d.corpus, &d.cwd, &d.tmp, &args);
        assert_eq!(out.status.code(), Some(1), "incomplete run: {report}");
        all_refused(&report, &[&victim.display().to_string()]);
        assert_eq!(std::fs::read(&victim).unwrap(), before, "{extra:?}");
    }
}

#[test]
fn a_relative_data_file_without_companions_touches_nothing_in_the_working_directory() {
    let d = dirs();
    let images = d.corpus.join("images");
    image(&images, "rel.qcow2", "data_file=victim.data", &[], true);
    // The data file is not in the corpus, but in the runner's directory.
    std::fs::rename(images.join("victim.data"), d.cwd.join("victim.data")).unwrap();
    write_manifest(&d.corpus, vec![case(&d.corpus, "rel", "images/rel.qcow2")]);
    let before = hashes(&d.cwd, &d.tmp);
    let (_, report) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &["--impl", "qemu", "--bitmap-ops"],
    );
    all_refused(&report, &["victim.data"]);
    assert!(outcomes(&report)[0].2.contains("not listed as a companion"));
    assert_eq!(hashes(&d.cwd, &d.tmp), before);
}

#[test]
fn hostile_backing_files_are_error_never_hang_read_or_connect() {
    let d = dirs();
    let fifo = d.outside.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let secret = d.outside.join("shadow");
    std::fs::write(&secret, b"root:$6$secret:19000:0:99999:7:::\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let json = format!(
        r#"json:{{"driver":"raw","file":{{"driver":"nbd","server":{{"type":"inet","host":"127.0.0.1","port":"{port}"}}}}}}"#
    );
    let images = d.corpus.join("images");
    let backed = |name: &str, backing: &str| {
        image(&images, name, "", &["-b", backing, "-F", "raw"], false);
    };
    backed("fifo.qcow2", &fifo.display().to_string());
    backed("secret.qcow2", &secret.display().to_string());
    backed("nbd.qcow2", &json);
    backed("proto.qcow2", &format!("nbd:127.0.0.1:{port}"));
    write_manifest(
        &d.corpus,
        ["fifo", "secret", "nbd", "proto"]
            .iter()
            .map(|n| case(&d.corpus, n, &format!("images/{n}.qcow2")))
            .collect(),
    );
    let start = Instant::now();
    let (_, report) = run(&d.corpus, &d.cwd, &d.tmp, &["--impl", "qemu"]);
    assert!(start.elapsed() < Duration::from_secs(8), "{report}");
    all_refused(&report, &["fifo", "shadow", "json:", "nbd:127.0.0.1"]);
    let details: Vec<String> = outcomes(&report).into_iter().map(|o| o.2).collect();
    assert!(details[0].contains("absolute path"), "{details:?}");
    assert!(details[2].contains("json: filename"), "{details:?}");
    assert!(details[3].contains("protocol filename"), "{details:?}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the test's NBD port: {other:?}"),
    }
}

/// A listed companion is an image too: what it names is checked like what
/// the case's image names, resolved against the companion's directory.
#[test]
fn references_are_checked_through_the_whole_chain_of_companions() {
    let d = dirs();
    let secret = d.outside.join("shadow");
    std::fs::write(&secret, b"root:$6$secret:19000:0:99999:7:::\n").unwrap();
    let before = std::fs::read(&secret).unwrap();
    // hostile: top -> mid.qcow2 (listed) -> /outside/shadow (absolute).
    let h = d.corpus.join("images/hostile");
    image(
        &h,
        "mid.qcow2",
        "",
        &["-b", &secret.display().to_string(), "-F", "raw"],
        false,
    );
    image(
        &h,
        "top.qcow2",
        "",
        &["-b", "mid.qcow2", "-F", "qcow2"],
        true,
    );
    let mut hostile = case(&d.corpus, "hostile", "images/hostile/top.qcow2");
    hostile.companions = vec!["images/hostile/mid.qcow2".into()];
    // fine: top -> sub/mid.qcow2 -> base.raw, which QEMU resolves
    // against sub/, so the companion is sub/base.raw.
    let f = d.corpus.join("images/fine");
    std::fs::create_dir_all(f.join("sub")).unwrap();
    std::fs::write(f.join("sub/base.raw"), vec![7u8; 4 << 20]).unwrap();
    image(
        &f.join("sub"),
        "mid.qcow2",
        "",
        &["-b", "base.raw", "-F", "raw"],
        false,
    );
    image(
        &f,
        "top.qcow2",
        "",
        &["-b", "sub/mid.qcow2", "-F", "qcow2"],
        true,
    );
    let mut fine = case(&d.corpus, "fine", "images/fine/top.qcow2");
    fine.companions = vec![
        "images/fine/sub/mid.qcow2".into(),
        "images/fine/sub/base.raw".into(),
    ];
    // unlisted: the same chain without its last companion.
    let mut unlisted = fine.clone();
    unlisted.id = "unlisted".into();
    unlisted.companions.pop();
    write_manifest(&d.corpus, vec![hostile, fine, unlisted]);
    let (_, report) = run(&d.corpus, &d.cwd, &d.tmp, &["--impl", "qemu"]);
    let got = outcomes(&report);
    assert_eq!(got[0].1, "error", "{got:?}");
    assert!(
        got[0].2.contains("shadow") && got[0].2.contains("absolute"),
        "{got:?}"
    );
    assert_ne!(
        got[1].1, "error",
        "a chain of listed companions runs: {got:?}"
    );
    assert_eq!(got[2].1, "error", "{got:?}");
    assert!(
        got[2].2.contains("base.raw") && got[2].2.contains("not listed"),
        "{got:?}"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), before);
}

#[test]
fn a_read_adapter_on_an_outside_raw_backing_file_is_error_and_the_model_never_opens_it() {
    let d = dirs();
    let outside = d.outside.join("base.raw");
    std::fs::write(&outside, vec![0x5a; 1 << 20]).unwrap();
    let images = d.corpus.join("images");
    let img = image(
        &images,
        "top.qcow2",
        "",
        &["-b", &outside.display().to_string(), "-F", "raw"],
        false,
    );
    write_manifest(&d.corpus, vec![case(&d.corpus, "top", "images/top.qcow2")]);
    // The model's layered reads refuse the name themselves.
    let e = conform::runner::corpus::image_layers::open(&img)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("not followed"), "{e}");
    // A program that only reads guest data; the runner never asks it.
    let imp = cli::sh_program(
        &d.root,
        "reader.sh",
        "\"capabilities\":[\"read\"]",
        "*) echo '{\"protocol\":1,\"opened\":false,\"error\":\"asked\"}';;",
    );
    let (_, report) = run(&d.corpus, &d.cwd, &d.tmp, &["--impl", &imp]);
    all_refused(&report, &["base.raw"]);
}

/// The two shipped valid cases whose bitmaps QEMU exports over a socket.
fn shipped_cases(into: &Path) {
    let src = cli::workspace().join("corpus");
    let text = std::fs::read_to_string(src.join("manifest.json")).unwrap();
    let cases: Vec<ManifestCase> = Manifest::from_json(&text)
        .unwrap()
        .cases
        .into_iter()
        .filter(|c| c.id == "valid/cluster-64k" || c.id == "valid/granularity-9")
        .collect();
    assert_eq!(cases.len(), 2);
    for c in &cases {
        let to = into.join(&c.file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(&c.file), to).unwrap();
    }
    write_manifest(into, cases);
}

/// An exec-protocol shell program `dir/NAME` that only observes, running
/// the shell `commands` for `observe PATH`; returns its `--impl`.
fn observer(dir: &Path, name: &str, commands: &str) -> String {
    cli::sh_program(
        dir,
        name,
        "\"capabilities\":[\"observe\"]",
        &format!("observe) {commands};;"),
    )
}

/// Fresh directories whose corpus holds the two shipped cases.
fn shipped_dirs() -> Dirs {
    let d = dirs();
    shipped_cases(&d.corpus);
    d
}

#[test]
fn sockets_work_whatever_the_length_of_tmpdir() {
    let d = shipped_dirs();
    // The old socket path TMPDIR/qcow2-conform-run-PID-START-XXXXXX/nbd0.sock
    // reached 108 bytes for a TMPDIR of about 50-58 characters (depending on
    // the PID's and start time's widths); 60-72 passed the limit.
    let mut lengths: Vec<usize> = (50..=58).collect();
    lengths.extend([60, 66, 72, 100]);
    for len in lengths {
        let base = d.root.join("t");
        let fill = len.saturating_sub(base.as_os_str().len() + 1).max(1);
        let tmp = base.join("x".repeat(fill));
        std::fs::create_dir_all(&tmp).unwrap();
        let (out, report) = run(&d.corpus, &d.cwd, &tmp, &["--impl", "qemu", "--read-only"]);
        for (id, kind, detail) in outcomes(&report) {
            assert_eq!(
                kind,
                "pass",
                "TMPDIR of {} bytes, {id}: {detail}\n{}",
                tmp.as_os_str().len(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_sweep_from_another_pid_namespace_leaves_a_live_run_alone() {
    let d = shipped_dirs();
    // The live run's program makes its scratch directory look old (so
    // only the lock protects it), waits while the other run starts and
    // sweeps, then checks its image is still there.
    let imp = observer(
        &d.root,
        "slow.sh",
        "touch -d '2001-01-01' \"$(dirname \"$2\")\"; sleep 3;\n\
         if [ -f \"$2\" ]; then echo '{\"protocol\":1,\"opened\":false,\"error\":\"still here\"}';\n\
         else echo '{\"protocol\":1,\"opened\":false,\"error\":\"image vanished\"}'; fi",
    );
    let json = d.root.join("live.json");
    let live = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            BIN,
            "run",
            "--corpus",
        ])
        .arg(&d.corpus)
        .arg("--json")
        .arg(&json)
        .args(["--fail-on", "none", "--case", "valid/cluster-64k", "--impl"])
        .arg(&imp)
        .env("TMPDIR", &d.tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    // A dead runner's leftover, which the other run's sweep must remove.
    let dead = d.tmp.join("qcow2-conform-run-4194304-1-abcdef");
    std::fs::create_dir(&dead).unwrap();
    std::fs::File::open(&dead)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (_, report) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &[
            "--impl",
            "qemu",
            "--read-only",
            "--case",
            "valid/granularity-9",
        ],
    );
    assert_eq!(outcomes(&report)[0].1, "pass", "{report}");
    assert!(
        !dead.exists(),
        "the sweep ran and removed a dead runner's directory"
    );
    let out = live.wait_with_output().unwrap();
    let live: Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|e| {
            panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr))
        }))
        .unwrap();
    let obs = &live["cases"][0]["results"][0]["observation"];
    assert_eq!(obs["error"], "still here", "{live}");
}

#[test]
fn memory_and_timeout_bind_the_capabilities_call() {
    let d = shipped_dirs();
    let hog = d.root.join("hog.py");
    std::fs::write(
        &hog,
        "import sys\nif sys.argv[1] == 'capabilities':\n    x = bytearray(1200 << 20)\n    \
         print('{\"protocol\":1,\"capabilities\":[\"observe\"]}')\n",
    )
    .unwrap();
    let imp = format!("exec:python3 {}", hog.display());
    let (out, _) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &["--impl", &imp, "--memory", "256"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`capabilities` failed"), "{err}");
    assert!(err.contains("MemoryError"), "{err}");
    // Without the limit the same program answers (the test can fail).
    let (out, _) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &["--impl", &imp, "--memory", "0"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let slow = d.root.join("slow.sh");
    std::fs::write(&slow, "#!/bin/sh\nsleep 30\n").unwrap();
    let start = Instant::now();
    let (out, _) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &[
            "--impl",
            &format!("exec:sh {}", slow.display()),
            "--timeout",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("time limit"));
}

#[test]
fn qemu_over_outside_references_leaves_every_file_outside_scratch_byte_identical() {
    let d = dirs();
    let images = d.corpus.join("images");
    let base = d.outside.join("base.qcow2");
    qemu_img(
        &d.outside,
        &["create", "-q", "-f", "qcow2", "base.qcow2", "4M"],
    );
    let data = d.outside.join("abs.data");
    image(
        &images,
        "abs-data.qcow2",
        &format!("data_file={}", data.display()),
        &[],
        true,
    );
    image(
        &images,
        "up-data.qcow2",
        "data_file=../../outside/up.data",
        &[],
        true,
    );
    let b = base.display().to_string();
    image(
        &images,
        "abs-backing.qcow2",
        "",
        &["-b", &b, "-F", "qcow2"],
        true,
    );
    image(
        &images,
        "up-backing.qcow2",
        "",
        &["-b", "../../outside/base.qcow2", "-F", "qcow2"],
        true,
    );
    image(&images, "plain.qcow2", "", &[], true);
    let names = ["abs-data", "up-data", "abs-backing", "up-backing", "plain"];
    write_manifest(
        &d.corpus,
        names
            .iter()
            .map(|n| case(&d.corpus, n, &format!("images/{n}.qcow2")))
            .collect(),
    );
    std::fs::write(d.cwd.join("up.data"), b"decoy").unwrap();
    let before = hashes(&d.root, &d.tmp);
    let (_, report) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &["--impl", "qemu", "--bitmap-ops"],
    );
    let got = outcomes(&report);
    for (id, kind, detail) in &got {
        let want = if id == "plain" { "pass" } else { "error" };
        assert_eq!(kind, want, "{id}: {detail}");
    }
    // Files the runner writes besides its scratch directory: its report.
    let mut after = hashes(&d.root, &d.tmp);
    after.remove(&d.root.join("report.json"));
    let mut before = before;
    before.remove(&d.root.join("report.json"));
    assert_eq!(before, after);
    assert_eq!(
        std::fs::read_dir(&d.tmp).unwrap().count(),
        0,
        "scratch left behind"
    );
}

#[test]
fn a_sandboxed_program_cannot_write_outside_scratch_nor_open_a_tcp_connection() {
    let d = shipped_dirs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = d.outside.join("written");
    let probe = d.root.join("probe.py");
    std::fs::write(
        &probe,
        format!(
            r#"import json, os, socket, sys
if sys.argv[1] == 'capabilities':
    print(json.dumps({{"protocol": 1, "capabilities": ["observe"]}}))
    sys.exit(0)
said = []
def attempt(what, f):
    try:
        f()
        said.append(what + ":done")
    except OSError as e:
        said.append(what + ":denied")
def outside():
    with open({target:?}, "w") as f:
        f.write("x")
def inside():
    with open(os.path.join(os.path.dirname(sys.argv[2]), "mine"), "w") as f:
        f.write("x")
def connect():
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
attempt("outside", outside)
attempt("inside", inside)
attempt("connect", connect)
print(json.dumps({{"protocol": 1, "opened": False, "error": " ".join(said)}}))
"#,
            target = target.display().to_string(),
        ),
    )
    .unwrap();
    let imp = format!("exec:python3 {}", probe.display());
    let said = |report: &Value| {
        report["cases"][0]["results"][0]["observation"]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{report}"))
            .to_owned()
    };
    let (_, report) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &["--impl", &imp, "--case", "valid/cluster-64k"],
    );
    assert_eq!(said(&report), "outside:denied inside:done connect:denied");
    assert!(!target.exists());
    assert!(listener.accept().is_err(), "no connection arrived");
    let sandbox = &report["provenance"]["sandbox"];
    assert_eq!(sandbox["sandboxed"], true, "{sandbox}");
    assert!(sandbox["detail"].as_str().unwrap().contains("landlock ABI"));
    // Unsandboxed, the same program does both (the test can fail).
    let (_, report) = run(
        &d.corpus,
        &d.cwd,
        &d.tmp,
        &[
            "--impl",
            &imp,
            "--case",
            "valid/cluster-64k",
            "--sandbox",
            "off",
        ],
    );
    assert_eq!(said(&report), "outside:done inside:done connect:done");
    assert!(target.exists());
    assert_eq!(report["provenance"]["sandbox"]["sandboxed"], false);
}

#[test]
fn without_landlock_auto_says_so_and_require_refuses() {
    let d = shipped_dirs();
    let json = d.root.join("r.json");
    let html = d.root.join("r.html");
    let junit = d.root.join("r.xml");
    let go = |mode: &str| {
        Command::new(BIN)
            .arg("run")
            .arg("--corpus")
            .arg(&d.corpus)
            .arg("--json")
            .arg(&json)
            .arg("--html")
            .arg(&html)
            .arg("--junit")
            .arg(&junit)
            .args(["--impl", "qemu", "--read-only", "--sandbox", mode])
            .env("QCOW2_CONFORM_LANDLOCK_ABI", "0")
            .output()
            .unwrap()
    };
    let out = go("require");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Landlock"));
    let out = go("auto");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not sandboxed"));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let s = &report["provenance"]["sandbox"];
    assert_eq!(
        (s["mode"].as_str(), s["sandboxed"].as_bool()),
        (Some("auto"), Some(false))
    );
    // The page and the JUnit file say so too.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("NOT sandboxed (--sandbox auto"), "{page}");
    assert!(page.contains("ran without a sandbox"), "{page}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<property name=\"sandbox.sandboxed\" value=\"false\" />"),
        "{xml}"
    );
    assert!(xml.contains("<property name=\"sandbox.mode\" value=\"auto\" />"));
}

#[test]
fn a_case_whose_scratch_directory_vanishes_is_error_not_charged() {
    let d = shipped_dirs();
    // Another process removes the scratch directory while the program
    // runs (here the program itself, unsandboxed: sandboxed, it could not).
    let imp = observer(
        &d.root,
        "vanish.sh",
        "rm -rf \"$(dirname \"$2\")\"; echo '{\"protocol\":1,\"opened\":true,\"bitmaps\":[]}'",
    );
    let args = [
        "--impl",
        &imp,
        "--case",
        "valid/cluster-64k",
        "--sandbox",
        "off",
    ];
    let (out, report) = run(&d.corpus, &d.cwd, &d.tmp, &args);
    let (_, kind, detail) = outcomes(&report).remove(0);
    assert_eq!(kind, "error", "{detail}");
    assert!(detail.contains("vanished"), "{detail}");
    assert_eq!(out.status.code(), Some(1));
}

/// The names `qemu-img info` says `image` refers to: (backing file, data
/// file), or `None` when QEMU cannot open it (it follows nothing then).
fn qemu_references(image: &Path) -> Option<(Option<String>, Option<String>)> {
    let o = Command::new("qemu-img")
        .args(["info", "-U", "--output=json", "-f", "qcow2"])
        .arg(image)
        .current_dir(image.parent().unwrap())
        .output()
        .expect("qemu-img is installed");
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let backing = v["backing-filename"].as_str().map(str::to_owned);
    let data = v["format-specific"]["data"]["data-file"]
        .as_str()
        .map(str::to_owned);
    Some((backing, data))
}

/// The reference check is only as good as its reading of the names: it
/// must find exactly the backing file and data file names QEMU finds, on
/// every corpus image and on hostile ones, so that nothing QEMU would open
/// escapes it.
#[test]
fn the_reference_check_reads_the_names_qemu_reads() {
    use conform::runner::corpus::references::{read, Kind};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let mut images: Vec<PathBuf> = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| root.join(c["file"].as_str().unwrap()))
        .collect();
    let d = dirs();
    let outside = d.outside.join("victim.data");
    let h = d.corpus.join("images");
    let data_opt = format!("data_file={}", outside.display());
    images.push(image(&h, "abs-data.qcow2", &data_opt, &[], false));
    for (name, backing) in [
        ("abs.qcow2", "/etc/hostname".to_owned()),
        (
            "json.qcow2",
            r#"json:{"driver":"raw","file":{"driver":"file","filename":"/etc/hostname"}}"#
                .to_owned(),
        ),
        ("proto.qcow2", "nbd:127.0.0.1:1".to_owned()),
        ("dotdot.qcow2", "../x.raw".to_owned()),
    ] {
        images.push(image(&h, name, "", &["-b", &backing, "-F", "raw"], false));
    }
    let corpus_images = images.len() - 5;
    let mut compared = (0, 0);
    for (i, img) in images.iter().enumerate() {
        let Some((backing, data)) = qemu_references(img) else {
            continue;
        };
        let ours = read(img).unwrap();
        let name = |k: Kind| {
            ours.iter()
                .find(|r| r.kind == k)
                .map(|r| String::from_utf8_lossy(&r.name).into_owned())
        };
        assert_eq!(name(Kind::Backing), backing, "{}", img.display());
        assert_eq!(name(Kind::DataFile), data, "{}", img.display());
        if i < corpus_images {
            compared.0 += 1;
        } else {
            compared.1 += 1;
        }
    }
    // QEMU opens 93 of the 151 corpus images, and all five hostile ones.
    assert!(
        compared.0 >= 90,
        "only {} corpus images compared",
        compared.0
    );
    assert_eq!(compared.1, 5, "hostile images QEMU opened");
}
