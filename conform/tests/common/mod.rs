//! Seed images shared by the tests of this crate, made by the real
//! qemu-img and qemu-io (a missing tool fails the test, never skips it).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub mod cli;
use cli::{qemu_img_create as create, qemu_io, run_ok};

pub fn qemu_img(args: &[&str]) {
    run_ok(Command::new("qemu-img").args(args));
}

/// Small seed images covering bitmaps, snapshots, compression, extended
/// L2, 1-bit refcounts and v2, built once per test binary.
pub fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| -> PathBuf { dir.path().join(n) };
        let s = |x: &PathBuf| x.to_str().unwrap().to_owned();
        let a = p("a.qcow2");
        create(&a, "cluster_size=512", "4M");
        qemu_img(&["bitmap", "--add", "-g", "512", &s(&a), "b0"]);
        qemu_img(&["bitmap", "--add", "-g", "4096", &s(&a), "b1"]);
        qemu_io(&a, &["write 1000 9000", "write 2M 3000"]);
        qemu_img(&["bitmap", "--disable", &s(&a), "b1"]);
        qemu_io(&a, &["write 3M 512"]);
        let b = p("b.qcow2");
        create(&b, "cluster_size=4096,refcount_bits=2", "8M");
        qemu_io(&b, &["write 0 20k"]);
        qemu_img(&["snapshot", "-c", "s1", &s(&b)]);
        qemu_img(&["bitmap", "--add", &s(&b), "x"]);
        qemu_io(&b, &["write 8k 8k"]);
        let c = p("c.qcow2");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            &s(&a),
            &s(&c),
        ]);
        qemu_img(&["bitmap", "--add", "-g", "65536", &s(&c), "cb"]);
        let d = p("d.qcow2");
        create(
            &d,
            "cluster_size=16384,extended_l2=on,refcount_bits=1",
            "4M",
        );
        qemu_img(&["bitmap", "--add", &s(&d), "e"]);
        qemu_io(&d, &["write 4k 4k", "write -z 64k 32k"]);
        let e = p("e.qcow2");
        create(&e, "compat=0.10,cluster_size=4096", "1M");
        qemu_io(&e, &["write 0 4k"]);
        [a, b, c, d, e]
            .iter()
            .map(|x| std::fs::read(x).expect("read seed"))
            .collect()
    })
}
