//! A corpus from anyone, and everything a program under test prints, as an
//! attacker would shape them (issue 21, Build items 4-6): kit files linked
//! to a secret or missing from SHA256SUMS, `images/` a symbolic link,
//! SHA256SUMS and case paths leading out of the corpus, FIFOs where files
//! belong, a 15 MiB exec answer of dirty ranges, U+FFFF and terminal escape
//! sequences in names, IDs, errors and reports, a damaged campaign state,
//! a manifest that is /dev/zero or 1 GB of holes, and `generate` asked for
//! ten million images under a memory limit. Each is refused at once with a
//! clear error, or detected, or made harmless; nothing blocks.

use serde_json::Value;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

/// Seconds any command here may take; reaching it means something blocked.
const DEADLINE: &str = "60";

/// Runs the binary with `args` under `timeout DEADLINE`; panics when it had
/// to be killed (it blocked).
fn conform(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg(DEADLINE).arg(BIN);
    for a in args {
        cmd.arg(a);
    }
    let o = cmd.output().unwrap();
    assert_ne!(o.status.code(), Some(124), "{cmd:?} blocked");
    o
}

/// `o` exited with `code` and its output mentions `says`.
fn exits_saying(o: &Output, code: i32, says: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    assert!(text(o).contains(says), "{}", text(o));
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A generated two-case corpus (small valid images) in `dir`.
fn small_corpus(dir: &Path) -> PathBuf {
    cli::generate(
        dir,
        &[
            "--valid",
            "--seed",
            "2",
            "--count",
            "2",
            "--profile",
            "small",
        ],
    );
    dir.to_owned()
}

/// A scratch directory holding a [`small_corpus`] in `c/`.
fn scratch_corpus() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let c = small_corpus(&d.path().join("c"));
    (d, c)
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The image file of the first case of corpus `c`, relative to `c`.
fn first_file(c: &Path) -> String {
    manifest(c)["cases"][0]["file"].as_str().unwrap().to_owned()
}

/// The manifest with only its first case, its `file` set to `file`.
fn one_case(dir: &Path, file: &str) {
    let mut m = manifest(dir);
    let mut case = m["cases"][0].clone();
    case["file"] = Value::String(file.to_owned());
    m["cases"] = Value::Array(vec![case]);
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

/// An exec adapter `dir/NAME.sh` whose `capabilities` answers `caps` and
/// whose `observe` runs `observe`; returns its `--impl`.
fn adapter(dir: &Path, name: &str, caps: &str, observe: &str) -> String {
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\ncapabilities) echo '{caps}';;\nobserve)\n{observe}\n;;\nesac\n"
    );
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, script).unwrap();
    format!("exec:sh {}", path.display())
}

/// `run` of `impl_` over the corpus `c` with its JSON report in `json`
/// and `more` arguments.
fn run(c: &Path, impl_: &str, json: &Path, more: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"run", &"--corpus", &c, &"--impl", &impl_, &"--json", &json];
    args.extend_from_slice(more);
    conform(&args)
}

/// [`run`] that must exit 0 (`--fail-on none`).
fn run_ok(c: &Path, impl_: &str, json: &Path) {
    let o = run(c, impl_, json, &[&"--fail-on", &"none"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

const CAPS: &str = r#"{"protocol":1,"capabilities":["observe"]}"#;
const REPLY: &str = r#"{"protocol":1,"opened":true,"error":null,"bitmaps":[]}"#;

fn mkfifo(path: &Path) {
    cli::run_ok(Command::new("mkfifo").arg(path));
}

/// No ESC, no C1 control, no U+FFFF in `bytes`.
fn assert_no_controls(what: &str, bytes: &[u8]) {
    assert!(!bytes.contains(&0x1b), "{what} holds ESC");
    assert!(!bytes.contains(&0x07), "{what} holds BEL");
    let s = String::from_utf8_lossy(bytes);
    let bad: Vec<char> = s
        .chars()
        .filter(|&c| ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{ffff}')
        .collect();
    assert!(bad.is_empty(), "{what} holds {bad:?}");
}

/// The paths in a `.tar.gz` and whether any file in it holds `needle`.
fn tarball(path: &Path, needle: &[u8]) -> (Vec<String>, bool) {
    use std::io::Read;
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut ar = tar::Archive::new(gz);
    let mut names = Vec::new();
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        found |= bytes.windows(needle.len()).any(|w| w == needle);
        names.push(name.split_once('/').unwrap().1.to_owned());
    }
    (names, found)
}

#[test]
fn kit_files_linked_to_a_secret_or_missing_from_the_sums_fail_verify_and_pack() {
    let (d, c) = scratch_corpus();
    let secret = d.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-7f3a\n").unwrap();
    // The kit, listed: verify and pack pass, and the tarball holds exactly
    // what SHA256SUMS lists (and SHA256SUMS).
    let mut sums = std::fs::read_to_string(c.join("SHA256SUMS")).unwrap();
    for f in conform::commands::corpus_kit::names() {
        let bytes = std::fs::read(cli::workspace().join("corpus").join(f)).unwrap();
        std::fs::create_dir_all(c.join(f).parent().unwrap()).unwrap();
        std::fs::write(c.join(f), &bytes).unwrap();
        sums.push_str(&format!("{}  {f}\n", sha256_hex(&bytes)));
    }
    std::fs::write(c.join("SHA256SUMS"), &sums).unwrap();
    let o = conform(&[&"corpus", &"verify", &c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = d.path().join("out");
    let o = conform(&[&"corpus", &"pack", &c, &"--out", &out]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (mut names, _) = tarball(&cli::tarballs(&out)[0], b"TOP-SECRET");
    let mut listed: Vec<String> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1.to_owned())
        .chain(["SHA256SUMS".to_owned()])
        .collect();
    names.sort();
    listed.sort();
    assert_eq!(names, listed, "the tarball holds what SHA256SUMS lists");

    // README.md a link to the secret, SHA256SUMS naming the secret's hash.
    let readme = std::fs::read(c.join("README.md")).unwrap();
    std::fs::remove_file(c.join("README.md")).unwrap();
    std::os::unix::fs::symlink(&secret, c.join("README.md")).unwrap();
    let linked = sums.replace(
        &format!("{}  README.md", sha256_hex(&readme)),
        &format!("{}  README.md", sha256_hex(b"TOP-SECRET-7f3a\n")),
    );
    std::fs::write(c.join("SHA256SUMS"), &linked).unwrap();
    let o = conform(&[&"corpus", &"verify", &c]);
    exits_saying(&o, 2, "leads out of the corpus");
    assert!(!text(&o).contains("TOP-SECRET"));
    let out = d.path().join("out2");
    let o = conform(&[&"corpus", &"pack", &c, &"--out", &out]);
    exits_saying(&o, 1, "refusing to pack");
    assert!(cli::tarballs(&out).is_empty(), "no tarball");

    // README.md a file again, but not in SHA256SUMS.
    std::fs::remove_file(c.join("README.md")).unwrap();
    std::fs::write(c.join("README.md"), &readme).unwrap();
    let unlisted: String = sums
        .lines()
        .filter(|l| !l.ends_with("  README.md"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(c.join("SHA256SUMS"), unlisted).unwrap();
    let o = conform(&[&"corpus", &"verify", &c]);
    exits_saying(&o, 2, "README.md: not listed in SHA256SUMS");
    let o = conform(&[&"corpus", &"pack", &c, &"--out", &out]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(cli::tarballs(&out).is_empty(), "no tarball");
}

#[test]
fn a_symlinked_images_directory_is_refused_or_its_changes_are_seen() {
    let (d, c) = scratch_corpus();
    let file = first_file(&c);
    // `images/` a link out of the corpus: the run is refused.
    let outside = d.path().join("elsewhere");
    std::fs::rename(c.join("images"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, c.join("images")).unwrap();
    let json = d.path().join("report.json");
    let writer = adapter(
        d.path(),
        "writer",
        CAPS,
        &format!("printf x >> '{}'; echo '{REPLY}'", c.join(&file).display()),
    );
    let o = run(&c, &writer, &json, &[]);
    exits_saying(&o, 1, "leads out of the corpus");
    assert!(!json.exists(), "no report of a refused corpus");

    // `images/` a link to a directory inside the corpus: the adapter's
    // write through it is seen (unless a sandbox stopped it: then the
    // corpus is unchanged and the report says so).
    std::fs::remove_file(c.join("images")).unwrap();
    std::fs::rename(&outside, c.join("store")).unwrap();
    std::os::unix::fs::symlink("store", c.join("images")).unwrap();
    let before = conform::runner::corpus::hash_tree(&c).unwrap();
    let bytes_before = cli::tree_hashes(&c.join("store"));
    let o = run(&c, &writer, &json, &[]);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let changed = bytes_before != cli::tree_hashes(&c.join("store"));
    assert_eq!(report["corpus_unchanged"], !changed, "{}", text(&o));
    if changed {
        assert_eq!(o.status.code(), Some(1));
        assert!(report["corpus_changes"][0]
            .as_str()
            .unwrap()
            .starts_with("store/"));
    }
    // The fingerprint itself sees a write through the link and a
    // retargeted link.
    std::fs::write(c.join(&file), b"changed").unwrap();
    std::fs::remove_file(c.join("images")).unwrap();
    std::os::unix::fs::symlink("./store", c.join("images")).unwrap();
    let after = conform::runner::corpus::hash_tree(&c).unwrap();
    let diff = conform::runner::corpus::differences(&before, &after);
    assert!(diff.contains(&"images changed".to_owned()), "{diff:?}");
    assert!(
        diff.iter()
            .any(|d| d.starts_with("store/") && d.ends_with("changed")),
        "{diff:?}"
    );
}

#[test]
fn sums_paths_leading_out_and_fifo_images_are_refused_at_once() {
    let (d, c) = scratch_corpus();
    let outside = d.path().join("x");
    std::fs::write(&outside, "outside the corpus\n").unwrap();
    let real = sha256_hex(b"outside the corpus\n");
    let mut sums = std::fs::read_to_string(c.join("SHA256SUMS")).unwrap();
    let zero = "0".repeat(64);
    sums.push_str(&format!("{zero}  ../x\n{zero}  {}\n", outside.display()));
    std::fs::write(c.join("SHA256SUMS"), sums).unwrap();
    let o = conform(&[&"corpus", &"verify", &c]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("\"../x\" contains `..`"), "{out}");
    assert!(out.contains("is empty or absolute"), "{out}");
    assert!(!out.contains(&real), "the hash of a file outside: {out}");

    // A case image that is a FIFO: verify and run answer at once.
    let file = first_file(&c);
    std::fs::remove_file(c.join(&file)).unwrap();
    mkfifo(&c.join(&file));
    let started = std::time::Instant::now();
    let o = conform(&[&"corpus", &"verify", &c]);
    exits_saying(&o, 2, "is a FIFO, not a regular file");
    let json = d.path().join("r.json");
    let impl_ = adapter(d.path(), "a", CAPS, &format!("echo '{REPLY}'"));
    let o = run(&c, &impl_, &json, &[]);
    exits_saying(&o, 1, "is a FIFO, not a regular file");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn case_files_outside_the_corpus_are_refused() {
    let (d, c) = scratch_corpus();
    let file = first_file(&c);
    std::fs::create_dir_all(d.path().join("outside")).unwrap();
    let o_qcow2 = d.path().join("outside/o.qcow2");
    std::fs::copy(c.join(&file), &o_qcow2).unwrap();
    let impl_ = adapter(d.path(), "a", CAPS, &format!("echo '{REPLY}'"));
    for (name, why) in [
        ("../outside/o.qcow2".to_owned(), "contains `..`"),
        (o_qcow2.display().to_string(), "is empty or absolute"),
    ] {
        one_case(&c, &name);
        let json = d.path().join("r.json");
        let o = run(&c, &impl_, &json, &[]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(why), "{name}: {}", text(&o));
        assert!(!json.exists());
        let o = conform(&[&"corpus", &"verify", &c]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(why), "{name}: {}", text(&o));
    }
}

#[test]
fn a_15_mib_answer_of_dirty_ranges_keeps_the_report_small() {
    let (d, c) = scratch_corpus();
    one_case(&c, &first_file(&c));
    let n = 900_000u64;
    let mut answer = String::from(
        r#"{"protocol":1,"opened":true,"error":null,"bitmaps":[{"name":"b","granularity_bits":9,"flags":{"in_use":false,"auto":true},"usable":true,"dirty_ranges":["#,
    );
    for i in 0..n {
        if i > 0 {
            answer.push(',');
        }
        answer.push_str(&format!("[{},{}]", 2 * i, 2 * i + 1));
    }
    answer.push_str("]}]}\n");
    assert!(
        answer.len() > 14 << 20 && answer.len() < 16 << 20,
        "{}",
        answer.len()
    );
    let answer_path = d.path().join("answer.json");
    std::fs::write(&answer_path, &answer).unwrap();
    let impl_ = adapter(
        d.path(),
        "ranges",
        CAPS,
        &format!("cat '{}'", answer_path.display()),
    );
    let json = d.path().join("r.json");
    run_ok(&c, &impl_, &json);
    let size = std::fs::metadata(&json).unwrap().len();
    assert!(size < 1 << 20, "report.json is {size} bytes for one case");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let b = &report["cases"][0]["results"][0]["observation"]["bitmaps"][0];
    assert_eq!(b["dirty_ranges"].as_array().unwrap().len(), 64);
    assert_eq!(b["dirty_ranges_digest"]["count"], n);
    let mut h = sha2::Sha256::new();
    for i in 0..n {
        h.update((2 * i).to_be_bytes());
        h.update((2 * i + 1).to_be_bytes());
    }
    assert_eq!(
        b["dirty_ranges_digest"]["sha256"],
        hex::encode(h.finalize()),
        "the digest stands for the whole list"
    );
}

/// JSON string text for `s` (for shell scripts: ASCII only).
fn json_ascii(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_control() && c != '\'' && c != '"' && c != '\\' {
            o.push(c);
        } else {
            o.push_str(&format!("\\u{:04x}", c as u32));
        }
    }
    o
}

/// `run` of `impl_` over `c` (`--fail-on FAIL_ON`) with its JSON, JUnit
/// and HTML reports in `dir`; checks that the run's output, the JUnit file
/// and the HTML page hold no control sequence and that the JUnit file is
/// well-formed XML. Returns the JSON report's path and the JUnit text.
fn run_reports_clean(c: &Path, impl_: &str, dir: &Path, fail_on: &str) -> (PathBuf, String) {
    let (json, junit, html) = (dir.join("r.json"), dir.join("r.xml"), dir.join("r.html"));
    let o = run(
        c,
        impl_,
        &json,
        &[&"--junit", &junit, &"--html", &html, &"--fail-on", &fail_on],
    );
    assert!(matches!(o.status.code(), Some(0) | Some(2)), "{}", text(&o));
    assert_no_controls("run's output", &[o.stdout, o.stderr].concat());
    let xml = std::fs::read_to_string(&junit).unwrap();
    if let Err(e) = roxmltree::Document::parse(&xml) {
        panic!("{e}:\n{xml}");
    }
    assert_no_controls("JUnit", xml.as_bytes());
    assert_no_controls("HTML", &std::fs::read(&html).unwrap());
    (json, xml)
}

/// Text with what breaks XML or acts on a terminal.
const HOSTILE: &str = "x\u{ffff}\u{1b}]0;title\u{7}\u{1b}[2J\u{9b}31m\u{0}y";

#[test]
fn hostile_names_ids_and_errors_leave_junit_well_formed_and_terminals_untouched() {
    let (d, c) = scratch_corpus();
    let mut m = manifest(&c);
    m["cases"][0]["id"] = Value::String(format!("valid/{HOSTILE}"));
    std::fs::write(c.join("manifest.json"), m.to_string()).unwrap();
    let h = json_ascii(HOSTILE);
    let caps =
        format!(r#"{{"protocol":1,"capabilities":["observe"],"name":"{h}","version":"1{h}"}}"#);
    let reply = format!(
        r#"{{"protocol":1,"opened":false,"error":"refused {h}","bitmaps":[{{"name":"{h}","granularity_bits":16,"usable":false}}]}}"#
    );
    let impl_ = adapter(
        d.path(),
        "hostile",
        &caps,
        &format!("printf 'oops \\033]52;c;cHduZWQ=\\007\\n' >&2; echo '{reply}'"),
    );
    let (json, xml) = run_reports_clean(&c, &impl_, d.path(), "default");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let names: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .filter_map(|n| n.attribute("name"))
        .collect();
    assert_eq!(names.len(), 2);
    let product = doc
        .descendants()
        .find(|n| n.attribute("name").is_some_and(|a| a.ends_with(".product")))
        .and_then(|n| n.attribute("value"))
        .expect("the program's name is a JUnit property");
    assert!(product.starts_with("x\\u{ffff}\\x1b]0;"), "{product}");
    assert!(
        names
            .iter()
            .any(|n| n.contains("\\u{ffff}\\x1b]0;title\\x07")),
        "{names:?}"
    );

    // `report diff` of two reports whose IDs and names are hostile.
    let mut other: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for r in other["cases"][0]["results"].as_array_mut().unwrap() {
        r["outcome"]["kind"] = Value::String("crash".into());
        r["implementation"] = Value::String(format!("impl {HOSTILE}"));
    }
    let new = d.path().join("new.json");
    std::fs::write(&new, other.to_string()).unwrap();
    let o = conform(&[&"report", &"diff", &json, &new]);
    exits_saying(&o, 1, "regressed");
    assert_no_controls("report diff", &[o.stdout, o.stderr].concat());
}

/// A 1 MiB image made by qemu-img, whose feature-name table names the
/// dirty bit with terminal escape sequences.
fn image_with_hostile_feature_name(dir: &Path) -> PathBuf {
    let img = dir.join("f.qcow2");
    cli::run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("1M"),
    );
    let mut b = std::fs::read(&img).unwrap();
    let at = b
        .windows(9)
        .position(|w| w == b"dirty bit")
        .expect("qemu-img writes a feature-name table");
    let name = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}";
    b[at..at + name.len()].copy_from_slice(name.as_bytes());
    std::fs::write(&img, b).unwrap();
    img
}

#[test]
fn dump_and_check_print_no_escape_sequence_from_an_image() {
    let d = tempfile::tempdir().unwrap();
    let img = image_with_hostile_feature_name(d.path());
    let o = conform(&[&"dump", &img]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("\\x1b]0;pwned\\x07\\x1b[2J\\x9b"), "{out}");
    assert_no_controls("dump", &o.stdout);
    let o = conform(&[&"check", &img]);
    assert_no_controls("check", &[o.stdout, o.stderr].concat());
}

#[test]
fn a_damaged_state_pair_stops_the_campaign_and_keeps_both_files() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("camp");
    std::fs::create_dir_all(&out).unwrap();
    let bad = b"{\"implementation\": \"qemu\xff\", \"seed\": 1}\n";
    std::fs::write(out.join("state.json"), bad).unwrap();
    std::fs::write(out.join("state.json.prev"), bad).unwrap();
    let o = conform(&[
        &"campaign",
        &"--impl",
        &"qemu",
        &"--seed",
        &"1",
        &"--duration",
        &"5s",
        &"--read-only",
        &"--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("is not UTF-8"), "{err}");
    assert!(err.contains("no good previous copy"), "{err}");
    assert_eq!(std::fs::read(out.join("state.json")).unwrap(), bad);
    assert_eq!(std::fs::read(out.join("state.json.prev")).unwrap(), bad);
}

/// `prlimit --as=BYTES timeout DEADLINE qcow2-conform ARGS`.
fn limited(bytes: u64, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={bytes}"))
        .arg("timeout")
        .arg(DEADLINE)
        .arg(BIN);
    for a in args {
        cmd.arg(a);
    }
    let o = cmd.output().unwrap();
    assert_ne!(o.status.code(), Some(124), "{cmd:?} blocked");
    o
}

#[test]
fn hostile_manifests_reports_and_expectations_are_refused_quickly_in_bounded_memory() {
    const LIMIT: u64 = 512 << 20;
    let (d, c) = scratch_corpus();
    let impl_ = adapter(d.path(), "a", CAPS, &format!("echo '{REPLY}'"));
    let json = d.path().join("r.json");
    run_ok(&c, &impl_, &json);
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);

    // manifest.json a link to /dev/zero, then 1 GB of holes: `run` and
    // `corpus verify` refuse it with `why`.
    let run: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"run", &"--corpus", &c, &"--impl", &impl_];
    let refused = |why: &str| {
        for args in [run.clone(), vec![&"corpus", &"verify", &c]] {
            let o = limited(LIMIT, &args);
            exits_saying(&o, 1, why);
        }
    };
    let m = c.join("manifest.json");
    let saved = std::fs::read(&m).unwrap();
    std::fs::remove_file(&m).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &m).unwrap();
    refused("leads out of the corpus");
    std::fs::remove_file(&m).unwrap();
    std::fs::File::create(&m).unwrap().set_len(1 << 30).unwrap();
    refused("over the limit");
    std::fs::write(&m, saved).unwrap();

    // A FIFO where a report or an expectations file belongs.
    for args in [
        vec![
            &"report" as &dyn AsRef<std::ffi::OsStr>,
            &"diff",
            &fifo,
            &json,
        ],
        vec![&"report", &"diff", &json, &fifo],
        [&run[..], &[&"--expect", &fifo]].concat(),
        [&run[..], &[&"--rerun", &fifo]].concat(),
    ] {
        let o = limited(LIMIT, &args);
        exits_saying(&o, 1, "is a FIFO, not a regular file");
    }
    // A sparse report of 1 GB: over the cap, refused before reading.
    let big = d.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let o = limited(LIMIT, &[&"report", &"diff", &big, &json]);
    exits_saying(&o, 1, "over the limit");
}

#[test]
fn generate_streams_ten_million_cases_under_a_memory_limit() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("g");
    let o = Command::new("prlimit")
        .arg(format!("--as={}", 1u64 << 30))
        .args(["timeout", "-s", "TERM", "10"])
        .arg(BIN)
        .args([
            "generate",
            "--valid",
            "--profile",
            "small",
            "--count",
            "10000000",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    // Stopped by the timeout while writing, not aborted by the limit.
    assert_eq!(o.status.code(), Some(124), "{}", text(&o));
    let images = std::fs::read_dir(out.join("images")).unwrap().count();
    assert!(images >= 8, "{images} images written in 10 s");
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap_or_default();
    assert!(
        manifest.contains("\"cases\": ["),
        "the manifest is streamed"
    );
}

/// Bitmap names (and a case ID) that break XML and act on terminals, on
/// a real image that QEMU opens: one bitmap `in_use` (QEMU refuses to use
/// it and its error quotes the name), one usable.
#[test]
fn qemu_over_hostile_bitmap_names_leaves_junit_well_formed_and_terminals_untouched() {
    use generator::contents::Contents;
    use generator::{BitmapSpec, ImageSpec};
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("c");
    std::fs::create_dir_all(c.join("images")).unwrap();
    let name = "b\u{ffff}\u{1b}]0;t\u{7}\u{1b}[2J\u{9b}";
    let mut spec = ImageSpec::empty(1 << 20);
    let mut stale = BitmapSpec::new(name, 16, Contents::Ranges(vec![(0, 2)]));
    stale.in_use = true;
    spec.bitmaps = vec![
        stale,
        BitmapSpec::new(&format!("u{name}"), 16, Contents::Ranges(vec![(1, 3)])),
    ];
    let bytes = generator::build(&spec).unwrap().bytes;
    std::fs::write(c.join("images/h.qcow2"), &bytes).unwrap();
    let report = spec_model::check(std::io::Cursor::new(&bytes)).unwrap();
    let m = generator::Manifest::new(vec![generator::ManifestCase {
        id: format!("bitmaps.dir.in-use/{name}"),
        file: "images/h.qcow2".into(),
        expected: generator::Expected::from_report(&report),
        description: format!("hostile names {name}"),
        companions: Vec::new(),
        secret: None,
    }]);
    std::fs::write(c.join("manifest.json"), m.to_json()).unwrap();
    let (json, _) = run_reports_clean(&c, "qemu", d.path(), "all");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let seen = report["cases"][0]["results"][0]["observation"]["bitmaps"].to_string();
    assert!(
        seen.contains("\\u001b]0;t"),
        "QEMU listed the names: {seen}"
    );
}
