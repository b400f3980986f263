//! `check` and `dump` on files that are not regular images, and on sparse
//! files with hostile size fields: exit 1 with one line at once (never a
//! wait on a FIFO, never an abort), the cause printed once.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_qcow2-conform");
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/bitmaps-example.qcow2"
);

/// Runs the binary with `args`, failing the test if it takes over 20 s.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qcow2-conform");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("qcow2-conform {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Exit 1 and exactly one line on stderr containing `want`.
fn refused(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.contains(want), "want {want:?} in: {err}");
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(st.success(), "mkfifo failed");
}

#[test]
fn a_fifo_is_refused_at_once_by_check_and_every_dump() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    mkfifo(&f);
    let f = f.to_str().unwrap();
    refused(&run(&["check", f]), "not a regular file (a FIFO)");
    refused(&run(&["dump", f]), "not a regular file (a FIFO)");
    refused(
        &run(&["dump", "--revision", "empty-table-2016", f]),
        "not a regular file (a FIFO)",
    );
}

#[test]
fn a_directory_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["check", d]);
    refused(&out, "not a regular file (a directory)");
    refused(
        &run(&["dump", "--json", d]),
        "not a regular file (a directory)",
    );
}

#[test]
fn a_device_is_refused() {
    refused(
        &run(&["check", "/dev/null"]),
        "not a regular file (a character device)",
    );
}

#[test]
fn a_missing_file_names_its_cause_once() {
    let out = run(&["check", "/nonexistent/image.qcow2"]);
    refused(&out, "No such file or directory");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn a_sparse_16_tib_image_checks_valid_and_a_terabyte_directory_is_judged_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("s16");
    std::fs::copy(EXAMPLE, &big).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len((1 << 44) - 4096).unwrap();
    let out = run(&["check", big.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let hostile = dir.path().join("dir1t");
    let mut bytes = std::fs::read(EXAMPLE).unwrap();
    bytes[128..136].copy_from_slice(&0xFF_FFFA_D000u64.to_be_bytes());
    std::fs::write(&hostile, &bytes).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&hostile)
        .unwrap();
    f.set_len(1 << 40).unwrap();
    // Two entries cannot fill a terabyte: the size is judged by its rule
    // (invalid, exit 2), never read.
    let out = run(&["check", hostile.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("bitmaps.ext.directory-size"), "{stdout}");
}
