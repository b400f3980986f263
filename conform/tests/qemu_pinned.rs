//! QEMU's tools are given the image's whole graph (`runner::adapters::qemu::pin`),
//! so they open no file the image names by itself. Driven below the
//! runner's reference check (the adapters' library API, no manifest, no
//! sandbox), on images whose header names a FIFO or a file outside their
//! directory:
//! - the QEMU and qemu-live adapters do not start QEMU on them (the FIFO
//!   never blocks, the outside file keeps its bytes), while the bare
//!   tools, as a control, do open what the header names;
//! - a pinned graph that says otherwise than the header wins: QEMU writes
//!   into the data file the graph names, never the one the header names,
//!   and reads no backing file when the graph says `backing: null`.
//!
//! Real QEMU throughout; a missing tool fails the test.

#[path = "common/qemu.rs"]
mod qemu;

use conform::runner::adapter::Adapter;
use conform::runner::adapters::qemu::pin::{self, Backing, Driver, Node};
use conform::runner::adapters::qemu::{QemuAdapter, Toolset};
use conform::runner::adapters::qemu_live::QemuLiveAdapter;
use conform::runner::process::{self, Limits};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn limits(secs: u64) -> Limits {
    Limits {
        timeout: Duration::from_secs(secs),
        memory_bytes: None,
    }
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

/// `qemu-img create -q -f qcow2 ARGS... SIZE` run in `dir`: ARGS end
/// with the image's path.
fn create(dir: &Path, args: &[&std::ffi::OsStr]) {
    let mut c = Command::new("qemu-img");
    c.current_dir(dir)
        .args(["create", "-q", "-f", "qcow2"])
        .args(args)
        .arg(MIB.to_string());
    qemu::run(c, Duration::from_secs(60)).unwrap();
}

/// A qcow2 image at `dir/name` whose header names `backing` (not opened
/// while it is made) as a raw backing file.
fn with_backing(dir: &Path, name: &str, backing: &Path) -> PathBuf {
    let p = dir.join(name);
    let raw = "raw".as_ref();
    create(
        dir,
        &[
            "-u".as_ref(),
            "-F".as_ref(),
            raw,
            "-b".as_ref(),
            backing.as_os_str(),
            p.as_os_str(),
        ],
    );
    p
}

/// A qcow2 image at `dir/name` with the external data file `data` (its
/// name as the header stores it: relative names resolve in `dir`),
/// created by qemu-img, then filled with a known pattern.
fn with_data_file(dir: &Path, name: &str, data: &Path) -> (PathBuf, Vec<u8>) {
    let p = dir.join(name);
    let opt = format!("data_file={}", data.display());
    create(dir, &["-o".as_ref(), opt.as_ref(), p.as_os_str()]);
    let bytes: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join(data), &bytes).unwrap();
    (p, bytes)
}

/// Runs `tool` of the machine's QEMU with `args` under a `secs` limit.
fn tool(program: &Path, args: &[OsString], secs: u64) -> process::Proc {
    let tools = Toolset::from_path().expect("QEMU's tools are required");
    let l = limits(secs);
    process::run(tools.command(program, args, &l), l.timeout).unwrap()
}

/// `qemu-io -f qcow2 -c 'write -P 0xa5 0 65536' TARGET`.
fn write_a5(target: OsString) -> process::Proc {
    let tools = Toolset::from_path().expect("QEMU's tools are required");
    let args = ["-f", "qcow2", "-c", "write -P 0xa5 0 65536"];
    let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
    args.push(target);
    tool(&tools.io, &args, 30)
}

#[test]
fn the_qemu_adapter_never_opens_a_fifo_or_outside_file_the_header_names() {
    let outside = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let fifo = outside.path().join("fifo");
    mkfifo(&fifo);
    let image = with_backing(scratch.path(), "fifo-backed.qcow2", &fifo);
    let victim = outside.path().join("victim.raw");
    let (data_image, bytes) = with_data_file(scratch.path(), "outside-data.qcow2", &victim);

    // Control: the bare tools open what the header names (the FIFO blocks
    // qemu-img check until its time limit; qemu-io writes into the
    // outside file).
    let tools = Toolset::from_path().expect("QEMU's tools are required");
    let bare = tool(
        &tools.img,
        &[
            "check".into(),
            "-f".into(),
            "qcow2".into(),
            image.clone().into(),
        ],
        3,
    );
    assert!(
        bare.timed_out,
        "the bare qemu-img check did not block on the FIFO: {bare:?}"
    );
    let control = scratch.path().join("control.qcow2");
    std::fs::copy(&data_image, &control).unwrap();
    let io = write_a5(control.clone().into());
    assert!(io.success(), "{}", io.stderr);
    assert_ne!(
        std::fs::read(&victim).unwrap(),
        bytes,
        "control: the bare qemu-io wrote into the outside file"
    );
    std::fs::write(&victim, &bytes).unwrap();

    // The adapter: not started on either image, so nothing blocks and the
    // outside file keeps its bytes.
    let adapter = QemuAdapter::new().expect("QEMU's tools are required");
    let l = limits(20);
    let start = Instant::now();
    let obs = adapter.observe(&image, &l);
    assert!(!obs.timed_out, "the adapter blocked on the FIFO: {obs:?}");
    let why = obs.not_started.as_deref().unwrap_or_default();
    assert!(
        why.contains("backing file") && why.contains("QEMU not started"),
        "{obs:?}"
    );
    let w = adapter.write(&image, 0, 65536, &l);
    assert!(!w.ok && w.process.is_none(), "{w:?}");
    let obs = adapter.observe(&data_image, &l);
    let why = obs.not_started.as_deref().unwrap_or_default();
    assert!(why.contains("external data file"), "{obs:?}");
    let w = adapter.write(&data_image, 0, 65536, &l);
    assert!(!w.ok && w.process.is_none(), "{w:?}");
    let work = tempfile::tempdir().unwrap();
    adapter
        .with_bitmap_ops(true)
        .bitmap_ops(&data_image, work.path(), &l);
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        bytes,
        "the outside file changed"
    );
}

#[test]
fn a_pinned_graph_wins_over_the_names_in_the_header() {
    let outside = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tools = Toolset::from_path().expect("QEMU's tools are required");
    // The header names an outside data file; the graph names one beside
    // the image: QEMU writes into the graph's.
    let victim = outside.path().join("victim.raw");
    let (image, bytes) = with_data_file(scratch.path(), "data.qcow2", &victim);
    let companion = scratch.path().join("companion.raw");
    std::fs::write(&companion, &bytes).unwrap();
    let node = Node {
        driver: Driver::Qcow2,
        path: image.to_str().unwrap().to_owned(),
        backing: None,
        data_file: Some(companion.to_str().unwrap().to_owned()),
    };
    let pinned = pin::json_filename(&node.options(Backing::Open));
    let io = write_a5(pinned.into());
    assert!(io.success(), "{}", io.stderr);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        bytes,
        "QEMU wrote into the header's data file"
    );
    assert!(
        std::fs::read(&companion).unwrap()[..65536]
            .iter()
            .all(|&b| b == 0xa5),
        "QEMU did not write into the pinned data file"
    );

    // The header names a FIFO as its backing file; the graph says
    // `backing: null`: every tool that opens a backing chain finishes.
    let fifo = outside.path().join("fifo");
    mkfifo(&fifo);
    let image = with_backing(scratch.path(), "fifo-backed.qcow2", &fifo);
    let node = Node {
        driver: Driver::Qcow2,
        path: image.to_str().unwrap().to_owned(),
        backing: None,
        data_file: None,
    };
    let pinned = pin::json_filename(&node.options(Backing::Open));
    let q = |s: &str| OsString::from(s);
    let runs: Vec<(PathBuf, Vec<OsString>)> = vec![
        (
            tools.img.clone(),
            vec![q("check"), q("-f"), q("qcow2"), q(&pinned)],
        ),
        (
            tools.img.clone(),
            vec![
                q("convert"),
                q("-f"),
                q("qcow2"),
                q("-O"),
                q("raw"),
                q(&pinned),
                scratch.path().join("out.raw").into(),
            ],
        ),
        (
            tools.io.clone(),
            vec![q("-f"), q("qcow2"), q("-c"), q("read 0 65536"), q(&pinned)],
        ),
    ];
    for (program, args) in runs {
        let p = tool(&program, &args, 10);
        assert!(
            p.success() && !p.timed_out,
            "{}: {p:?} {}",
            program.display(),
            p.stderr
        );
    }
}

#[test]
fn the_live_adapter_never_opens_a_fifo_or_outside_file_and_follows_its_companions() {
    let outside = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let adapter = QemuLiveAdapter::new().expect("qemu-storage-daemon is required");
    let l = limits(20);
    let fifo = outside.path().join("fifo");
    mkfifo(&fifo);
    let image = with_backing(scratch.path(), "fifo-backed.qcow2", &fifo);
    let obs = adapter.observe(&image, &l);
    assert!(!obs.timed_out, "{obs:?}");
    assert!(
        obs.not_started
            .as_deref()
            .unwrap_or_default()
            .contains("backing file"),
        "{obs:?}"
    );
    let victim = outside.path().join("victim.raw");
    let (data_image, bytes) = with_data_file(scratch.path(), "outside-data.qcow2", &victim);
    let w = adapter.write(&data_image, 0, 65536, &l);
    assert!(!w.ok, "{w:?}");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        bytes,
        "the outside file changed"
    );

    // A data file beside the image (a relative name) is pinned and used.
    let (image, _) = with_data_file(scratch.path(), "beside.qcow2", Path::new("beside.raw"));
    let beside = scratch.path().join("beside.raw");
    let _dir = conform::runner::process::case_env::in_dir(Some(scratch.path()));
    let w = adapter.write(&image, 0, 65536, &l);
    assert!(w.ok, "{w:?}");
    assert!(std::fs::read(&beside).unwrap()[..65536]
        .iter()
        .all(|&b| b == 0xa5));
    let obs = adapter.observe(&image, &l);
    assert!(obs.opened && obs.not_started.is_none(), "{obs:?}");
}
