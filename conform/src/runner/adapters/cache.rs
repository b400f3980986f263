//! Where `scripts/setup.sh` keeps the implementations it unpacks beside
//! the machine's own rather than installing them: QEMU 7.2 from Debian
//! bookworm (`qemu@7.2`, with its `qemu-storage-daemon`), libqcow from
//! PyPI in a virtual environment (`libqcow@20260703`) and
//! `dissect.hypervisor` from PyPI in another (`dissect@3.21`); and where
//! `scripts/build-qemu.sh` builds QEMU from Debian's source packages
//! (`qemu@10.2`, `qemu@5.2`, `qemu@10.2-asan`). The scripts and the
//! adapters agree on these paths.

use std::path::{Path, PathBuf};

/// The cache directory: `QCOW2_CONFORM_CACHE`, else
/// `$XDG_CACHE_HOME/qcow2-conform`, else `$HOME/.cache/qcow2-conform`.
pub fn dir() -> PathBuf {
    let set = |v: &str| std::env::var_os(v).filter(|p| !p.is_empty());
    if let Some(d) = set("QCOW2_CONFORM_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = set("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("qcow2-conform");
    }
    PathBuf::from(set("HOME").unwrap_or_else(|| "/tmp".into()))
        .join(".cache")
        .join("qcow2-conform")
}

/// Where QEMU `version` is in the cache: `qemu-VERSION` when that
/// directory exists (QEMU 7.2 that setup unpacked from Debian's packages,
/// the tools under `usr/bin`; or an exact build such as `src-10.2.2`),
/// else the newest build of `scripts/build-qemu.sh` whose upstream
/// version is `VERSION` or starts with `VERSION.` (`10.2` finds
/// `qemu-src-10.2.2`), a flavour suffix kept (`10.2-asan` finds
/// `qemu-src-10.2.2-asan`). When nothing matches, the `qemu-VERSION`
/// path (which does not exist, for the error message).
pub fn qemu_prefix(version: &str) -> PathBuf {
    qemu_prefix_in(&dir(), version)
}

/// [`qemu_prefix`] in cache directory `cache`.
fn qemu_prefix_in(cache: &Path, version: &str) -> PathBuf {
    let exact = cache.join(format!("qemu-{version}"));
    if exact.is_dir() {
        return exact;
    }
    newest_source_build(cache, version).unwrap_or(exact)
}

/// The flavours `scripts/build-qemu.sh` builds besides the plain one.
pub const FLAVOURS: [&str; 2] = ["asan", "coverage"];

/// The newest `qemu-src-UPSTREAM[-FLAVOUR]` directory matching `want`
/// (`10.2`, `10.2-asan`), see [`qemu_prefix`].
fn newest_source_build(cache: &Path, want: &str) -> Option<PathBuf> {
    let (base, flavour) = split_flavour(want);
    let entries = std::fs::read_dir(cache).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (upstream, f) = split_flavour(name.strip_prefix("qemu-src-")?);
            let matches = upstream == base || upstream.starts_with(&format!("{base}."));
            (matches && f == flavour && e.path().is_dir()).then(|| (numeric(upstream), e.path()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

/// `10.2.2-asan` as (`10.2.2`, `Some("asan")`).
fn split_flavour(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once('-') {
        Some((v, f)) if FLAVOURS.contains(&f) => (v, Some(f)),
        _ => (s, None),
    }
}

/// A dotted version as numbers, for ordering (`10.2.10` after `10.2.9`).
fn numeric(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The Python of the virtual environment that holds
/// `dissect.hypervisor` `version` from PyPI (`dissect@3.21`).
pub fn dissect_python(version: &str) -> PathBuf {
    dir()
        .join(format!("dissect-{version}"))
        .join("bin")
        .join("python")
}

/// The Python of the virtual environment that holds libqcow `version`
/// from PyPI (`libqcow-python`).
pub fn libqcow_python(version: &str) -> PathBuf {
    dir()
        .join(format!("libqcow-{version}"))
        .join("bin")
        .join("python")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_prefix_finds_the_newest_source_build_of_its_flavour() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "qemu-7.2",
            "qemu-src-10.2.2",
            "qemu-src-10.2.10",
            "qemu-src-10.2.2-asan",
            "qemu-src-5.2",
            "qemu-src-10.20.1",
        ] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        let got = |v: &str| qemu_prefix_in(d.path(), v).file_name().unwrap().to_owned();
        assert_eq!(got("7.2"), "qemu-7.2");
        assert_eq!(got("10.2"), "qemu-src-10.2.10");
        assert_eq!(got("10.2.2"), "qemu-src-10.2.2");
        assert_eq!(got("10.2-asan"), "qemu-src-10.2.2-asan");
        assert_eq!(got("5.2"), "qemu-src-5.2");
        assert_eq!(got("src-10.2.2"), "qemu-src-10.2.2");
        assert_eq!(got("10.2-coverage"), "qemu-10.2-coverage");
        assert_eq!(got("9.1"), "qemu-9.1");
    }
}
