//! The corpus as a kit a vendor can use alone: `corpus pack` verifies
//! first and refuses a corpus that fails (one image byte and one expected
//! verdict changed); `corpus build` writes the README, the verdict contract
//! and exec protocol (PROTOCOL.md) and the example adapter, so a fresh
//! build packs, and the unpacked tarball verifies and refers to no file
//! outside itself; `generate` writes SHA256SUMS, so `corpus verify` works
//! on its output and catches a changed byte.

use generator::Manifest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/cli.rs"]
mod cli;
use cli::BIN;

fn conform(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN).args(args).arg(dir).output().unwrap()
}

/// `qcow2-conform corpus pack DIR --out OUT`.
fn pack(dir: &Path, out: &Path) -> Output {
    Command::new(BIN)
        .args(["corpus", "pack"])
        .arg(dir)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

fn copy_tree(from: &Path, to: &Path) {
    for p in cli::tree_files(from) {
        let dest = to.join(p.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&p, dest).unwrap();
    }
}

#[test]
fn pack_refuses_a_corpus_that_fails_verify() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("c");
    copy_tree(&checked_in(), &dir);
    let m =
        Manifest::from_json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let img = dir.join(&m.cases[3].file);
    let mut b = std::fs::read(&img).unwrap();
    b[7] ^= 1;
    std::fs::write(&img, &b).unwrap();
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let changed = text.replacen("\"verdict\": \"valid\"", "\"verdict\": \"unspecified\"", 1);
    std::fs::write(dir.join("manifest.json"), changed).unwrap();
    assert_eq!(conform(&["corpus", "verify"], &dir).status.code(), Some(2));

    let out = t.path().join("out");
    let o = pack(&dir, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to pack"), "{stderr}");
    assert!(stderr.contains("file problems"), "{stderr}");
    assert!(
        cli::tarballs(&out).is_empty(),
        "no tarball of a failing corpus"
    );
}

/// Every text file of the unpacked kit; none may point outside it.
fn assert_self_contained(root: &Path) {
    let mut texts = 0;
    for p in cli::tree_files(root) {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        if p.extension().is_some_and(|e| e == "json") || p.ends_with("SHA256SUMS") {
            continue;
        }
        texts += 1;
        for outside in [
            "DESIGN.md",
            "DIGEST.md",
            "ARCHITECTURE.md",
            "corpus-src",
            "generator/src",
            "scripts/",
            "corpus/README.md",
            "docs/ci.md",
            "action.yml",
        ] {
            assert!(
                !text.contains(outside),
                "{} refers to {outside}, which is not in the tarball",
                p.display()
            );
        }
        // Every file named like `NAME.md` or `examples/...` is in it.
        for word in text.split('`').skip(1).step_by(2) {
            let named = (word.ends_with(".md") || word.starts_with("examples/"))
                && !word.contains(' ')
                && !word.contains("docs/interop");
            if named {
                assert!(
                    root.join(word).exists(),
                    "{} names {word}, missing from the tarball",
                    p.display()
                );
            }
        }
    }
    assert!(texts >= 3, "README.md, PROTOCOL.md and the example adapter");
}

/// The help text of `qcow2-conform ARGS --help` and of every subcommand
/// it lists, appended to `out`.
fn all_help(args: &mut Vec<String>, out: &mut String) {
    let o = Command::new(BIN)
        .args(&*args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?} --help");
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&help);
    let commands = help
        .split("Commands:\n")
        .nth(1)
        .map(|c| c.split("\n\n").next().unwrap_or(""))
        .unwrap_or("");
    for line in commands.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name == "help" || !line.starts_with("  ") {
            continue;
        }
        args.push(name.to_owned());
        all_help(args, out);
        args.pop();
    }
}

/// Options of other programs the kit's documents name: QEMU's
/// `--object`/`--image-opts` (how QEMU gets a secret) and `qemu-img
/// convert --bitmaps`.
const FOREIGN_OPTIONS: [&str; 3] = ["--object", "--image-opts", "--bitmaps"];

#[test]
fn the_kits_documents_name_only_options_the_binary_has() {
    let mut help = String::new();
    all_help(&mut Vec::new(), &mut help);
    assert!(help.contains("--write-expect") && help.contains("--out"));
    let ci_help = Command::new("bash")
        .arg(checked_in().join("ci.sh"))
        .arg("--help")
        .output()
        .unwrap();
    let ci_help = String::from_utf8_lossy(&ci_help.stdout).into_owned();
    assert!(ci_help.contains("--record"), "{ci_help}");
    let known = |opt: &str| {
        let bounded = |text: &str| {
            text.match_indices(opt).any(|(i, _)| {
                !text[i + opt.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            })
        };
        bounded(&help) || bounded(&ci_help) || FOREIGN_OPTIONS.contains(&opt)
    };
    let mut named = 0;
    for doc in ["README.md", "PROTOCOL.md", "CI.md"] {
        let text = std::fs::read_to_string(checked_in().join(doc)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("--") {
            let after = &rest[i + 2..];
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(after.len());
            let opt = &rest[i..i + 2 + len];
            rest = &after[len..];
            if len == 0 || !after.starts_with(|c: char| c.is_ascii_lowercase()) {
                continue; // `--` alone (the end of options)
            }
            named += 1;
            assert!(
                known(opt),
                "{doc} names {opt}, which no command of the binary has"
            );
        }
    }
    assert!(named >= 20, "only {named} options named");
}

#[test]
fn a_fresh_build_packs_into_a_self_contained_kit_that_verifies() {
    let t = tempfile::tempdir().unwrap();
    let cb = t.path().join("cb");
    assert!(conform(&["corpus", "build"], &cb).status.success());
    for f in conform::commands::corpus_kit::names() {
        assert!(cb.join(f).is_file(), "corpus build writes {f}");
        assert_eq!(
            std::fs::read(cb.join(f)).unwrap(),
            std::fs::read(checked_in().join(f)).unwrap(),
            "{f}: the checked-in corpus is as built"
        );
    }
    let out = t.path().join("out");
    let o = pack(&cb, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tarball = cli::tarballs(&out);
    assert_eq!(tarball.len(), 1);
    let unpack = t.path().join("unpacked");
    std::fs::create_dir_all(&unpack).unwrap();
    cli::run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball[0])
            .current_dir(&unpack),
    );
    let root = std::fs::read_dir(&unpack)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let sums = std::fs::read_to_string(root.join("SHA256SUMS")).unwrap();
    for f in conform::commands::corpus_kit::names() {
        assert!(sums.contains(&format!("  {f}\n")), "SHA256SUMS lists {f}");
    }
    cli::run_ok(
        Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(&root),
    );
    assert_eq!(conform(&["corpus", "verify"], &root).status.code(), Some(0));
    assert_self_contained(&root);
    let protocol = std::fs::read_to_string(root.join("PROTOCOL.md")).unwrap();
    for must in [
        "The verdict contract: what `expected` means",
        "What an outcome means",
        "`PROGRAM capabilities` (required)",
        "`PROGRAM read IMAGE OFFSET:LEN...`",
        "**Exit status.**",
        "**Working directory.**",
    ] {
        assert!(protocol.contains(must), "PROTOCOL.md lacks {must:?}");
    }
}

#[test]
fn generate_output_verifies_and_catches_a_changed_byte() {
    let (_t, g) =
        cli::generated_corpus("g", &["--seed", "9", "--count", "3", "--profile", "small"]);
    let v = conform(&["corpus", "verify"], &g);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let m =
        Manifest::from_json(&std::fs::read_to_string(g.join("manifest.json")).unwrap()).unwrap();
    let img = g.join(&m.cases[0].file);
    let mut b = std::fs::read(&img).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x40;
    std::fs::write(&img, &b).unwrap();
    let v = conform(&["corpus", "verify"], &g);
    assert_eq!(v.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&v.stdout).contains("FILE  images/"));
}
