//! A vendor with only the tarball goes green in their own CI (issue 24):
//! `corpus pack`'s tarball unpacked into an empty directory, with only the
//! `qcow2-conform` binary on PATH (beside the system's directories),
//! following the commands of the kit's own `CI.md` literally with the
//! kit's example `read` adapter: recording exits 0, checking is green;
//! the adapter changed to refuse every image makes the check red, naming
//! the cases (and `report diff` exits 1); the same adapter copied to
//! another path and run from another working directory is green against
//! the same, unchanged expectations.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/cli.rs"]
mod cli;
#[path = "common/junit.rs"]
mod junit;
use cli::{output_text as text, workspace as root, BIN};

fn kit_name() -> String {
    format!("qcow2-conform-corpus-{}", env!("CARGO_PKG_VERSION"))
}

/// The commands of the `sh` blocks of `CI.md` that run `ci.sh`, with
/// their line continuations joined, in document order.
fn documented_commands(ci_md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in ci_md.lines() {
        match (&mut block, line.trim()) {
            (None, "```sh") => block = Some(String::new()),
            (Some(b), "```") => {
                let joined = b.replace("\\\n", " ");
                out.extend(
                    joined
                        .lines()
                        .filter(|l| l.contains("ci.sh"))
                        .map(str::to_owned),
                );
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

struct Vendor {
    /// The vendor's repository: the unpacked kit, `ci/`, reports.
    repo: PathBuf,
    /// PATH: a directory holding only the binary, then the system's.
    path: String,
}

impl Vendor {
    fn sh(&self, cwd: &Path, command: &str) -> Output {
        Command::new("bash")
            .args(["-c", command])
            .current_dir(cwd)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.repo)
            .output()
            .expect("run bash")
    }
}

fn report(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn a_vendor_with_only_the_tarball_follows_the_kits_ci_document() {
    let tmp = tempfile::tempdir().unwrap();
    // The kit, made as the project README says.
    let dist = tmp.path().join("dist");
    cli::run_ok(
        Command::new(BIN)
            .args(["corpus", "pack"])
            .arg(root().join("corpus"))
            .arg("--out")
            .arg(&dist),
    );
    let tarball = dist.join(format!("{}.tar.gz", kit_name()));
    assert!(tarball.is_file());

    // An empty repository; PATH has the binary and the system only.
    let repo = tmp.path().join("vendor");
    let bin = tmp.path().join("bin");
    for d in [&repo, &bin] {
        std::fs::create_dir(d).unwrap();
    }
    std::os::unix::fs::symlink(BIN, bin.join("qcow2-conform")).unwrap();
    let v = Vendor {
        repo: repo.clone(),
        path: format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
    };
    let o = v.sh(&repo, &format!("tar xzf '{}'", tarball.display()));
    assert!(o.status.success(), "{}", text(&o));
    let kit = repo.join(kit_name());

    // The adapter: the kit's example `read` adapter, as CI.md's step 1 says.
    std::fs::create_dir(repo.join("ci")).unwrap();
    let adapter = repo.join("ci/my-adapter.py");
    std::fs::copy(kit.join("examples/qcow2-read-adapter.py"), &adapter).unwrap();

    let ci_md = std::fs::read_to_string(kit.join("CI.md")).unwrap();
    let commands = documented_commands(&ci_md);
    let record = commands
        .iter()
        .find(|c| c.contains("--record"))
        .expect("CI.md shows how to record");
    let check = commands
        .iter()
        .find(|c| c.contains("--expect"))
        .expect("CI.md shows how to check");
    for c in [record, check] {
        assert!(c.contains(&kit_name()), "{c}: not the tarball's directory");
    }

    // Record: exit 0 whatever the outcomes.
    let o = v.sh(&repo, record);
    assert_eq!(o.status.code(), Some(0), "{record}\n{}", text(&o));
    let expect = repo.join("ci/qcow2-conform-expect.toml");
    let recorded = std::fs::read_to_string(&expect).unwrap();
    assert!(
        recorded.contains("[expect.\"tiny-qcow2-reader\".\"1.0\"]"),
        "keyed by the adapter's own name and version:\n{recorded}"
    );
    assert!(
        !recorded.contains("exec:") && !recorded.contains(&*repo.to_string_lossy()),
        "no command line, no path in the keys:\n{recorded}"
    );

    // Check: green, one closing line.
    let o = v.sh(&repo, check);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{check}\n{out}");
    assert!(out.contains("outcome(s) as expected by"), "{out}");
    let green = repo.join("reports/report.json");
    let r = report(&green);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kit.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        r["cases"].as_array().unwrap().len(),
        manifest["cases"].as_array().unwrap().len(),
        "every case of the kit's manifest"
    );
    assert_eq!(
        r["cases"][0]["results"][0]["implementation"],
        "tiny-qcow2-reader"
    );
    let j = junit::read(&repo.join("reports/junit.xml"));
    let suite = j["suites"][0]["name"].as_str().unwrap().to_owned();
    assert!(!suite.contains(' '), "{suite}");
    assert_eq!(j["failures"], 0, "{j}");
    std::fs::rename(repo.join("reports"), repo.join("reports-green")).unwrap();

    // The adapter starts refusing every image: red, each case named.
    let source = std::fs::read_to_string(&adapter).unwrap();
    assert!(source.contains("REFUSE_ALL = False"));
    std::fs::write(
        &adapter,
        source.replace("REFUSE_ALL = False", "REFUSE_ALL = True"),
    )
    .unwrap();
    let o = v.sh(&repo, check);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    let regressed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("regressed tiny-qcow2-reader "))
        .collect();
    assert!(regressed.len() >= 40, "{out}");
    assert!(
        out.contains("regressed tiny-qcow2-reader valid/cluster-64k: expected pass, now strict"),
        "{out}"
    );
    let j = junit::read(&repo.join("reports/junit.xml"));
    assert_eq!(j["failures"], regressed.len(), "{j}");
    let o = v.sh(
        &repo,
        "qcow2-conform report diff reports-green/report.json reports/report.json",
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("valid/cluster-64k"), "{}", text(&o));
    std::fs::remove_dir_all(repo.join("reports")).unwrap();

    // The same adapter at another path, run from another directory by an
    // absolute path: green against the same expectations, unchanged.
    let other = tmp.path().join("elsewhere/tools");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("reader.py"), &source).unwrap();
    let cwd = tmp.path().join("elsewhere/work");
    std::fs::create_dir_all(&cwd).unwrap();
    let moved = check
        .replace(
            &format!("bash {}/ci.sh", kit_name()),
            &format!("bash {}/ci.sh", kit.display()),
        )
        .replace("python3 ci/my-adapter.py", "python3 ../tools/reader.py")
        .replace("ci/qcow2-conform-expect.toml", &expect.to_string_lossy());
    assert_ne!(&moved, check);
    let o = v.sh(&cwd, &moved);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{moved}\n{out}");
    assert!(out.contains("outcome(s) as expected by"), "{out}");
    let again = std::fs::read_to_string(&expect).unwrap();
    assert_eq!(again, recorded, "the expectations file is unchanged");
    let r = report(&cwd.join("reports/report.json"));
    assert_eq!(
        r["cases"][0]["results"][0]["implementation"],
        "tiny-qcow2-reader"
    );
}
