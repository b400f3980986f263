//! The CLI's exit codes and error reporting (DIGEST.md section 3): empty,
//! truncated and non-qcow2 files get clear findings and exit 2; unreadable
//! files and bad arguments exit 1; valid 0, unspecified 3.

mod common;
use common::seeds;
use std::path::Path;
use std::process::{Command, Output};

fn conform() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
}

/// `check --json` of `path`: how it ended and the JSON verdict it printed.
fn check_json(path: &Path) -> (Output, serde_json::Value) {
    let out = conform()
        .arg("check")
        .arg("--json")
        .arg(path)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).expect("JSON verdict");
    (out, v)
}

#[test]
fn empty_truncated_and_foreign_files_get_clear_findings_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let seed = &seeds()[0];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "header.magic"),
        (
            "text",
            b"this is not a disk image\n".to_vec(),
            "header.magic",
        ),
        ("raw zeros", vec![0u8; 65536], "header.magic"),
        ("truncated header", seed[..50].to_vec(), "header.truncated"),
        ("header only", seed[..104].to_vec(), "ext.bounds"),
        (
            "cut in the middle",
            seed[..seed.len() / 2].to_vec(),
            "refcount",
        ),
    ];
    for (name, bytes, rule) in cases {
        let path = dir.path().join(name.replace(' ', "_"));
        std::fs::write(&path, &bytes).unwrap();
        let (out, v) = check_json(&path);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(v["verdict"], "invalid", "{name}");
        let rules = common::cli::each_str(&v["findings"], "rule");
        assert!(
            rules.iter().any(|r| r.starts_with(rule)),
            "{name}: expected {rule}, got {rules:?}"
        );
        for f in v["findings"].as_array().unwrap() {
            assert!(
                f["offset"].is_u64() && !f["message"].as_str().unwrap().is_empty(),
                "{name}: {f}"
            );
        }
    }
}

#[test]
fn unreadable_file_and_bad_arguments_exit_1() {
    let out = conform()
        .args(["check", "/nonexistent/image.qcow2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/image.qcow2"));
    let dir = tempfile::tempdir().unwrap();
    let out = conform().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a directory is not an image");
    let out = conform().args(["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "missing argument");
    let out = conform()
        .args(["check", "--no-such-flag", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "unknown flag");
}

#[test]
fn valid_and_unspecified_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.qcow2");
    std::fs::write(&path, &seeds()[0]).unwrap();
    let out = conform().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("valid") && text.contains("bitmap \"b0\""),
        "{text}"
    );
    // bitmap_table_size one larger than needed: unspecified, exit 3.
    let mut b = seeds()[0].clone();
    let ext = b
        .windows(4)
        .position(|w| w == [0x23, 0x85, 0x28, 0x75])
        .unwrap()
        + 8;
    let dir_off = u64::from_be_bytes(b[ext + 16..ext + 24].try_into().unwrap()) as usize;
    let size = u32::from_be_bytes(b[dir_off + 8..dir_off + 12].try_into().unwrap());
    b[dir_off + 8..dir_off + 12].copy_from_slice(&(size + 1).to_be_bytes());
    let path = dir.path().join("unspec.qcow2");
    std::fs::write(&path, &b).unwrap();
    let (out, v) = check_json(&path);
    assert_eq!(v["verdict"], "unspecified", "{v}");
    assert_eq!(out.status.code(), Some(3));
}

/// A reader that closes standard output early (`rules | head`) ends the
/// command quietly: no panic, no backtrace, the shell's SIGPIPE status.
#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bitmaps-example.qcow2"
    );
    for args in [
        vec!["rules"],
        vec!["rules", "--json"],
        vec!["dump", example],
        vec!["check", example],
    ] {
        let mut child = conform()
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(
            matches!(out.status.code(), Some(141) | Some(0)),
            "{args:?}: {:?}",
            out.status
        );
    }
}
