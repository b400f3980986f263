//! The judge, tested with real programs speaking the exec protocol: small
//! Python and shell scripts that crash, hang, claim an invalid image's
//! bitmap usable, misreport one bitmap's contents, or write guest data
//! without maintaining the bitmaps. Each must get its outcome; an honest
//! program (wrapping the reference model) must pass everything. The
//! images are made by the real qemu-img/qemu-io (a missing tool fails).

use generator::{Expected, Manifest, ManifestCase};
use serde_json::Value;
use spec_model::Verdict;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::{run_ok, BIN};

/// The expected verdict of an image, taken from the reference model (the
/// images here are hand-made, not generated from a spec).
fn expected_of(path: &Path) -> Expected {
    Expected::from_report(&spec_model::check_path(path).expect("model"))
}

/// A corpus of two cases: a valid image (1 MiB, every cluster allocated,
/// one `auto` bitmap with some bits set) and the same image with a
/// reserved directory-entry flag bit set (invalid extension).
fn corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(corpus.join("images")).unwrap();
    let valid = corpus.join("images/valid.qcow2");
    let v = valid.to_str().unwrap();
    cli::qemu_img_create(&valid, "cluster_size=65536", "1M");
    cli::qemu_io(&valid, &["write -P 1 0 1M"]);
    run_ok(Command::new("qemu-img").args(["bitmap", "--add", "-g", "65536", v, "b0"]));
    cli::qemu_io(
        &valid,
        &["write -P 2 100000 5000", "write -P 3 700000 200000"],
    );
    let e_valid = expected_of(&valid);
    assert_eq!(e_valid.verdict, Verdict::Valid, "{e_valid:?}");
    assert_eq!(e_valid.bitmaps.as_ref().unwrap()[0].set_bits, Some(5));

    let invalid = corpus.join("images/flags-reserved.qcow2");
    let mut bytes = std::fs::read(&valid).unwrap();
    let model = spec_model::Model::open(std::io::Cursor::new(bytes.clone())).unwrap();
    let dir_off = model
        .analysis()
        .bitmaps_ext
        .as_ref()
        .unwrap()
        .bitmap_directory_offset as usize;
    bytes[dir_off + 15] |= 0x08; // flags bit 3: reserved
    std::fs::write(&invalid, &bytes).unwrap();
    let e_invalid = expected_of(&invalid);
    assert_eq!(e_invalid.verdict, Verdict::Invalid);
    assert!(e_invalid
        .rules
        .contains(&"bitmaps.dir.flags-reserved".to_owned()));

    let m = Manifest::new(vec![
        ManifestCase {
            id: "valid/0001".into(),
            file: "images/valid.qcow2".into(),
            expected: e_valid,
            description: "valid, one auto bitmap with 5 bits set".into(),
            companions: Vec::new(),
            secret: None,
        },
        ManifestCase {
            id: "bitmaps.dir.flags-reserved/0001".into(),
            file: "images/flags-reserved.qcow2".into(),
            expected: e_invalid,
            description: "reserved flag bit 3 set".into(),
            companions: Vec::new(),
            secret: None,
        },
    ]);
    std::fs::write(corpus.join("manifest.json"), m.to_json()).unwrap();
    corpus
}

/// One Python program, several behaviours chosen by its first argument.
const PROGRAM: &str = r#"
import json, subprocess, sys, struct

QC = sys.argv[1]
mode = sys.argv[2]
verb = sys.argv[3]

def reply(obj):
    obj["protocol"] = 1
    print(json.dumps(obj))
    sys.exit(0)

if verb == "capabilities":
    reply({"capabilities": ["observe", "write"] if mode == "unaware-writer" else ["observe"]})

image = sys.argv[4]

if verb == "observe":
    out = subprocess.run([QC, "check", "--json", image], capture_output=True, text=True)
    r = json.loads(out.stdout)
    bitmaps = []
    for b in r["bitmaps"]:
        bitmaps.append({
            "name": b["name"],
            "granularity_bits": b["granularity_bits"],
            "flags": {"in_use": b["flags"]["in_use"], "auto": b["flags"]["auto"]},
            "usable": b["usable"],
            "content_sha256": b["content_sha256"],
        })
    opened = r["verdict"] != "invalid"
    if mode == "lenient":
        # Opens anything and uses every bitmap it can parse.
        opened = True
        for b in bitmaps:
            b["usable"] = True
            b["content_sha256"] = b["content_sha256"] or "00" * 32
    if mode == "flip-bit":
        # Misreads one bit of the first bitmap's contents.
        for b in bitmaps:
            if b["content_sha256"]:
                h = b["content_sha256"]
                b["content_sha256"] = h[:-1] + "%x" % (int(h[-1], 16) ^ 1)
                break
    reply({"opened": opened, "error": None if opened else "invalid image", "bitmaps": bitmaps})

if verb == "write":
    # Writes guest data straight into the allocated clusters, knows
    # nothing of bitmaps and leaves autoclear bit 0 set.
    off, length = int(sys.argv[5]), int(sys.argv[6])
    with open(image, "r+b") as f:
        hdr = f.read(104)
        cluster_bits = struct.unpack(">I", hdr[20:24])[0]
        l1_offset = struct.unpack(">Q", hdr[40:48])[0]
        cs = 1 << cluster_bits
        per_l2 = cs // 8
        mask = 0x00fffffffffffe00
        pos, end = off, off + length
        while pos < end:
            vcluster = pos // cs
            f.seek(l1_offset + 8 * (vcluster // per_l2))
            l2 = struct.unpack(">Q", f.read(8))[0] & mask
            f.seek(l2 + 8 * (vcluster % per_l2))
            host = struct.unpack(">Q", f.read(8))[0] & mask
            assert host != 0, "cluster not allocated"
            n = min(end, (vcluster + 1) * cs) - pos
            f.seek(host + pos % cs)
            f.write(b"\xa5" * n)
            pos += n
    reply({"ok": True, "error": None})
sys.exit(3)
"#;

#[test]
fn judge_classifies_real_programs() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus(tmp.path());
    let py = tmp.path().join("program.py");
    std::fs::write(&py, PROGRAM).unwrap();
    let crash = tmp.path().join("crash.sh");
    std::fs::write(
        &crash,
        "#!/bin/sh\n[ \"$1\" = capabilities ] && exec echo '{\"protocol\": 1}'\necho about to crash >&2\nkill -SEGV $$\n",
    )
    .unwrap();
    let hang = tmp.path().join("hang.sh");
    std::fs::write(
        &hang,
        "#!/bin/sh\n[ \"$1\" = capabilities ] && exec echo '{\"protocol\": 1}'\n[ \"$1\" = observe ] || exit 1\nsleep 60 &\nsleep 60\n",
    )
    .unwrap();
    for p in [&crash, &hang] {
        run_ok(Command::new("chmod").arg("+x").arg(p));
    }
    let prog = |mode: &str| format!("exec:python3 {} {BIN} {mode}", py.display());
    let impls = [
        ("honest", prog("honest")),
        ("lenient", prog("lenient")),
        ("flip-bit", prog("flip-bit")),
        ("unaware-writer", prog("unaware-writer")),
        ("crash", format!("exec:{}", crash.display())),
        ("hang", format!("exec:{}", hang.display())),
    ];
    let json = tmp.path().join("report.json");
    let junit = tmp.path().join("report.xml");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--corpus"]).arg(&corpus);
    for (_, i) in &impls {
        cmd.arg("--impl").arg(i);
    }
    cmd.args(["--timeout", "6", "--jobs", "2", "--json"])
        .arg(&json)
        .arg("--junit")
        .arg(&junit);
    let out = cmd.output().expect("run qcow2-conform");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "failing outcomes must give exit status 2\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["corpus_unchanged"], true);
    let outcome = |case: &str, who: &str| -> (String, Value) {
        // Results are keyed by the program's name, found beside the
        // template that started it in the provenance.
        let template = &impls.iter().find(|(n, _)| *n == who).unwrap().1;
        let r = cli::report_result(&report, case, &cli::implementation_key(&report, template));
        (r["outcome"]["kind"].as_str().unwrap().to_owned(), r.clone())
    };
    let valid = "valid/0001";
    let invalid = "bitmaps.dir.flags-reserved/0001";
    let want = [
        (valid, "honest", "pass"),
        (invalid, "honest", "pass"),
        (valid, "lenient", "pass"),
        (invalid, "lenient", "lenient"),
        (valid, "flip-bit", "mismatch"),
        (valid, "unaware-writer", "corrupting"),
        (invalid, "unaware-writer", "pass"),
        (valid, "crash", "crash"),
        (invalid, "crash", "crash"),
        (valid, "hang", "hang"),
        (invalid, "hang", "hang"),
    ];
    let mut wrong = Vec::new();
    for (case, who, kind) in want {
        let (got, r) = outcome(case, who);
        if got != kind {
            wrong.push(format!(
                "{case} under {who}: {got}, expected {kind}: {}",
                serde_json::to_string_pretty(&r).unwrap()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n{stdout}", wrong.join("\n\n"));

    // The reasons are specific.
    let (_, r) = outcome(valid, "crash");
    let detail = r["outcome"]["detail"].to_string();
    assert!(detail.contains("signal 11"), "{detail}");
    assert!(r["observation"]["stderr_excerpt"]
        .as_str()
        .unwrap()
        .contains("about to crash"));
    let (_, r) = outcome(valid, "unaware-writer");
    let detail = r["outcome"]["detail"].to_string();
    assert!(
        detail.contains("b0") && detail.contains("autoclear bit 0 is still set"),
        "{detail}"
    );
    let commands = r["observation"]["commands"].to_string();
    assert!(commands.contains(" write "), "{commands}");
    assert!(commands.contains("cp --sparse=always"), "{commands}");
    let (_, r) = outcome(valid, "flip-bit");
    assert!(r["outcome"]["detail"]
        .to_string()
        .contains("contents differ"));
    // The hang was cut at the limit, its whole process group with it.
    let (_, r) = outcome(valid, "hang");
    assert!(r["observation"]["duration_ms"].as_u64().unwrap() < 10_000);

    // JUnit: one test case per case and implementation; crash and hang
    // are errors, the other failing outcomes failures.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 2 * impls.len());
    assert_eq!(xml.matches("<failure ").count(), 3, "{xml}");
    assert_eq!(xml.matches("<error ").count(), 4, "{xml}");

    // --fail-on chooses which outcomes fail the run: (implementation,
    // --fail-on, expected exit code).
    for (imp, fail_on, code) in [(0, "none", 0), (2, "crash,hang", 0), (2, "mismatch", 2)] {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--corpus"])
            .arg(&corpus)
            .arg("--impl")
            .arg(&impls[imp].1)
            .args(["--fail-on", fail_on]);
        assert_eq!(cmd.output().unwrap().status.code(), Some(code), "{fail_on}");
    }
    cli::assert_within(started, 90);
}

#[test]
fn stray_children_do_not_outlive_a_timeout() {
    // A program that starts a background child and hangs: after the run,
    // no process of its group may remain.
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus(tmp.path());
    let marker = tmp.path().join("pids");
    let prog = tmp.path().join("spawner.sh");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\n[ \"$1\" = capabilities ] && exec echo '{{\"protocol\": 1}}'\n[ \"$1\" = observe ] || exit 1\nsleep 300 &\necho $! >> {}\nsleep 300\n",
            marker.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("+x").arg(&prog));
    let out = Command::new(BIN)
        .args(["run", "--corpus"])
        .arg(&corpus)
        .arg("--impl")
        .arg(format!("exec:{}", prog.display()))
        // Unsandboxed: the program records its PIDs outside its scratch
        // directory.
        .args(["--timeout", "1", "--fail-on", "none", "--sandbox", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let pids = std::fs::read_to_string(&marker).unwrap();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        // Killed processes may linger for a moment as zombies of init.
        let mut gone = false;
        for _ in 0..100 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if status.is_empty() || status.contains(") Z ") {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(gone, "background child {pid} survived the timeout");
    }
}

// Unit-level: Observations built by hand, judged without running anything.

use conform::runner::checks::WriteCheck;
use conform::runner::judge::cause::{Check, ImageFacts, ModelBitmap};
use conform::runner::judge::{judge, judge_in, Context, OutcomeKind};
use conform::runner::observation::{IntegrityCheck, Observation, ObservedBitmap, ObservedFlags};
use generator::expected::{ExpectedBitmap, ExpectedFlags};

/// An invalid case breaking `rules`, with no bitmaps to compare.
fn invalid(rules: &[&str], extension: spec_model::ExtensionState) -> Expected {
    Expected {
        verdict: spec_model::Verdict::Invalid,
        rules: rules.iter().map(|r| r.to_string()).collect(),
        bitmaps_extension: extension,
        bitmaps: None,
    }
}

fn valid_one() -> Expected {
    Expected {
        verdict: spec_model::Verdict::Valid,
        rules: vec![],
        bitmaps_extension: spec_model::ExtensionState::Consistent,
        bitmaps: Some(vec![ExpectedBitmap {
            name: "b".into(),
            granularity_bits: 16,
            usable: true,
            flags: ExpectedFlags {
                in_use: false,
                auto: true,
            },
            content_sha256: Some("aa".into()),
            set_bits: Some(1),
        }]),
    }
}

fn seen(sha: &str) -> Observation {
    let mut o = Observation::default();
    o.opened = true;
    o.bitmaps = vec![ObservedBitmap {
        name: "b".into(),
        granularity_bits: Some(16),
        flags: ObservedFlags {
            in_use: false,
            auto: true,
        },
        usable: true,
        content_sha256: Some(sha.into()),
        ..ObservedBitmap::default()
    }];
    o
}

#[test]
fn valid_cases() {
    assert_eq!(judge(&valid_one(), &seen("aa")).kind, OutcomeKind::Pass);
    assert_eq!(judge(&valid_one(), &seen("ab")).kind, OutcomeKind::Mismatch);
    let mut refused = seen("aa");
    refused.bitmaps[0].usable = false;
    refused.bitmaps[0].content_sha256 = None;
    assert_eq!(judge(&valid_one(), &refused).kind, OutcomeKind::Strict);
    let mut e = valid_one();
    e.rules.push("bitmaps.dir.granularity".into());
    assert_eq!(judge(&e, &refused).kind, OutcomeKind::Pass);
    let closed = Observation::default();
    assert_eq!(judge(&valid_one(), &closed).kind, OutcomeKind::Strict);
    let mut hung = seen("aa");
    hung.timed_out = true;
    assert_eq!(judge(&valid_one(), &hung).kind, OutcomeKind::Hang);
    let mut crashed = seen("aa");
    crashed.signal = Some(11);
    assert_eq!(judge(&valid_one(), &crashed).kind, OutcomeKind::Crash);
}

#[test]
fn invalid_cases() {
    let e = invalid(
        &["bitmaps.dir.flags-reserved"],
        spec_model::ExtensionState::Consistent,
    );
    assert_eq!(judge(&e, &Observation::default()).kind, OutcomeKind::Pass);
    assert_eq!(judge(&e, &seen("aa")).kind, OutcomeKind::Lenient);
    let mut listed = seen("aa");
    listed.bitmaps[0].usable = false;
    listed.bitmaps[0].content_sha256 = None;
    listed.integrity = Some(IntegrityCheck {
        ran: true,
        corruptions: 2,
        ..IntegrityCheck::default()
    });
    let o = judge(&e, &listed);
    assert_eq!(o.kind, OutcomeKind::Pass);
    assert!(o.detail[0].contains("2 corruption"), "{o:?}");
    let mut u = e.clone();
    u.verdict = spec_model::Verdict::Unspecified;
    assert_eq!(judge(&u, &seen("aa")).kind, OutcomeKind::Recorded);
}

fn facts(incompatible: u64, extra: bool) -> ImageFacts {
    ImageFacts {
        version: 3,
        incompatible,
        header_length: 112,
        extra_data_compatible: extra,
        size: 1 << 20,
        ..ImageFacts::default()
    }
}

/// A judging context that knows only the image's facts.
fn with_facts(f: &ImageFacts) -> Context<'_> {
    Context {
        facts: Some(f),
        ..Context::default()
    }
}

/// A judging context that knows only the model's view of the bitmaps.
fn with_model(model: &[ModelBitmap]) -> Context<'_> {
    Context {
        model: Some(model),
        ..Context::default()
    }
}

fn refused(msg: &str) -> Observation {
    let mut o = Observation::default();
    o.error = Some(msg.into());
    o
}

/// (d) A refusal of an image whose incompatible bits the implementation
/// does not support is the refusal the spec requires: a pass naming them.
#[test]
fn refusing_unsupported_incompatible_features_passes() {
    let f = facts(1 << 4, false);
    let cx = Context {
        supported_incompatible: Some(0),
        ..with_facts(&f)
    };
    let mut e = valid_one();
    e.bitmaps = None;
    let o = judge_in(&e, &refused("Unrecognized incompatible feature(s) 4"), &cx);
    assert_eq!(o.kind, OutcomeKind::Pass, "{o:?}");
    assert!(
        o.detail[0].starts_with("refused: incompatible feature extended_l2 (bit 4), which it does not support; the spec requires that refusal"),
        "{o:?}"
    );
    assert_eq!(o.cause.check, Check::UnsupportedFeature);
    assert_eq!(o.cause.features, ["incompatible:extended_l2"]);
    // Unsupported bits unknown: the message naming "incompatible" decides.
    let f2 = facts(1, false);
    let cx2 = with_facts(&f2);
    let o = judge_in(
        &e,
        &refused("unsupported incompatible features flags: 0x00000001"),
        &cx2,
    );
    assert_eq!(o.kind, OutcomeKind::Pass, "{o:?}");
    assert!(o.detail[0].contains("dirty (bit 0)"), "{o:?}");
    // A supported bit refused, or any other refusal, stays strict.
    let all = Context {
        supported_incompatible: Some(0x1f),
        ..with_facts(&f)
    };
    let o = judge_in(&e, &refused("no"), &all);
    assert_eq!(o.kind, OutcomeKind::Strict, "{o:?}");
    let short_header = ImageFacts {
        header_length: 128,
        ..facts(0, false)
    };
    let lq = with_facts(&short_header);
    let o = judge_in(&e, &refused("unsupported header size"), &lq);
    assert_eq!(o.kind, OutcomeKind::Strict, "{o:?}");
    assert!(o.cause.features.is_empty(), "{o:?}");
}

/// (b) A refusal of a valid image with `extra_data_compatible` stays
/// strict and says which flag.
#[test]
fn refusing_compatible_extra_data_names_the_flag() {
    let f = facts(0, true);
    let cx = Context {
        supported_incompatible: Some(0x1f),
        ..with_facts(&f)
    };
    let o = judge_in(
        &valid_one(),
        &refused("Could not open '/tmp/x/case.qcow2': Bitmap extra data is not supported"),
        &cx,
    );
    assert_eq!(o.kind, OutcomeKind::Strict);
    assert!(
        o.detail[0].contains("extra_data_compatible, flag bit 2"),
        "{o:?}"
    );
    // One refusal of extra data, flag or not: one bucket.
    assert!(o.cause.features.is_empty(), "{o:?}");
    assert_eq!(
        o.signature(),
        "strict | open | - | Could not open '_': Bitmap extra data is not supported | open.conforming"
    );
    let plain = judge_in(
        &valid_one(),
        &refused("Could not open '/tmp/y/case.qcow2': Bitmap extra data is not supported"),
        &Context::default(),
    );
    assert_eq!(plain.key(), o.key());
}

/// QEMU's in-memory cap of 512 MiB per bitmap is a cause of its own: a
/// refusal of an image with a bitmap that large names the feature (the
/// same message for another constraint is another bucket).
#[test]
fn a_bitmap_over_512_mib_is_its_own_bucket() {
    let big = ImageFacts {
        bitmap_over_512mib: true,
        ..facts(0, false)
    };
    let cx = Context {
        supported_incompatible: Some(0x1f),
        ..with_facts(&big)
    };
    let msg = "Could not open '/tmp/x/c.qcow2': Bitmap 'b' doesn't satisfy the constraints";
    let o = judge_in(&valid_one(), &refused(msg), &cx);
    assert_eq!(o.kind, OutcomeKind::Strict, "{o:?}");
    assert_eq!(o.cause.features, ["bitmap-over-512MiB"]);
    assert!(o.detail[0].contains("512 MiB"), "{o:?}");
    let other = judge_in(&valid_one(), &refused(msg), &Context::default());
    assert_ne!(other.key(), o.key());
}

fn nul_named(used: bool) -> Observation {
    let mut o = seen("aa");
    o.bitmaps[0].name = "+".into();
    o.bitmaps[0].usable = used;
    o
}

/// (c) A bitmap listed under its name cut at the NUL byte is a name
/// mismatch, in the model-usability path and the manifest path.
#[test]
fn names_cut_at_nul_are_mismatches() {
    let e = invalid(&["l2.data-bounds"], spec_model::ExtensionState::Consistent);
    let model = vec![ModelBitmap {
        name: "+\0".to_owned(),
        usable: true,
        why_unusable: None,
    }];
    let cx = with_model(&model);
    let o = judge_in(&e, &nul_named(true), &cx);
    assert_eq!(o.kind, OutcomeKind::Mismatch, "{o:?}");
    assert!(
        o.detail[0]
            .starts_with(r#"listed "+" for the bitmap named "+\0": name cut at the NUL byte"#),
        "{o:?}"
    );
    assert_eq!(o.cause.check, Check::NameCut);
    // Still lenient when the model says the full-named bitmap is unusable,
    // and the cause names the model's reason.
    let model = vec![ModelBitmap {
        name: "+\0".to_owned(),
        usable: false,
        why_unusable: Some("bitmaps.data.bounds".to_owned()),
    }];
    let cx = with_model(&model);
    let o = judge_in(&e, &nul_named(true), &cx);
    assert_eq!(o.kind, OutcomeKind::Lenient, "{o:?}");
    assert_eq!(o.cause.check, Check::UsedUnusable);
    assert_eq!(o.cause.features, vec!["unusable:bitmaps.data.bounds"]);
    // Valid image: matched by the cut name, compared for the rest.
    let mut v = valid_one();
    v.bitmaps.as_mut().unwrap()[0].name = "+\0".into();
    let o = judge(&v, &nul_named(true));
    assert_eq!(o.kind, OutcomeKind::Mismatch, "{o:?}");
    assert_eq!(o.detail.len(), 1, "{o:?}");
    assert!(o.detail[0].contains("name cut at the NUL byte"), "{o:?}");
}

/// (a) A header field rewritten by the write is a mismatch of its own.
#[test]
fn header_rewrites_are_mismatches() {
    let mut o = seen("aa");
    o.write = Some(WriteCheck {
        written: true,
        rewrites: vec!["size 634346 -> 633856".into()],
        ..WriteCheck::default()
    });
    let out = judge(&valid_one(), &o);
    assert_eq!(out.kind, OutcomeKind::Mismatch, "{out:?}");
    assert!(out.detail[0].ends_with("size 634346 -> 633856"), "{out:?}");
    assert_eq!(out.cause.check, Check::HeaderRewrite);
}

/// (e) Signatures: the same cause with different numbers and paths is one
/// bucket; a different check or feature is another.
#[test]
fn signatures_bucket_by_cause() {
    let e = {
        let mut e = valid_one();
        e.bitmaps = None;
        e
    };
    let a = judge(
        &e,
        &refused("Could not open '/tmp/a/x.qcow2': Invalid L1 entry at 0x1200"),
    );
    let b = judge(
        &e,
        &refused("Could not open '/tmp/b/y.qcow2': Invalid L1 entry at 0x9a00"),
    );
    assert_eq!(a.key(), b.key());
    assert_eq!(
        a.cause.message,
        "Could not open '_': Invalid L1 entry at <hex>"
    );
    // An incompatible bit the implementation may not support is named;
    // one it supports is incidental and is not.
    let f = facts(1 << 1, false);
    let cx = with_facts(&f);
    let c = judge_in(
        &e,
        &refused("Could not open '/tmp/c/z.qcow2': Invalid L1 entry at 0x10"),
        &cx,
    );
    assert_ne!(a.key(), c.key());
    assert!(
        c.key()
            .starts_with("strict--open--open.conforming--incompatible_corrupt--"),
        "{}",
        c.key()
    );
    let all = Context {
        supported_incompatible: Some(0x1f),
        ..cx
    };
    let d = judge_in(
        &e,
        &refused("Could not open '/tmp/c/z.qcow2': Invalid L1 entry at 0x10"),
        &all,
    );
    assert_eq!(a.key(), d.key());
}

/// The model's reason a bitmap must not be used, read from corpus images:
/// the token each `used-unusable` cause names as `unusable:TOKEN`.
#[test]
fn model_reasons_for_unusable_bitmaps() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/images");
    let reasons = |file: &str| -> Vec<Option<String>> {
        let (_, bitmaps) = ImageFacts::read(&corpus.join(file)).expect("model reads it");
        bitmaps.into_iter().map(|b| b.why_unusable).collect()
    };
    let one = |file: &str| -> String {
        let r = reasons(file);
        assert!(!r.is_empty(), "{file}: no bitmaps");
        assert!(r.iter().all(|w| w == &r[0]), "{file}: {r:?}");
        r[0].clone().unwrap_or_else(|| panic!("{file}: usable"))
    };
    assert_eq!(
        one("bitmaps.autoclear-missing--bit-0-clear.qcow2"),
        "autoclear-clear"
    );
    assert_eq!(one("bitmaps.v2-image--downgraded.qcow2"), "v2-image");
    assert_eq!(
        one("bitmaps.data.bounds--past-eof.qcow2"),
        "bitmaps.data.bounds"
    );
    assert_eq!(
        one("refcount.overlap--bitmap-table-on-refcount-table.qcow2"),
        "refcount.overlap"
    );
    let in_use = reasons("valid--in-use.qcow2");
    assert!(in_use.contains(&Some("in_use".to_owned())), "{in_use:?}");
    assert!(
        in_use.contains(&None),
        "the other bitmap stays usable: {in_use:?}"
    );
}

/// A `used-unusable` cause names the reason, so two reasons are two
/// buckets: an `in_use` bitmap used on a valid image.
#[test]
fn used_unusable_cause_names_the_reason() {
    let mut e = valid_one();
    let b = &mut e.bitmaps.as_mut().unwrap()[0];
    b.flags.in_use = true;
    b.usable = false;
    b.content_sha256 = None;
    b.set_bits = None;
    let mut o = seen("aa");
    o.bitmaps[0].flags.in_use = true;
    let out = judge(&e, &o);
    assert_eq!(out.kind, OutcomeKind::Lenient, "{out:?}");
    assert_eq!(out.cause.check, Check::UsedUnusable);
    assert_eq!(out.cause.features, vec!["unusable:in_use"]);
    assert!(
        out.key()
            .starts_with("lenient--used-unusable--bitmaps.never-use-in-use--unusable_in_use"),
        "{}",
        out.key()
    );
}

// The rows of issue 20's table that the judge decides alone, each with
// the obligation it names.

use conform::runner::checks::CheckFindings;
use conform::runner::judge::outcome::{ObligationState, Outcome};
use conform::runner::observation::GuestCheck;
use spec_model::obligations::Kind;

/// The state of obligation `id` in the outcome `o` (it must bind).
fn obligation<'a>(o: &'a Outcome, id: &str) -> &'a ObligationState {
    o.obligations
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} does not bind: {o:?}"))
}

const UNAWARE_READER: Kind = Kind {
    writer: false,
    bitmaps_aware: false,
    holds_key: None,
};

fn guest_read(ranges: usize) -> GuestCheck {
    GuestCheck {
        size_header: Some(1 << 20),
        size_reported: Some(1 << 20),
        ranges,
        ranges_compared: ranges,
        bytes_compared: 512 * ranges as u64,
        ..GuestCheck::default()
    }
}

fn unaware_opened() -> Observation {
    let mut o = Observation::default();
    o.opened = true;
    o.bitmaps_unaware = true;
    o.guest = Some(guest_read(4));
    o
}

/// A bitmaps-unaware reader refusing a conforming image whose only
/// unusual feature is a bitmaps limit (granularity outside 9-31, a name
/// over 1023 bytes) is strict: a limit on bitmaps excuses only an
/// implementation that reads bitmaps. The same refusal by one that does is
/// a pass.
#[test]
fn bitmap_limits_excuse_only_bitmaps_aware_readers() {
    for rule in ["bitmaps.dir.granularity", "bitmaps.dir.name-limit"] {
        let mut e = valid_one();
        e.rules = vec![rule.to_owned()];
        e.bitmaps = None;
        let f = facts(0, false);
        let unaware = Context {
            kind: Some(UNAWARE_READER),
            ..with_facts(&f)
        };
        let mut obs = refused("bitmap granularity not supported");
        obs.bitmaps_unaware = true;
        let o = judge_in(&e, &obs, &unaware);
        assert_eq!(o.kind, OutcomeKind::Strict, "{rule}: {o:?}");
        assert_eq!(o.cause.obligation, "open.conforming", "{o:?}");
        assert!(o.detail[0].contains("excuse nothing"), "{o:?}");
        let aware = Context {
            kind: Some(Kind {
                bitmaps_aware: true,
                ..UNAWARE_READER
            }),
            ..unaware
        };
        obs.bitmaps_unaware = false;
        let o = judge_in(&e, &obs, &aware);
        assert_eq!(o.kind, OutcomeKind::Pass, "{rule}: {o:?}");
    }
}

/// Opening an image with an incompatible bit the reader does not support
/// is lenient and names `open.unknown-incompatible`, whatever the verdict
/// (the qcow crate on extended L2; a reader on a reserved bit).
#[test]
fn opening_an_unsupported_incompatible_bit_is_lenient() {
    let f = facts(1 << 4, false);
    let cx = Context {
        supported_incompatible: Some(0b1001),
        kind: Some(UNAWARE_READER),
        ..with_facts(&f)
    };
    let mut e = valid_one();
    e.bitmaps = None;
    let o = judge_in(&e, &unaware_opened(), &cx);
    assert_eq!(o.kind, OutcomeKind::Lenient, "{o:?}");
    assert_eq!(o.cause.check, Check::OpenedUnsupported);
    assert_eq!(o.cause.obligation, "open.unknown-incompatible");
    assert_eq!(o.cause.features, ["incompatible:extended_l2"]);
    // A reserved bit, support unknown (an exec `read` program), invalid.
    let reserved = facts(1 << 20, false);
    let cx = Context {
        kind: Some(UNAWARE_READER),
        ..with_facts(&reserved)
    };
    let inv = invalid(
        &["header.incompatible-bits"],
        spec_model::ExtensionState::Absent,
    );
    let o = judge_in(&inv, &unaware_opened(), &cx);
    assert_eq!(o.kind, OutcomeKind::Lenient, "{o:?}");
    assert_eq!(o.cause.obligation, "open.unknown-incompatible");
    // A reader that never writes understands the dirty and corrupt bits.
    let dirty = facts(0b11, false);
    let cx = Context {
        supported_incompatible: Some(0),
        kind: Some(UNAWARE_READER),
        ..with_facts(&dirty)
    };
    assert_eq!(judge_in(&e, &unaware_opened(), &cx).kind, OutcomeKind::Pass);
}

fn luks() -> ImageFacts {
    ImageFacts {
        crypt_method: 2,
        size: 1 << 20,
        ..facts(0, false)
    }
}

/// An encrypted image without the key: a clean refusal meets
/// `crypt.refuse-without-key` (the qcow2 crate), returning the payload
/// breaks it (libqcow hands out ciphertext).
#[test]
fn encrypted_images_without_the_key() {
    let f = luks();
    let keyless = Context {
        kind: Some(Kind {
            holds_key: Some(false),
            ..UNAWARE_READER
        }),
        ..with_facts(&f)
    };
    let mut e = valid_one();
    e.bitmaps = None;
    e.bitmaps_extension = spec_model::ExtensionState::Absent;
    let mut obs = refused("encryption not supported");
    obs.bitmaps_unaware = true;
    let o = judge_in(&e, &obs, &keyless);
    assert_eq!(o.kind, OutcomeKind::Pass, "{o:?}");
    assert_eq!(o.cause.obligation, "crypt.refuse-without-key");
    let mut read = unaware_opened();
    read.guest.as_mut().unwrap().ranges_compared = 0;
    let o = judge_in(&e, &read, &keyless);
    assert_eq!(o.kind, OutcomeKind::Lenient, "{o:?}");
    assert_eq!(o.cause.check, Check::Encrypted);
    assert_eq!(o.cause.obligation, "crypt.refuse-without-key");
    // With the key the refusal is an ordinary refusal of a valid image.
    let with_key = Context {
        kind: Some(Kind {
            holds_key: Some(true),
            ..UNAWARE_READER
        }),
        ..keyless
    };
    assert_eq!(judge_in(&e, &obs, &with_key).kind, OutcomeKind::Strict);
}

/// With the key: a cluster the implementation returned as stored (the
/// ciphertext) breaks `crypt.decrypt-on-read`; clusters that came back
/// otherwise meet it, and the obligation counts as exercised.
#[test]
fn encrypted_images_with_the_key() {
    let f = luks();
    let cx = Context {
        kind: Some(Kind {
            writer: true,
            bitmaps_aware: true,
            holds_key: Some(true),
        }),
        ..with_facts(&f)
    };
    let mut e = valid_one();
    e.bitmaps = Some(Vec::new());
    let mut obs = Observation::default();
    obs.opened = true;
    obs.virtual_size = Some(1 << 20);
    let mut g = GuestCheck::default();
    g.read_compared(false, 512, None);
    obs.guest = Some(g.clone());
    let o = judge_in(&e, &obs, &cx);
    assert_eq!(o.kind, OutcomeKind::Pass, "{o:?}");
    let state = obligation(&o, "crypt.decrypt-on-read");
    assert!(state.exercised, "{o:?}");
    g.read_compared(
        false,
        512,
        Some("returned the stored ciphertext at guest offset 0x0".into()),
    );
    obs.guest = Some(g);
    let o = judge_in(&e, &obs, &cx);
    assert_eq!(o.kind, OutcomeKind::Mismatch, "{o:?}");
    assert_eq!(o.cause.obligation, "crypt.decrypt-on-read");
}

/// A difference past the end of a shorter backing file names
/// `guest.short-backing-zeros`; one elsewhere `guest.read-as-mapped`.
#[test]
fn differences_past_a_short_backing_file_name_their_obligation() {
    let f = ImageFacts {
        backing_end: Some(512 << 10),
        ..facts(0, false)
    };
    let cx = Context {
        kind: Some(UNAWARE_READER),
        ..with_facts(&f)
    };
    let mut e = valid_one();
    e.bitmaps = None;
    e.bitmaps_extension = spec_model::ExtensionState::Absent;
    let mut obs = unaware_opened();
    let g = obs.guest.as_mut().unwrap();
    g.read_compared(true, 4096, Some("guest data at 0x80000 differs".into()));
    let o = judge_in(&e, &obs, &cx);
    assert_eq!(o.kind, OutcomeKind::Mismatch, "{o:?}");
    assert_eq!(o.cause.obligation, "guest.short-backing-zeros");
    let state = obligation(&o, "guest.short-backing-zeros");
    assert!(state.exercised, "{o:?}");
    let mut obs = unaware_opened();
    let g = obs.guest.as_mut().unwrap();
    g.read_compared(false, 4096, Some("guest data at 0x0 differs".into()));
    let o = judge_in(&e, &obs, &cx);
    assert_eq!(o.cause.obligation, "guest.read-as-mapped");
}

/// A disk presented with another size than the header's is a mismatch of
/// `guest.virtual-size`, read-only: QEMU's `qemu-img info` size and a
/// crate's reported size are judged by the same obligation.
#[test]
fn virtual_size_is_one_obligation_for_everyone() {
    let f = ImageFacts {
        size: 720,
        ..facts(0, false)
    };
    let cx = with_facts(&f);
    let mut e = valid_one();
    e.bitmaps = None;
    e.bitmaps_extension = spec_model::ExtensionState::Absent;
    let mut qemu = Observation::default();
    qemu.opened = true;
    qemu.virtual_size = Some(512);
    let o = judge_in(&e, &qemu, &cx);
    assert_eq!(o.kind, OutcomeKind::Mismatch, "{o:?}");
    assert_eq!(o.cause.check, Check::VirtualSize);
    assert_eq!(o.cause.obligation, "guest.virtual-size");
    assert!(o.detail[0].contains("the last 208 bytes"), "{o:?}");
    let mut crate_obs = unaware_opened();
    let g = crate_obs.guest.as_mut().unwrap();
    g.size_header = Some(720);
    g.size_reported = Some(512);
    let o = judge_in(&e, &crate_obs, &cx);
    assert_eq!(o.kind, OutcomeKind::Mismatch, "{o:?}");
    assert_eq!(o.cause.check, Check::VirtualSize);
    assert_eq!(o.cause.obligation, "guest.virtual-size");
    // The same size: a pass.
    let mut same = qemu.clone();
    same.virtual_size = Some(720);
    assert_eq!(judge_in(&e, &same, &cx).kind, OutcomeKind::Pass);
}

/// A bitmap listed under its name cut at the NUL byte is the same
/// mismatch whether the image is otherwise silent-about (`unspecified`:
/// a NUL in a name) or also breaks an unrelated rule (`invalid`).
#[test]
fn a_name_cut_at_nul_is_one_outcome_whatever_the_verdict() {
    let model = vec![ModelBitmap {
        name: "b0-14\0 2".to_owned(),
        usable: true,
        why_unusable: None,
    }];
    let cx = with_model(&model);
    let mut obs = seen("aa");
    obs.bitmaps[0].name = "b0-14".into();
    let silent = Expected {
        verdict: spec_model::Verdict::Unspecified,
        rules: vec!["bitmaps.dir.name-bytes".into()],
        bitmaps_extension: spec_model::ExtensionState::Consistent,
        bitmaps: None,
    };
    let invalid = invalid(
        &["bitmaps.dir.name-bytes", "refcount.unallocated"],
        spec_model::ExtensionState::Consistent,
    );
    let a = judge_in(&silent, &obs, &cx);
    let b = judge_in(&invalid, &obs, &cx);
    assert_eq!(a.kind, OutcomeKind::Mismatch, "{a:?}");
    assert_eq!(a.key(), b.key(), "{a:?} {b:?}");
    assert_eq!(a.cause.obligation, "bitmaps.list-as-stored");
    // Without a cut name the silent image is recorded, its cause naming the
    // rule the spec is silent on.
    obs.bitmaps[0].name = "b0-14\0 2".into();
    let r = judge_in(&silent, &obs, &cx);
    assert_eq!(r.kind, OutcomeKind::Recorded, "{r:?}");
    assert_eq!(r.cause.features, ["unspecified:bitmaps.dir.name-bytes"]);
}

/// Refcount 0 on a bitmap's directory, table or data cluster: the bitmap
/// is unusable in all three, so using it is lenient in all three, with
/// the spec's sentence.
#[test]
fn refcount_zero_under_a_bitmap_is_graded_alike() {
    let e = invalid(
        &["refcount.unallocated"],
        spec_model::ExtensionState::Consistent,
    );
    for why in [
        "refcount.unallocated",
        "bitmaps.table.bounds",
        "bitmaps.data.bounds",
    ] {
        let model = vec![ModelBitmap {
            name: "b".to_owned(),
            usable: false,
            why_unusable: Some(why.to_owned()),
        }];
        let cx = with_model(&model);
        let o = judge_in(&e, &seen("aa"), &cx);
        assert_eq!(o.kind, OutcomeKind::Lenient, "{why}: {o:?}");
        assert_eq!(o.cause.obligation, "bitmaps.never-use-invalid");
        assert!(
            o.detail[0].contains("a refcount of 0 means the cluster is free"),
            "{o:?}"
        );
    }
}

/// A problem of the write check names the obligation it breaks.
#[test]
fn write_problems_name_their_obligation() {
    for (problem, obligation) in [
        (
            "autoclear bit(s) 2 still set after the write: ...",
            "write.clear-unknown-autoclear",
        ),
        (
            "bitmap \"b\": dirty ranges [] after the write, expected [1..2]",
            "bitmaps.mark-written",
        ),
        (
            "the image no longer conforms after the write: refcount.overlap",
            "write.leaves-valid",
        ),
    ] {
        let mut o = unaware_opened();
        o.write = Some(WriteCheck {
            written: true,
            found: CheckFindings {
                problems: vec![problem.to_owned()],
                ..CheckFindings::default()
            },
            ..WriteCheck::default()
        });
        let out = judge(&valid_one(), &o);
        assert_eq!(out.kind, OutcomeKind::Corrupting, "{out:?}");
        assert_eq!(out.cause.obligation, obligation, "{out:?}");
    }
}

/// Every obligation binding the kind is listed; one the case cannot
/// observe is "not exercised" with why, never a pass.
#[test]
fn obligations_not_exercised_are_listed_as_such() {
    let f = facts(0, false);
    let cx = Context {
        kind: Some(Kind {
            writer: true,
            ..UNAWARE_READER
        }),
        ..with_facts(&f)
    };
    let o = judge_in(&valid_one(), &unaware_opened(), &cx);
    let ids: Vec<&str> = o.obligations.iter().map(|s| s.id).collect();
    assert!(ids.contains(&"write.clear-unknown-autoclear"), "{ids:?}");
    assert!(!ids.contains(&"bitmaps.never-use-in-use"), "{ids:?}");
    let keep = obligation(&o, "keep.unknown-as-is");
    assert!(!keep.exercised && !keep.why_not.is_empty(), "{keep:?}");
    let read = obligation(&o, "guest.read-as-mapped");
    assert!(read.exercised, "{read:?}");
    let json = serde_json::to_value(&o).unwrap();
    assert!(json["obligations"].as_array().unwrap().len() == ids.len());
}
