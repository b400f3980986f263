//! The `qemu` adapter reads an exported bitmap's dirty ranges with the
//! runner's own NBD client (`qemu_live::nbd`), one connection per bitmap,
//! instead of one `qemu-img map` per bitmap. Against the real `qemu-nbd`
//! and `qemu-img`: the client's ranges are exactly those `qemu-img map`
//! reports as dirty through `x-dirty-bitmap`, the adapter uses the client
//! (and says so in the commands it shows), the client gives up past the
//! bound it is given, which sends the adapter back to `qemu-img map`, and
//! a 16 TiB disk (a sparse file) is walked whole in well under its limit.
//!
//! Real QEMU throughout; a missing tool fails the test.

use conform::runner::adapter::Adapter;
use conform::runner::adapters::qemu::QemuAdapter;
use conform::runner::adapters::qemu_live::nbd::NbdClient;
use conform::runner::process::Limits;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `program args`, which must succeed.
fn ok(program: &str, args: &[&str]) -> String {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (scripts/setup.sh installs QEMU's tools): {e}")
        });
    assert!(o.status.success(), "{program} {args:?}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// An image of `size` with bitmap `b` (64 KiB granularity) dirty in a
/// 64 KiB region at each of `at`.
fn image_of(dir: &Path, size: &str, at: &[u64]) -> String {
    let img = dir.join("image.qcow2").display().to_string();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=2M",
            &img,
            size,
        ],
    );
    ok("qemu-img", &["bitmap", "--add", "-g", "65536", &img, "b"]);
    let mut args = vec!["-f".to_owned(), "qcow2".to_owned()];
    for offset in at {
        args.push("-c".into());
        args.push(format!("write -P 0x5a {offset} 64k"));
    }
    args.push(img.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok("qemu-io", &args);
    img
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(30),
        memory_bytes: None,
    }
}

#[test]
fn a_16_tib_disk_is_read_whole_in_bounded_time() {
    // A sparse file of 16 TiB of disk: the client walks its whole export
    // (4 GiB a request) and finds the three dirty regions, one at the end.
    let d = tempfile::tempdir().unwrap();
    let at = [0, 15 << 40, (16 << 40) - (64 << 10)];
    let img = image_of(d.path(), "16T", &at);
    let start = Instant::now();
    let obs = QemuAdapter::new()
        .unwrap()
        .observe(Path::new(&img), &limits());
    let took = start.elapsed();
    let want: Vec<(u64, u64)> = at.iter().map(|&a| (a, a + 65536)).collect();
    assert_eq!(obs.bitmaps.len(), 1, "{obs:?}");
    assert_eq!(
        obs.bitmaps[0].dirty_ranges.as_deref(),
        Some(&want[..]),
        "{obs:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "a 16 TiB disk took {took:?}"
    );
}

#[test]
fn the_nbd_client_reads_what_qemu_img_map_reads_and_gives_up_past_its_bound() {
    let d = tempfile::tempdir().unwrap();
    let img = image_of(
        d.path(),
        "64M",
        &(0..30).map(|i| i << 20).collect::<Vec<_>>(),
    );
    let want: Vec<(u64, u64)> = (0..30).map(|i| (i << 20, (i << 20) + 65536)).collect();

    // The adapter: the ranges, through its own client.
    let limits = Limits {
        timeout: Duration::from_secs(30),
        memory_bytes: None,
    };
    let obs = QemuAdapter::new()
        .unwrap()
        .observe(Path::new(&img), &limits);
    assert!(obs.opened, "{obs:?}");
    assert_eq!(obs.bitmaps.len(), 1, "{obs:?}");
    assert_eq!(
        obs.bitmaps[0].dirty_ranges.as_deref(),
        Some(&want[..]),
        "{obs:?}"
    );
    assert!(
        obs.commands.iter().any(
            |c| c.contains("qemu-img map") && c.contains("read by the runner's own NBD client")
        ),
        "{:?}",
        obs.commands
    );

    // The same export read by `qemu-img map` and by the client, bounded.
    let sock = d.path().join("nbd.sock");
    let sock_s = sock.display().to_string();
    let mut server = Command::new("qemu-nbd")
        .args(["-r", "-t", "-k", &sock_s, "-B", "b", "-f", "qcow2", &img])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "qemu-nbd never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let map = ok(
        "qemu-img",
        &[
            "map",
            "--output=json",
            "--image-opts",
            &format!("driver=nbd,server.type=unix,server.path={sock_s},x-dirty-bitmap=qemu:dirty-bitmap:b"),
        ],
    );
    let extents: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
    let by_map: Vec<(u64, u64)> = extents
        .iter()
        .filter(|e| e["data"] == false)
        .map(|e| {
            let s = e["start"].as_u64().unwrap();
            (s, s + e["length"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(by_map, want, "qemu-img map: {map}");
    let read = |most: usize| {
        let mut c = NbdClient::connect(
            &sock,
            "",
            Some("qemu:dirty-bitmap:b"),
            Duration::from_secs(30),
        )
        .unwrap();
        let r = c.dirty_extents_within(Some(Instant::now() + Duration::from_secs(30)), most);
        c.disconnect();
        r
    };
    assert_eq!(read(100).unwrap(), want);
    let past = read(10).unwrap_err().to_string();
    assert!(past.contains("more than 10 dirty ranges"), "{past}");
    let _ = server.kill();
    let _ = server.wait();
}
