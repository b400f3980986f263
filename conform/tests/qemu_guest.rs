//! The model reads guest data exactly as QEMU does: for images QEMU makes
//! (plain, zero, extended-L2 subcluster, deflate- and zstd-compressed
//! clusters, snapshots), every virtual byte from `Model::read_guest` equals
//! `qemu-img convert -O raw`.

use std::path::Path;
use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::{qemu_img_create, qemu_io, run_ok as run};

/// Returns the number of compressed clusters the model saw.
fn assert_same_as_qemu(img: &Path) -> u64 {
    let raw = img.with_extension("raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(img)
        .arg(&raw));
    let want = std::fs::read(&raw).unwrap();
    let mut model = spec_model::Model::open(std::fs::File::open(img).unwrap()).unwrap();
    assert_eq!(
        model.report().verdict,
        spec_model::Verdict::Valid,
        "{:#?}",
        model.report().findings
    );
    let mut got = vec![0u8; want.len()];
    // Odd-sized, unaligned reads exercise cluster boundaries.
    let mut pos = 0usize;
    let mut step = 777usize;
    while pos < got.len() {
        let n = step.min(got.len() - pos);
        model
            .read_guest(pos as u64, &mut got[pos..pos + n])
            .unwrap();
        pos += n;
        step = step * 3 % 200_003 + 4096;
    }
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        first_diff.is_none(),
        "{}: first difference at byte {first_diff:?}",
        img.display()
    );
    let past = model.read_guest(want.len() as u64, &mut [0u8; 1]);
    assert!(past.is_err(), "reading past the virtual size is refused");
    model.analysis().mapping.compressed_clusters
}

const WRITES: &[&str] = &[
    "write -P 0x11 0 70000",
    "write -P 0x22 1M 4096",
    "write -z 1M 2048",
    "write -P 0x33 3M 513",
    "write -P 0x44 5000000 300000",
];

#[test]
fn guest_data_matches_qemu_convert() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    for (name, opts) in [
        ("plain512.qcow2", "cluster_size=512"),
        ("plain64k.qcow2", "cluster_size=65536"),
        ("ext.qcow2", "cluster_size=65536,extended_l2=on"),
        ("v2.qcow2", "compat=0.10,cluster_size=4096"),
    ] {
        let p = d(name);
        qemu_img_create(&p, opts, "8M");
        qemu_io(&p, WRITES);
        assert_same_as_qemu(&p);
    }

    let snap = d("snap.qcow2");
    qemu_img_create(&snap, "", "8M");
    qemu_io(&snap, &WRITES[..2]);
    run(Command::new("qemu-img").args(["snapshot", "-c", "s1", &s(&snap)]));
    qemu_io(&snap, &WRITES[2..]);
    assert_same_as_qemu(&snap);

    for (name, ctype) in [("zlib.qcow2", "zlib"), ("zstd.qcow2", "zstd")] {
        let p = d(name);
        run(Command::new("qemu-img").args([
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &format!("compression_type={ctype},cluster_size=4096"),
            &s(&snap),
            &s(&p),
        ]));
        let compressed = assert_same_as_qemu(&p);
        assert!(compressed > 0, "{name} has no compressed clusters");
    }
}
