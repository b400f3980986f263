//! `--impl qemu@DIR` and `--impl qemu@7.2`: every QEMU check runs the
//! prefix's own tools with its libraries first on `LD_LIBRARY_PATH`. A
//! prefix of wrapper scripts that log each call and then run the real
//! tools shows that observing, the write check and `--bitmap-ops` all go
//! through it; the QEMU 7.2 that `scripts/setup.sh` unpacks is found by
//! version and reports 7.2.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[path = "common/cli.rs"]
mod cli;

/// `dir/bin/{qemu-img,qemu-io,qemu-nbd}`: scripts that append their name,
/// `LD_LIBRARY_PATH` and arguments to `dir/calls.log`, then run the
/// machine's tool; and an empty `dir/lib`.
fn wrapper_prefix(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    let log = dir.join("calls.log");
    for tool in ["qemu-img", "qemu-io", "qemu-nbd"] {
        let real = conform::runner::adapters::qemu::Toolset::from_path()
            .expect("QEMU's tools are installed")
            .path(match tool {
                "qemu-img" => conform::runner::adapters::qemu::Tool::Img,
                "qemu-io" => conform::runner::adapters::qemu::Tool::Io,
                _ => conform::runner::adapters::qemu::Tool::Nbd,
            })
            .to_owned();
        let script = dir.join("bin").join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} LD=$LD_LIBRARY_PATH $*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn every_qemu_check_runs_the_prefix_tools() {
    let d = tempfile::tempdir().unwrap();
    let prefix = d.path().join("prefix");
    wrapper_prefix(&prefix);
    let corpus = d.path().join("corpus");
    cli::generate(
        &corpus,
        &[
            "--seed",
            "3",
            "--count",
            "2",
            "--valid",
            "--profile",
            "qemu",
        ],
    );
    let spec = format!("qemu@{}", prefix.display());
    let adapter = conform::runner::adapters::adapter_with_options(
        &spec,
        conform::runner::adapters::AdapterOptions {
            bitmap_ops: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(adapter.name(), spec);
    let opts = conform::runner::RunOptions {
        limits: conform::runner::Limits::default(),
        jobs: 1,
        writes: true,
        progress: false,
        scheduling: Default::default(),
    };
    let report = conform::runner::run_corpus(&corpus, &[adapter], &opts).unwrap();
    for c in &report.cases {
        let r = &c.results[0];
        assert_eq!(r.implementation, spec);
        assert_ne!(
            r.outcome.kind.as_str(),
            "error",
            "{}: {:?}",
            c.id,
            r.outcome
        );
    }
    let log = std::fs::read_to_string(prefix.join("calls.log")).unwrap();
    let lib = prefix.join("lib").display().to_string();
    for line in log.lines() {
        assert!(line.contains(&format!("LD={lib}")), "{line}");
    }
    for want in [
        "qemu-img info",
        "qemu-img check",
        "qemu-nbd ",
        "qemu-img map",
        "qemu-io ",
        "qemu-img bitmap",
        "qemu-img convert",
        "qemu-img resize",
    ] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(want.split(' ').next().unwrap())
                    && l.contains(want.split_once(' ').map_or("", |(_, a)| a))),
            "no `{want}` through the prefix:\n{log}"
        );
    }
}

#[test]
fn qemu_at_7_2_is_bookworms_qemu() {
    let v = conform::runner::adapters::versions::version_of("qemu@7.2")
        .expect("scripts/setup.sh unpacks QEMU 7.2");
    assert!(v.starts_with("7.2."), "{v}");
    let machine = conform::runner::adapters::versions::version_of("qemu").unwrap();
    assert_ne!(v, machine, "qemu@7.2 must not be the machine's QEMU");
    let a = conform::runner::adapter_from_spec("qemu@7.2").unwrap();
    assert_eq!(a.name(), "qemu@7.2");
}

#[test]
fn a_prefix_without_qemu_is_a_setup_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let spec = format!("qemu@{}", d.path().display());
    let e = match conform::runner::adapter_from_spec(&spec) {
        Ok(_) => panic!("{spec} has no QEMU"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains(&d.path().display().to_string()), "{e}");
    assert!(e.contains("bin/qemu-img"), "{e}");
}

/// `qemu-live@7.2` runs the qemu-storage-daemon that setup unpacks into
/// the 7.2 prefix (issue 22): it observes a corpus image as 7.2 does,
/// opened and with its bitmap listed and read over NBD.
#[test]
fn qemu_live_at_7_2_runs_bookworms_daemon() {
    let v = conform::runner::adapters::versions::version_of("qemu-live@7.2")
        .expect("scripts/setup.sh unpacks QEMU 7.2 with its daemon");
    assert!(v.starts_with("7.2."), "{v}");
    let a = conform::runner::adapter_from_spec("qemu-live@7.2").unwrap();
    assert_eq!(a.name(), "qemu-live@7.2");
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus/images/valid--cluster-64k.qcow2");
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("image.qcow2");
    std::fs::copy(&image, &copy).unwrap();
    let obs = a.observe(&copy, &conform::runner::Limits::default());
    assert!(obs.opened, "{obs:?}");
    assert!(obs.bitmaps.iter().any(|b| b.usable), "{obs:?}");
}

/// A prefix without `qemu-storage-daemon` is an error for `qemu-live@`
/// that names the prefix, not a silent fall back to the machine's daemon.
#[test]
fn qemu_live_at_a_prefix_without_a_daemon_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for t in ["qemu-img", "qemu-io", "qemu-nbd"] {
        let p = bin.join(t);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let spec = format!("qemu-live@{}", d.path().display());
    let e = match conform::runner::adapter_from_spec(&spec) {
        Ok(_) => panic!("{spec} has no daemon"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("no qemu-storage-daemon"), "{e}");
}
