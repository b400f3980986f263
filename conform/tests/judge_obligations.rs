//! The rows of issue 20's table that need real implementations, each run
//! through `qcow2-conform run` and graded by the obligation it breaks or
//! meets: qcow2-rs writing and leaving auto-clear bits it does not know
//! (bit 0 over disabled, `in_use` or already-covering `auto` bitmaps; bit
//! 2), the `qcow` crate opening an extended-L2 image, a pure-Python `read`
//! program ignoring incompatible bits or refusing bitmaps limits it does not
//! read, libqcow and the `qcow2` crate on a LUKS image without the key,
//! QEMU presenting a 720-byte disk, QEMU using a bitmap over a cluster
//! with refcount 0 (directory, table, data), and a name cut at its NUL byte
//! with and without an unrelated refcount error. Images are made by the
//! real qemu-img and qemu-io and edited byte by byte; a missing tool or
//! library fails the test.

#[path = "common/cli.rs"]
mod cli;

use cli::run_report;
use generator::{Expected, Manifest, ManifestCase};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

use cli::{qemu_img_create as create, qemu_io as io};

fn bitmap(path: &Path, extra: &[&str], name: &str) {
    let mut a = vec!["bitmap", "--add"];
    a.extend(extra);
    a.extend([path.to_str().unwrap(), name]);
    cli::run_ok(Command::new("qemu-img").args(&a));
}

/// A 1 MiB image `dir/FILE` (64 KiB clusters) with one enabled bitmap
/// `name` of 64 KiB granules.
fn with_bitmap(dir: &Path, file: &str, name: &str) -> PathBuf {
    let path = dir.join(file);
    create(&path, "cluster_size=65536", "1M");
    bitmap(&path, &["-g", "65536"], name);
    path
}

fn analysis(path: &Path) -> spec_model::Analysis {
    let m = spec_model::Model::open(std::io::Cursor::new(std::fs::read(path).unwrap())).unwrap();
    m.analysis().clone()
}

/// Sets the 16-bit refcount of the cluster at file offset `at` to 0.
fn zero_refcount(path: &Path, at: u64) {
    let a = analysis(path);
    let h = a.header.unwrap();
    assert_eq!(h.refcount_order, 4, "16-bit refcounts expected");
    let cs = h.cluster_size();
    let per_block = cs / 2;
    let idx = at / cs;
    let mut bytes = std::fs::read(path).unwrap();
    let rt = (h.refcount_table_offset + 8 * (idx / per_block)) as usize;
    let block = u64::from_be_bytes(bytes[rt..rt + 8].try_into().unwrap()) & !(cs - 1);
    assert_ne!(block, 0, "no refcount block for cluster {idx}");
    let e = (block + 2 * (idx % per_block)) as usize;
    bytes[e..e + 2].copy_from_slice(&[0, 0]);
    std::fs::write(path, bytes).unwrap();
}

/// A corpus under `dir` of `images` (case ID, file), each expected as the
/// model reads it.
fn corpus(dir: &Path, images: &[(&str, PathBuf)]) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(corpus.join("images")).unwrap();
    let mut cases = Vec::new();
    for (id, path) in images {
        let file = format!("images/{}.qcow2", id.replace('/', "--"));
        std::fs::copy(path, corpus.join(&file)).unwrap();
        let expected = Expected::from_report(&spec_model::check_path(path).expect("model"));
        cases.push(ManifestCase {
            id: (*id).to_owned(),
            file,
            expected,
            description: (*id).to_owned(),
            companions: Vec::new(),
            secret: None,
        });
    }
    std::fs::write(corpus.join("manifest.json"), Manifest::new(cases).to_json()).unwrap();
    corpus
}

/// Each case's outcome under `imp`: (kind, cause check, obligation, key).
fn outcomes(corpus: &Path, imp: &str, extra: &[&str]) -> Vec<(String, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut args = vec!["--impl", imp, "--fail-on", "none", "--jobs", "2"];
    args.extend(extra);
    let r = run_report(corpus, &json, &args);
    r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["results"][0]["outcome"].clone(),
            )
        })
        .collect()
}

fn get<'a>(all: &'a [(String, Value)], id: &str) -> &'a Value {
    &all.iter()
        .find(|(i, _)| i == id)
        .unwrap_or_else(|| panic!("no case {id}"))
        .1
}

/// The outcome of `imp` (run with `extra`) on a corpus in `dir` holding
/// only `img`, as case `id`.
fn sole_outcome(dir: &Path, id: &str, img: PathBuf, imp: &str, extra: &[&str]) -> Value {
    let c = corpus(dir, &[(id, img)]);
    get(&outcomes(&c, imp, extra), id).clone()
}

fn assert_outcome(all: &[(String, Value)], id: &str, kind: &str, obligation: &str) {
    let o = get(all, id);
    assert_eq!(o["kind"], kind, "{id}: {o:#}");
    assert_eq!(o["cause"]["obligation"], obligation, "{id}: {o:#}");
}

/// qcow2-rs (bitmaps-unaware, writes) leaving autoclear bit 0 set over
/// bitmaps it did not have to change, and leaving bit 2; corrupting the
/// refcounts of a `refcount_bits=4` image without bitmaps (the write check
/// runs on every image). QEMU clears bit 2.
#[test]
fn writers_must_clear_the_autoclear_bits_they_do_not_know() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    let opts = "cluster_size=65536";
    let disabled = p("disabled.qcow2");
    create(&disabled, opts, "1M");
    io(&disabled, &["write -P 1 0 1M"]);
    bitmap(&disabled, &["--disable", "-g", "65536"], "b0");
    let in_use = p("in-use.qcow2");
    create(&in_use, opts, "1M");
    io(&in_use, &["write -P 1 0 1M"]);
    bitmap(&in_use, &["-g", "65536"], "b0");
    let a = analysis(&in_use);
    let mut bytes = std::fs::read(&in_use).unwrap();
    bytes[a.entries[0].offset as usize + 15] |= 1; // flags bit 0: in_use
    std::fs::write(&in_use, bytes).unwrap();
    // The runner writes 70000 bytes at 350184 into a 1 MiB disk: granules
    // 5 and 6 of 64 KiB, already set here.
    let covered = with_bitmap(t.path(), "covered.qcow2", "b0");
    io(&covered, &["write -P 2 350184 70000"]);
    let bit2 = p("bit2.qcow2");
    create(&bit2, opts, "1M");
    io(&bit2, &["write -P 1 0 64k"]);
    let mut bytes = std::fs::read(&bit2).unwrap();
    bytes[95] |= 1 << 2; // autoclear_features bit 2
    std::fs::write(&bit2, bytes).unwrap();
    // Sub-byte refcounts and no bitmaps extension at all: the write check
    // runs here too.
    let rc4 = p("refcount-4.qcow2");
    create(&rc4, "cluster_size=65536,refcount_bits=4", "1M");
    io(&rc4, &["write -P 1 0 64k"]);
    let c = corpus(
        t.path(),
        &[
            ("only-disabled", disabled),
            ("only-in-use", in_use),
            ("auto-covering", covered),
            ("autoclear-bit-2", bit2),
            ("refcount-bits-4", rc4),
        ],
    );
    let rs = outcomes(&c, "qcow2-rs", &[]);
    for id in [
        "only-disabled",
        "only-in-use",
        "auto-covering",
        "autoclear-bit-2",
    ] {
        assert_outcome(&rs, id, "corrupting", "write.clear-unknown-autoclear");
    }
    assert_outcome(&rs, "refcount-bits-4", "corrupting", "write.leaves-valid");
    let o = get(&rs, "autoclear-bit-2");
    assert!(
        o["detail"]
            .to_string()
            .contains("autoclear bit(s) 2 still set"),
        "{o:#}"
    );
    let q = outcomes(&c, "qemu", &["--case", "autoclear-bit-2"]);
    let o = get(&q, "autoclear-bit-2");
    assert_ne!(o["kind"], "corrupting", "QEMU clears bit 2: {o:#}");
}

/// The qcow crate opens an image with extended L2 entries (incompatible
/// bit 4, which it does not support) and reads data past guest cluster 0:
/// lenient, by `open.unknown-incompatible`, not a guest-data mismatch.
#[test]
fn opening_an_unsupported_incompatible_bit_is_lenient() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("el2.qcow2");
    create(&img, "cluster_size=65536,extended_l2=on", "1M");
    io(&img, &["write -P 7 64k 64k", "write -P 8 300k 4k"]);
    let o = &sole_outcome(
        t.path(),
        "valid/extended-l2-data",
        img,
        "qcow",
        &["--read-only"],
    );
    assert_eq!(o["kind"], "lenient", "{o:#}");
    assert_eq!(o["cause"]["check"], "opened-unsupported", "{o:#}");
    assert_eq!(o["cause"]["obligation"], "open.unknown-incompatible");
    assert_eq!(o["cause"]["features"][0], "incompatible:extended_l2");
}

use cli::py_program;

/// A pure-Python `read` program: `accept` opens anything (ignoring the
/// incompatible bits) and answers zeros; `refuse` refuses every image.
const READER: &str = r#"
if verb == "capabilities":
    reply({"capabilities": ["read"], "name": "py-reader-" + mode})
image = sys.argv[3]
if mode == "refuse":
    reply({"opened": False, "error": "bitmap granularity not supported"})
with open(image, "rb") as f:
    size = struct.unpack(">Q", f.read(32)[24:32])[0]
ranges = []
for a in sys.argv[4:]:
    off, ln = (int(x) for x in a.split(":"))
    ranges.append({"offset": off, "length": ln, "sha256": hashlib.sha256(bytes(ln)).hexdigest()})
reply({"opened": True, "error": None, "size": size, "ranges": ranges})
"#;

fn shared_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

#[test]
fn a_bitmaps_unaware_reader_is_held_to_open_obligations() {
    let t = tempfile::tempdir().unwrap();
    let accept = py_program(t.path(), "reader.py", READER, "accept");
    let all = outcomes(
        &shared_corpus(),
        &accept,
        &[
            "--read-only",
            "--case",
            "header.incompatible-bits/reserved-bit",
        ],
    );
    assert_outcome(
        &all,
        "header.incompatible-bits/reserved-bit",
        "lenient",
        "open.unknown-incompatible",
    );
    let refuse = py_program(t.path(), "reader.py", READER, "refuse");
    let limits = [
        "valid/granularity-0",
        "valid/granularity-63",
        "bitmaps.dir.granularity/8",
        "bitmaps.dir.granularity/32-63",
        "bitmaps.dir.name-limit/1024",
    ];
    let mut args = vec!["--read-only"];
    for id in limits {
        args.extend(["--case", id]);
    }
    let all = outcomes(&shared_corpus(), &refuse, &args);
    assert_eq!(all.len(), limits.len(), "{all:?}");
    for id in limits {
        assert_outcome(&all, id, "strict", "open.conforming");
    }
}

/// `qemu/luks` without the key: libqcow opens it and hands out ciphertext
/// (lenient), the qcow2 crate refuses it cleanly (pass), both by
/// `crypt.refuse-without-key`.
#[test]
fn encrypted_images_without_the_key() {
    let id = "qemu/luks";
    let l = outcomes(&shared_corpus(), "libqcow", &["--read-only", "--case", id]);
    assert_outcome(&l, id, "lenient", "crypt.refuse-without-key");
    let q = outcomes(&shared_corpus(), "qcow2", &["--read-only", "--case", id]);
    assert_outcome(&q, id, "pass", "crypt.refuse-without-key");
}

/// A 720-byte disk: QEMU presents 512 bytes (read-only already), a
/// mismatch of `guest.virtual-size`; a crate is judged by the same
/// obligation.
#[test]
fn the_virtual_size_is_the_header_size() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("720.qcow2");
    create(&img, "cluster_size=65536", "64k");
    io(&img, &["write -P 3 0 64k"]);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[24..32].copy_from_slice(&720u64.to_be_bytes());
    std::fs::write(&img, bytes).unwrap();
    let c = corpus(t.path(), &[("valid/size-720", img)]);
    let q = outcomes(&c, "qemu", &["--read-only"]);
    let o = get(&q, "valid/size-720");
    assert_eq!(o["kind"], "mismatch", "{o:#}");
    assert_eq!(o["cause"]["check"], "virtual-size", "{o:#}");
    assert_eq!(o["cause"]["obligation"], "guest.virtual-size");
    assert!(
        o["detail"][0].as_str().unwrap().contains("512 bytes"),
        "{o:#}"
    );
    for imp in ["imago", "qcow2-rs"] {
        let r = outcomes(&c, imp, &["--read-only"]);
        let o = get(&r, "valid/size-720");
        if o["kind"] != "pass" {
            assert_eq!(
                o["cause"]["obligation"], "guest.virtual-size",
                "{imp}: {o:#}"
            );
        }
    }
}

/// A bitmap with data, and one copy each with refcount 0 on its directory
/// cluster, its table cluster and its data cluster: QEMU uses the bitmap
/// in all three, lenient in all three, with the refcount sentence.
#[test]
fn refcount_zero_under_a_bitmap_is_graded_alike() {
    let t = tempfile::tempdir().unwrap();
    let base = with_bitmap(t.path(), "base.qcow2", "b0");
    io(&base, &["write -P 1 0 200k"]);
    // Store the bits: qemu-io closes cleanly, so the table has a data cluster.
    let a = analysis(&base);
    let dir = a.bitmaps_ext.as_ref().unwrap().bitmap_directory_offset;
    let table = a.entries[0].bitmap_table_offset;
    let data = a.entries[0].table.as_ref().unwrap()[0] & 0x00ff_ffff_ffff_fe00;
    assert_ne!(data, 0, "the bitmap has a data cluster");
    let mut cases = Vec::new();
    for (id, at) in [
        ("refcount-0/directory", dir),
        ("refcount-0/table", table),
        ("refcount-0/data", data),
    ] {
        let img = t.path().join(id.replace('/', "-") + ".qcow2");
        std::fs::copy(&base, &img).unwrap();
        zero_refcount(&img, at);
        cases.push((id, img));
    }
    let c = corpus(t.path(), &cases);
    let q = outcomes(&c, "qemu", &["--read-only"]);
    for (id, _) in &cases {
        let o = get(&q, id);
        assert_eq!(o["kind"], "lenient", "{id}: {o:#}");
        assert_eq!(o["cause"]["obligation"], "bitmaps.never-use-invalid");
        assert!(
            o["detail"][0]
                .as_str()
                .unwrap()
                .contains("a refcount of 0 means the cluster is free"),
            "{id}: {o:#}"
        );
    }
}

/// A bitmap named `b0-14\0 2`, which QEMU lists as `b0-14`: the same
/// mismatch with and without an unrelated refcount error in the header
/// cluster.
#[test]
fn a_name_cut_at_nul_is_one_outcome_whatever_else_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let plain = with_bitmap(t.path(), "nul.qcow2", "b0-14Z 2");
    let a = analysis(&plain);
    let e = &a.entries[0];
    let name_at = e.offset as usize + 24 + e.extra_data_size as usize;
    let mut bytes = std::fs::read(&plain).unwrap();
    assert_eq!(&bytes[name_at..name_at + 8], b"b0-14Z 2");
    bytes[name_at + 5] = 0;
    std::fs::write(&plain, bytes).unwrap();
    let broken = t.path().join("nul-refcount.qcow2");
    std::fs::copy(&plain, &broken).unwrap();
    zero_refcount(&broken, 0);
    let c = corpus(
        t.path(),
        &[
            ("name-nul/plain", plain),
            ("name-nul/header-refcount-0", broken),
        ],
    );
    let q = outcomes(&c, "qemu", &["--read-only"]);
    let a = get(&q, "name-nul/plain");
    let b = get(&q, "name-nul/header-refcount-0");
    assert_eq!(a["kind"], "mismatch", "{a:#}");
    assert_eq!(a["cause"]["check"], "name-cut", "{a:#}");
    assert_eq!(a["cause"]["obligation"], "bitmaps.list-as-stored");
    assert_eq!(a["kind"], b["kind"], "{b:#}");
    assert_eq!(a["cause"], b["cause"], "{a:#} {b:#}");
}

/// A 200,100-byte disk with bit 390 (bytes 199,680..200,192 at 512-byte
/// granularity) set: QEMU's read-write open rounds the size down to
/// 199,680, so the bit becomes a tail bit. The write check names the
/// rewritten size in its problem: a bucket of its own, apart from QEMU's
/// all-ones tail-bit defect.
#[test]
fn a_size_rounded_on_write_is_its_own_cause() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("200100.qcow2");
    create(&img, "cluster_size=65536", "200192");
    bitmap(&img, &["-g", "512"], "b0");
    io(&img, &["write -P 1 199700 100"]);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[24..32].copy_from_slice(&200_100u64.to_be_bytes());
    std::fs::write(&img, bytes).unwrap();
    let o = &sole_outcome(t.path(), "valid/size-200100", img, "qemu", &[]);
    assert_eq!(o["kind"], "corrupting", "{o:#}");
    assert_eq!(o["cause"]["obligation"], "write.leaves-valid", "{o:#}");
    let msg = o["cause"]["message"].as_str().unwrap();
    assert!(msg.contains("bitmaps.data.tail-bits"), "{o:#}");
    assert!(msg.contains("size was rewritten"), "{o:#}");
}

/// `qcow2-conform obligations --json` lists the whole catalogue, each
/// entry with its section, sentence and binding.
#[test]
fn the_obligations_command_lists_the_catalogue() {
    let out = Command::new(cli::BIN)
        .args(["obligations", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = spec_model::Obligation::ALL.iter().map(|o| o.id()).collect();
    assert_eq!(ids, want);
    for o in v.as_array().unwrap() {
        assert!(!o["section"].as_str().unwrap().is_empty(), "{o}");
        assert!(!o["sentence"].as_str().unwrap().is_empty(), "{o}");
        assert!(o["binds"]["role"].is_string(), "{o}");
    }
    let text = Command::new(cli::BIN).arg("obligations").output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("write.clear-unknown-autoclear"), "{text}");
    assert!(text.contains("[stricter than the spec]"), "{text}");
}

/// A bitmaps-unaware `read` and `write` program built on QEMU's tools: it
/// reads the guest disk with `qemu-img convert` to raw in its scratch
/// directory, and writes with `qemu-io`, then clears autoclear bit 0 as an
/// unaware writer must. In mode `stop-at-backing` it fails every range
/// past the first 512 KiB, as a reader does that stops where
/// `qemu/backing-short`'s backing file ends; in mode `drop-unknown` its
/// write also renames the unknown header extension 0x7a3c51e0 (so the one
/// the image had is gone).
const QEMU_BASED: &str = r#"
if verb == "capabilities":
    reply({"capabilities": ["read", "write"], "name": "py-qemu-based-" + mode})
image = sys.argv[3]
if verb == "write":
    off, ln = int(sys.argv[4]), int(sys.argv[5])
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a %d %d" % (off, ln), image],
                   check=True, capture_output=True)
    with open(image, "r+b") as f:
        f.seek(88)
        autoclear = struct.unpack(">Q", f.read(8))[0]
        f.seek(88)
        f.write(struct.pack(">Q", autoclear & ~1))
        if mode == "drop-unknown":
            f.seek(0)
            at = f.read(4096).find(struct.pack(">I", 0x7a3c51e0))
            if at >= 0:
                f.seek(at)
                f.write(struct.pack(">I", 0x7a3c51e1))
    reply({"ok": True, "error": None})
raw = os.path.join(os.path.dirname(os.path.abspath(image)), "guest.raw")
subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw], check=True)
data = open(raw, "rb").read()
ranges = []
for a in sys.argv[4:]:
    off, ln = (int(x) for x in a.split(":"))
    if mode == "stop-at-backing" and off + ln > 512 * 1024:
        ranges.append({"offset": off, "length": ln, "error": "past the end of the backing file"})
    else:
        ranges.append({"offset": off, "length": ln, "sha256": hashlib.sha256(data[off:off + ln]).hexdigest()})
reply({"opened": True, "error": None, "size": len(data), "ranges": ranges})
"#;

/// The exercised state of `obligation` in outcome `o`.
fn exercised(o: &Value, obligation: &str) -> bool {
    let state = o["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == obligation)
        .unwrap_or_else(|| panic!("{obligation} does not bind: {o:#}"));
    state["exercised"] == true
}

/// `QEMU_BASED` in `mode`, as an `--impl`.
fn qemu_based(dir: &Path, mode: &str) -> String {
    py_program(dir, "qemu_based.py", QEMU_BASED, mode)
}

/// `guest.short-backing-zeros` on `qemu/backing-short` (a 1 MiB overlay
/// of a 512 KiB backing file): a reader that reads zeros past the
/// backing file's end meets it (exercised); one that fails there breaks
/// it, and the outcome names it rather than `guest.read-as-mapped`.
#[test]
fn reads_past_a_short_backing_file_are_zeros() {
    let t = tempfile::tempdir().unwrap();
    let id = "qemu/backing-short";
    let args = ["--read-only", "--case", id];
    let good = outcomes(&shared_corpus(), &qemu_based(t.path(), "whole"), &args);
    let o = get(&good, id);
    assert_eq!(o["kind"], "pass", "{o:#}");
    assert!(exercised(o, "guest.short-backing-zeros"), "{o:#}");
    let bad = outcomes(
        &shared_corpus(),
        &qemu_based(t.path(), "stop-at-backing"),
        &args,
    );
    assert_outcome(&bad, id, "strict", "guest.short-backing-zeros");
}

/// Writers and what they must keep: QEMU keeps an unknown header
/// extension and writes no plaintext into `qemu/luks` with its key (both
/// obligations exercised, not merely not broken); a writer that drops
/// the unknown extension breaks `keep.unknown-as-is`.
#[test]
fn writers_keep_unknown_extensions_and_encrypt_with_the_key() {
    let cases = ["valid/unknown-header-extension", "qemu/luks"];
    let all = outcomes(
        &shared_corpus(),
        "qemu",
        &["--case", cases[0], "--case", cases[1]],
    );
    for (id, obligation) in cases
        .into_iter()
        .zip(["keep.unknown-as-is", "crypt.no-plaintext"])
    {
        let o = get(&all, id);
        assert_eq!(o["kind"], "pass", "{id}: {o:#}");
        assert!(exercised(o, obligation), "{id}: {o:#}");
    }
    let t = tempfile::tempdir().unwrap();
    let id = cases[0];
    let kept = outcomes(
        &shared_corpus(),
        &qemu_based(t.path(), "whole"),
        &["--case", id],
    );
    assert_eq!(get(&kept, id)["kind"], "pass", "{kept:?}");
    let dropped = outcomes(
        &shared_corpus(),
        &qemu_based(t.path(), "drop-unknown"),
        &["--case", id],
    );
    assert_outcome(&dropped, id, "corrupting", "keep.unknown-as-is");
}
