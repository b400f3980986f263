//! `qcow2-conform run` with the bitmaps-unaware implementations: the crates
//! imago 0.2.6, qcow2-rs 0.1.6 and qcow2 0.1.2, and libqcow (Debian's
//! python3-libqcow), each over generated valid images (QEMU profile),
//! one-rule mutants, and a few images QEMU itself writes (compressed
//! clusters, a zero cluster over old data, zstd, compressed data at the end
//! of the file). Every run must complete and leave the corpus unchanged;
//! guest data an implementation reads must equal the model's. Where an
//! implementation really departs from the spec the outcome is pinned here
//! with its reason, derived from the image's properties (docs/findings.md
//! has the write-ups). A missing implementation fails the test.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

fn generate(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut all = args.to_vec();
    all.extend(["--profile", "qemu"]);
    cli::generate(&out, &all);
    out
}

/// Images written by QEMU's own tools, with a manifest whose expectations
/// are the model's verdicts:
/// - `zero-over-data`: 64 KiB clusters, plain, compressed and partial
///   writes, a zero write over an allocated cluster (QEMU keeps the offset
///   and sets the zero flag), an empty `auto` bitmap;
/// - `compressed-at-eof`: 4 KiB clusters, compressed data the last thing in
///   the file (QEMU does not pad the file to a whole sector);
/// - `zstd`: compression type zstd with compressed clusters.
fn qemu_corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("qemu-made");
    let images = corpus.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let img = |name: &str| images.join(name);
    cli::qemu_img_create(&img("zero-over-data.qcow2"), "cluster_size=65536", "8M");
    cli::qemu_io(
        &img("zero-over-data.qcow2"),
        &[
            "write -P 0x11 0 64k",
            "write -c -P 0x22 1M 64k",
            "write -P 0x44 2M 128k",
            "write -z 2M 64k",
            "write -P 0x55 3000000 5000",
            "write -c -P 0x66 5M 128k",
        ],
    );
    cli::run_ok(
        Command::new("qemu-img")
            .args(["bitmap", "--add"])
            .arg(img("zero-over-data.qcow2"))
            .arg("b0"),
    );
    cli::qemu_img_create(&img("compressed-at-eof.qcow2"), "cluster_size=4096", "4M");
    cli::qemu_io(
        &img("compressed-at-eof.qcow2"),
        &["write -P 0x77 12345 70000", "write -c -P 0x22 1M 64k"],
    );
    cli::qemu_img_create(
        &img("zstd.qcow2"),
        "cluster_size=65536,compression_type=zstd",
        "4M",
    );
    cli::qemu_io(
        &img("zstd.qcow2"),
        &["write -c -P 0x22 0 128k", "write -P 0x33 1M 4k"],
    );

    let mut cases = Vec::new();
    for name in ["zero-over-data", "compressed-at-eof", "zstd"] {
        let file = format!("images/{name}.qcow2");
        let o = Command::new(BIN)
            .args(["check", "--json"])
            .arg(corpus.join(&file))
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["verdict"], "valid", "{name}: {r}");
        let bitmaps: Vec<Value> = r["bitmaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                serde_json::json!({
                    "name": b["name"], "granularity_bits": b["granularity_bits"],
                    "usable": b["usable"],
                    "flags": {"in_use": b["flags"]["in_use"], "auto": b["flags"]["auto"]},
                    "content_sha256": b["content_sha256"], "set_bits": b["set_bits"],
                })
            })
            .collect();
        cases.push(serde_json::json!({
            "id": format!("qemu/{name}"),
            "file": file,
            "expected": {"verdict": "valid", "rules": [],
                         "bitmaps_extension": r["bitmaps_extension"], "bitmaps": bitmaps},
            "description": format!("written by qemu-img and qemu-io: {name}"),
        }));
    }
    let manifest = serde_json::json!({"format": "qcow2-conform-corpus/1", "cases": cases});
    std::fs::write(
        corpus.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    corpus
}

/// `qcow2-conform run --impl IMPL` over `corpus`: must complete and leave
/// the corpus byte for byte as it was. Returns the JSON report.
fn run(implementation: &str, corpus: &Path, out: &Path) -> Value {
    let json = out.join(format!(
        "{implementation}-{}.json",
        corpus.file_name().unwrap().to_string_lossy()
    ));
    cli::run_report(
        corpus,
        &json,
        &[
            "--impl",
            implementation,
            "--fail-on",
            "none",
            "--jobs",
            "2",
            "--timeout",
            "30",
        ],
    )
}

/// Header facts of an image that explain an implementation's behaviour.
#[derive(Debug)]
#[allow(dead_code)]
struct Props {
    version: u32,
    cluster_bits: u32,
    size: u64,
    snapshots: u32,
    incompatible: u64,
    refcount_order: u32,
    header_length: u32,
    /// A version 2 image with a header extension right after its 72 bytes.
    v2_extension: bool,
}

fn props(path: &Path) -> Props {
    let b = std::fs::read(path).unwrap();
    // Truncated mutants read as zeros past their end.
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map_or(0, |x| u32::from_be_bytes(x.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map_or(0, |x| u64::from_be_bytes(x.try_into().unwrap()))
    };
    let version = u32_at(4);
    Props {
        version,
        cluster_bits: u32_at(20),
        size: u64_at(24),
        snapshots: u32_at(60),
        incompatible: if version >= 3 { u64_at(72) } else { 0 },
        refcount_order: if version >= 3 { u32_at(96) } else { 4 },
        header_length: if version >= 3 { u32_at(100) } else { 72 },
        v2_extension: version == 2 && u32_at(72) != 0,
    }
}

struct Case {
    id: String,
    verdict: String,
    kind: String,
    detail: String,
    obs: Value,
    props: Props,
}

impl Case {
    /// The outcome is `kind` and its detail mentions `part`.
    fn is(&self, kind: &str, part: &str) -> bool {
        self.kind == kind && self.detail.contains(part)
    }

    /// A strict refusal of a valid image, or an outcome of `kinds`.
    fn among_or_strict_on_valid(&self, kinds: &[&str]) -> bool {
        kinds.contains(&self.kind.as_str()) || (self.kind == "strict" && self.verdict == "valid")
    }
}

fn cases(report: &Value, corpus: &Path) -> Vec<Case> {
    cli::report_cases(report)
        .iter()
        .map(|c| {
            let r = &c["results"][0];
            Case {
                id: c["id"].as_str().unwrap().to_owned(),
                verdict: c["expected"]["verdict"].as_str().unwrap().to_owned(),
                kind: r["outcome"]["kind"].as_str().unwrap().to_owned(),
                detail: r["outcome"]["detail"].to_string(),
                obs: r["observation"].clone(),
                props: props(&corpus.join(c["file"].as_str().unwrap())),
            }
        })
        .collect()
}

/// Outcome and a piece of its reason.
type Pin = (&'static str, &'static str);

/// Checks every case of a run against `expect` (`None`: a pass whose guest
/// data equals the model's). Returns how many cases compared guest data.
fn check_cases(name: &str, cs: &[Case], expect: impl Fn(&Case) -> Option<Pin>) -> usize {
    let mut compared = 0;
    let mut bad = Vec::new();
    for c in cs {
        let g = &c.obs["guest"];
        if g["ranges_compared"].as_u64().unwrap_or(0) > 0 {
            compared += 1;
        }
        match expect(c) {
            None => {
                if c.kind != "pass" {
                    bad.push(format!(
                        "{}: expected pass, got {}: {}",
                        c.id, c.kind, c.detail
                    ));
                } else if c.verdict == "valid" && c.obs["opened"] == true {
                    // The guest data comparison itself passed, and ran.
                    if g["mismatch_count"] != 0 || g["read_error_count"] != 0 {
                        bad.push(format!("{}: guest data differs: {g}", c.id));
                    }
                    if c.props.size > 0 && g["ranges_compared"].as_u64().unwrap_or(0) == 0 {
                        bad.push(format!("{}: no guest data compared: {g}", c.id));
                    }
                }
            }
            Some((kind, why)) => {
                if c.kind != kind || !c.detail.contains(why) {
                    bad.push(format!(
                        "{}: expected {kind} ({why:?}), got {}: {} [{:?}]",
                        c.id, c.kind, c.detail, c.props
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{name}:\n{}", bad.join("\n"));
    compared
}

/// Every crash is a panic inside the named crate's own source.
fn crashes_are_panics_in(cs: &[Case], krate: &str) {
    for c in cs.iter().filter(|c| c.kind == "crash") {
        assert!(
            c.detail.contains("SIGABRT") && c.detail.contains(&format!("{krate}/src/")),
            "{}: crash outside {krate}: {}",
            c.id,
            c.detail
        );
    }
}

/// Every outcome on the mutants is one `allowed` accepts: the
/// implementation's known departures and nothing else.
fn mutants_only(m: &[Case], allowed: impl Fn(&Case) -> bool) {
    for x in m {
        assert!(allowed(x), "{}: {} {}", x.id, x.kind, x.detail);
    }
}

struct Corpora {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    valid: PathBuf,
    mutants: PathBuf,
    qemu: PathBuf,
}

fn corpora() -> Corpora {
    let tmp = tempfile::tempdir().unwrap();
    let valid = generate(
        tmp.path(),
        "valid",
        &["--seed", "7", "--count", "24", "--valid"],
    );
    let mutants = generate(
        tmp.path(),
        "mutants",
        &["--seed", "5", "--count", "40", "--mutants"],
    );
    let qemu = qemu_corpus(tmp.path());
    Corpora {
        out: tmp.path().to_path_buf(),
        _tmp: tmp,
        valid,
        mutants,
        qemu,
    }
}

/// Runs implementation `name` over fresh valid, mutant and QEMU-made
/// corpora: their cases, in that order (none may hang).
fn all_runs(name: &str) -> (Vec<Case>, Vec<Case>, Vec<Case>) {
    let c = &corpora();
    let started = std::time::Instant::now();
    let v = cases(&run(name, &c.valid, &c.out), &c.valid);
    let m = cases(&run(name, &c.mutants, &c.out), &c.mutants);
    let q = cases(&run(name, &c.qemu, &c.out), &c.qemu);
    eprintln!("{name}: three runs in {:?}", started.elapsed());
    assert_eq!(v.len(), 24);
    assert_eq!(q.len(), 3);
    for x in v.iter().chain(&m).chain(&q) {
        assert_ne!(x.kind, "hang", "{name} {}: {}", x.id, x.detail);
    }
    (v, m, q)
}

const EXT_L2: u64 = 1 << 4;

#[test]
fn imago() {
    let (v, m, q) = all_runs("imago");
    let compared = check_cases("imago valid", &v, |c| {
        (c.props.incompatible & EXT_L2 != 0)
            .then_some(("pass", "Unrecognized incompatible feature(s) 4"))
    });
    assert!(compared >= 15, "only {compared} cases compared guest data");
    // Writes: imago clears autoclear bit 0 before writing (the write
    // check runs on every image, with or without a bitmaps extension).
    let writes: Vec<&Case> = v
        .iter()
        .chain(&q)
        .filter(|c| c.obs["write"]["written"] == true)
        .collect();
    assert!(writes.len() >= 4, "only {} writes", writes.len());
    for w in writes {
        assert_ne!(w.obs["write"]["extension_after"], "consistent", "{}", w.id);
    }
    check_cases("imago qemu-made", &q, |c| {
        c.id.ends_with("zstd").then_some((
            "pass",
            "Unrecognized incompatible feature(s) 3 (compression type)",
        ))
    });
    // Mutants: refusals of the dirty and corrupt bits (passes: the spec
    // requires them) are its only departures; no crash, mismatch or
    // corruption.
    mutants_only(&m, |x| {
        ["pass", "recorded"].contains(&x.kind.as_str())
            || x.is("pass", "Unrecognized incompatible feature")
            // It ignores crypt_method: a header claiming LUKS is read
            // as plaintext (crypt.refuse-without-key).
            || x.is("lenient", "without its key")
    });
}

#[test]
fn qcow2_rs() {
    let (v, m, q) = all_runs("qcow2-rs");
    let expect = |c: &Case| -> Option<Pin> {
        let p = &c.props;
        if p.size == 0 {
            Some(("crash", "helpers.rs:102: assertion failed: size != 0"))
        } else if p.cluster_bits < 12 {
            Some(("crash", "dev.rs:105: attempt to subtract with overflow"))
        } else if p.incompatible & EXT_L2 != 0 {
            Some(("pass", "Unrecognized incompatible feature(s) 4"))
        } else if p.v2_extension {
            // It reads a version 2 header as a version 3 one: the
            // extension's type and length become incompatible bits.
            Some(("strict", "Unrecognized incompatible feature(s)"))
        } else if c.kind == "corrupting" && (p.refcount_order != 4 || p.snapshots > 0) {
            // Sub-byte refcounts and snapshot-shared clusters: its writes
            // break the refcounts or the mapping.
            Some(("corrupting", "after writing"))
        } else if c.kind == "corrupting" {
            Some(("corrupting", "autoclear bit 0 is still set"))
        } else {
            None
        }
    };
    let compared = check_cases("qcow2-rs valid", &v, expect);
    assert!(compared >= 8, "only {compared} cases compared guest data");
    crashes_are_panics_in(&v, "qcow2-rs-0.1.6");
    crashes_are_panics_in(&m, "qcow2-rs-0.1.6");
    check_cases("qcow2-rs qemu-made", &q, |c| match c.id.as_str() {
        // The bug this suite exists for: it writes guest data and leaves
        // autoclear bit 0 set, so the empty auto bitmap "b0" is stale.
        "qemu/zero-over-data" => Some((
            "corrupting",
            "bitmap \\\"b0\\\": dirty ranges [] after the write",
        )),
        "qemu/compressed-at-eof" => {
            Some(("strict", "do_read_compressed: short read compressed data"))
        }
        _ => Some((
            "pass",
            "Unrecognized incompatible feature(s) 3 (compression type)",
        )),
    });
    let z = q.iter().find(|c| c.id == "qemu/zero-over-data").unwrap();
    assert!(
        z.detail.contains("autoclear bit 0 is still set"),
        "{}",
        z.detail
    );
    assert_eq!(z.obs["write"]["extension_after"], "consistent");
    mutants_only(&m, |x| {
        x.among_or_strict_on_valid(&["pass", "recorded", "crash"])
            || x.is("lenient", "without its key")
            || x.is("corrupting", "autoclear bit 0 is still set")
            // An auto-clear bit it does not know (bit 0; bit 1: it has
            // no external data files) left set after a write, on any
            // image (the write check runs on invalid ones too).
            || x.is("corrupting", "still set after the write")
            // Its refcount corruption (sub-byte refcounts), now seen on
            // images without a consistent bitmaps extension too.
            || x.is("corrupting", "no longer conforms after the write: refcount.overlap")
    });
}

#[test]
fn qcow2_crate() {
    let (v, m, q) = all_runs("qcow2");
    let expect = |c: &Case| -> Option<Pin> {
        let p = &c.props;
        if p.version == 2 {
            Some(("strict", "Unsupported version 2"))
        } else if p.incompatible & EXT_L2 != 0 {
            Some(("pass", "Unsupported feature: bit 4 of Incompatible"))
        } else if p.header_length != 104 {
            // It expects the header extensions right after byte 104.
            Some((
                "strict",
                "Malformed qcow2 file: header is 112 bytes, file claims",
            ))
        } else {
            None
        }
    };
    let compared = check_cases("qcow2 valid", &v, expect);
    assert!(compared >= 2, "only {compared} cases compared guest data");
    check_cases("qcow2 qemu-made", &q, |c| {
        Some(if c.id.ends_with("zstd") {
            ("pass", "Unsupported feature: compression type")
        } else {
            ("strict", "header is 112 bytes, file claims 112")
        })
    });
    mutants_only(&m, |x| x.among_or_strict_on_valid(&["pass", "recorded"]));
}

#[test]
fn libqcow() {
    let (v, m, q) = all_runs("libqcow");
    let expect = |c: &Case| -> Option<Pin> {
        let p = &c.props;
        if p.header_length > 112 {
            Some(("strict", "unsupported file header size"))
        } else if p.incompatible & EXT_L2 != 0 {
            Some(("pass", "unsupported incompatible features flags"))
        } else if p.size == 0 {
            Some(("strict", "invalid level1 table size value out of bounds"))
        } else {
            None
        }
    };
    let compared = check_cases("libqcow valid", &v, expect);
    assert!(compared >= 10, "only {compared} cases compared guest data");
    check_cases("libqcow qemu-made", &q, |c| {
        match c.id.as_str() {
        // A cluster with the zero flag and a host offset reads as zeros;
        // libqcow returns the old data at the offset.
        "qemu/zero-over-data" => Some((
            "mismatch",
            "guest data at virtual offset 2097152 (0x200000) differs: libqcow read 4444444444444444 where the model reads 0000000000000000",
        )),
        "qemu/zstd" => Some(("pass", "unsupported incompatible features flags")),
        _ => None,
    }
    });
    mutants_only(&m, |x| {
        x.among_or_strict_on_valid(&["pass", "recorded"])
            // An encrypted image opened without its key, its
            // ciphertext returned (crypt.refuse-without-key).
            || x.is("lenient", "without its key")
    });
}
