//! `qcow2-conform run --html`: the page renders in headless Chromium
//! (Debian's `chromium`; a missing browser fails the test, it is installed
//! by `scripts/setup.sh`), the screenshot is a real picture, and the table
//! in the rendered DOM says exactly what the JSON report says, cell by cell
//! and in the totals.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

/// An exec-protocol program that opens everything and claims one usable
/// bitmap the image does not have: mismatch, strict and lenient cells.
const LIAR: &str = r#"#!/bin/sh
case "$1" in
  capabilities) echo '{"protocol": 1, "capabilities": ["observe"]}' ;;
  observe) printf '%s\n' '{"protocol": 1, "opened": true, "error": null, "bitmaps": [{"name": "ghost", "granularity_bits": 16, "flags": {"in_use": false, "auto": true}, "usable": true, "content_sha256": "00"}]}' ;;
  *) exit 1 ;;
esac
"#;

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium not found on PATH: install Debian's chromium (scripts/setup.sh does) or set CHROMIUM"
    );
}

/// Runs headless Chromium on `page` with `mode` (`--screenshot=FILE` or
/// `--dump-dom`), returning its standard output; fails after two minutes.
fn chromium_run(page: &Path, work: &Path, mode: &str) -> String {
    chromium_url(&format!("file://{}", page.display()), work, mode)
}

/// As [`chromium_run`], for any address (a page with a `#fragment`).
fn chromium_url(url: &str, work: &Path, mode: &str) -> String {
    let profile = tempfile::tempdir_in(work).unwrap();
    let out_path = work.join(format!("chromium-{}.out", mode.len()));
    let err_path = work.join(format!("chromium-{}.err", mode.len()));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {mode} did not finish in 120 s:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "chromium {mode} failed ({status}):\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    std::fs::read_to_string(&out_path).unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in the start tag `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = tag[at..].find('"')?;
    Some(unescape(&tag[at..at + end]))
}

/// Start tags of element `el` in `dom`, each with the text up to the next
/// `<` (the element's leading text).
fn tags<'a>(dom: &'a str, el: &str) -> Vec<(&'a str, &'a str)> {
    let open = format!("<{el}");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if !after.starts_with([' ', '>']) {
            rest = after;
            continue;
        }
        let end = after.find('>').expect("unterminated tag");
        let tag = &after[..end];
        let text_end = after[end + 1..].find('<').unwrap_or(after.len() - end - 1);
        out.push((tag, &after[end + 1..end + 1 + text_end]));
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn html_page_renders_in_chromium_and_matches_the_json_report() {
    let started = Instant::now();
    let (tmp, corpus) = cli::generated_corpus(
        "corpus",
        &["--seed", "3", "--count", "8", "--profile", "qemu"],
    );
    let liar = tmp.path().join("liar.sh");
    std::fs::write(&liar, LIAR).unwrap();

    let json = tmp.path().join("report.json");
    let page = tmp.path().join("report.html");
    cli::run_ok(
        Command::new(BIN)
            .args(["run", "--impl", "qemu", "--impl"])
            .arg(format!("exec:sh {}", liar.display()))
            .arg("--corpus")
            .arg(&corpus)
            .arg("--json")
            .arg(&json)
            .arg("--html")
            .arg(&page)
            .args(["--jobs", "2", "--fail-on", "none"]),
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let source = std::fs::read_to_string(&page).unwrap();
    for banned in ["http://", "https://", "<link", "src="] {
        assert!(
            !source.contains(banned),
            "the page is not self-contained: {banned}"
        );
    }

    // 1. A screenshot: a PNG of the requested size, with real content.
    let shot = tmp.path().join("shot.png");
    chromium_run(
        &page,
        tmp.path(),
        &format!("--screenshot={}", shot.display()),
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), (1400, 2000));
    assert!(png.len() > 30_000, "screenshot only {} bytes", png.len());
    if let Some(keep) = std::env::var_os("RUNNER_HTML_KEEP") {
        let _ = std::fs::copy(&shot, Path::new(&keep).join("runner-html.png"));
        let _ = std::fs::copy(&page, Path::new(&keep).join("runner-html.html"));
    }

    // 2. The rendered DOM: every outcome cell against the JSON report.
    let dom = chromium_run(&page, tmp.path(), "--dump-dom");
    assert!(dom.contains("id=\"matrix\""), "no matrix in the DOM");
    let mut want: BTreeMap<(String, String), String> = BTreeMap::new();
    for c in report["cases"].as_array().unwrap() {
        for r in c["results"].as_array().unwrap() {
            want.insert(
                (
                    c["id"].as_str().unwrap().to_owned(),
                    r["implementation"].as_str().unwrap().to_owned(),
                ),
                r["outcome"]["kind"].as_str().unwrap().to_owned(),
            );
        }
    }
    let mut got: BTreeMap<(String, String), String> = BTreeMap::new();
    for (tag, text) in tags(&dom, "td") {
        let Some(case) = attr(tag, "data-case") else {
            continue;
        };
        let imp = attr(tag, "data-impl").expect("cell without data-impl");
        let outcome = attr(tag, "data-outcome").expect("cell without data-outcome");
        let class = attr(tag, "class").unwrap_or_default();
        assert!(
            class.split(' ').any(|c| c == format!("o-{outcome}")),
            "cell {case} / {imp}: class {class:?} does not colour {outcome}"
        );
        let _ = text;
        assert!(
            got.insert((case.clone(), imp.clone()), outcome).is_none(),
            "two cells for {case} / {imp}"
        );
    }
    assert_eq!(got, want, "the page's matrix differs from the JSON report");
    let kinds: std::collections::BTreeSet<&String> = got.values().collect();
    assert!(
        kinds.len() >= 4,
        "too few outcome kinds to be a real test: {kinds:?}"
    );

    // 3. The totals table.
    let mut current: Option<String> = None;
    let mut totals: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut rest = dom.as_str();
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if rest.starts_with("<tr") {
            let end = rest.find('>').unwrap();
            current = attr(&rest[..end], "data-impl");
        } else if rest.starts_with("<td") {
            let end = rest.find('>').unwrap();
            let tag = &rest[..end];
            if let (Some(imp), Some(k), None) = (
                current.as_ref(),
                attr(tag, "data-outcome"),
                attr(tag, "data-case"),
            ) {
                let text_end = rest[end + 1..].find('<').unwrap();
                let n: u64 = rest[end + 1..end + 1 + text_end].trim().parse().unwrap();
                if n > 0 {
                    totals.entry(imp.clone()).or_default().insert(k, n);
                }
            }
        }
        rest = &rest[1..];
    }
    let want_totals: BTreeMap<String, BTreeMap<String, u64>> =
        serde_json::from_value(report["totals"].clone()).unwrap();
    assert_eq!(
        totals, want_totals,
        "the page's totals differ from the JSON"
    );

    // 4. The per-implementation filter, set from the address: exactly the
    // rows where qemu's outcome fails by default stay visible.
    let url = format!("file://{}#filter=qemu:failing", page.display());
    let filtered_dom = chromium_url(&url, tmp.path(), "--dump-dom");
    let mut hidden: BTreeMap<String, bool> = BTreeMap::new();
    for (tag, _) in tags(&filtered_dom, "tr") {
        if let Some(case) = attr(tag, "data-case") {
            let class = attr(tag, "class").unwrap_or_default();
            hidden.insert(case, class.split(' ').any(|c| c == "filtered"));
        }
    }
    let failing = cli::FAILING_BY_DEFAULT;
    let want_hidden: BTreeMap<String, bool> = want
        .iter()
        .filter(|((_, imp), _)| imp == "qemu")
        .map(|((case, _), k)| (case.clone(), !failing.contains(&k.as_str())))
        .collect();
    assert_eq!(hidden, want_hidden, "rows the qemu:failing filter shows");
    assert!(
        want_hidden.values().any(|h| *h) && want_hidden.values().any(|h| !*h),
        "the filter must hide some rows and keep others"
    );

    cli::assert_within(started, 180);
}
