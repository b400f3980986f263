//! The corpus on disk: its manifest, private copies of its images, and a
//! hash of every file so a run can prove it changed nothing.

use anyhow::{bail, Context, Result};
use generator::Manifest;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Reads `DIR/manifest.json` and checks that every image it names exists.
pub fn load(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let m = Manifest::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for c in &m.cases {
        let f = dir.join(&c.file);
        if !f.is_file() {
            bail!("case {}: image {} does not exist", c.id, f.display());
        }
    }
    Ok(m)
}

/// Every regular file under `dir` (recursively), relative path -> SHA-256.
pub fn hash_tree(dir: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    files
        .par_iter()
        .map(|p| {
            let h = hash_file(p).with_context(|| format!("cannot hash {}", p.display()))?;
            Ok((p.strip_prefix(dir).unwrap_or(p).to_path_buf(), h))
        })
        .collect()
}

/// Reads from `r` until `buf` is full or the input ends; returns how many
/// bytes were read (less than `buf.len()` only at the end of the input).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// True when every byte of `block` is zero.
fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |a, &b| a | b) == 0
}

/// A SHA-256 fingerprint (hex) of a file's bytes. The file is cut into
/// 64 KiB blocks at fixed offsets; a block of zeros enters the hash as a
/// tag byte and its length, any other block as another tag byte and its
/// bytes. The encoding is injective, so equal fingerprints mean equal
/// contents, and the zeros of sparse corpus images (most of their
/// apparent size) cost a cheap OR instead of SHA-256.
pub fn hash_file(p: &Path) -> std::io::Result<String> {
    const BLOCK: usize = 64 << 10;
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 16 * BLOCK];
    loop {
        let filled = read_full(&mut f, &mut buf)?;
        for block in buf[..filled].chunks(BLOCK) {
            if is_zero(block) {
                h.update([0u8]);
                h.update((block.len() as u64).to_be_bytes());
            } else {
                h.update([1u8]);
                h.update(block);
            }
        }
        if filled < buf.len() {
            break;
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The files that differ between two hashes of a tree (changed, added or
/// removed), as messages.
pub fn differences(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, h) in before {
        match after.get(p) {
            None => out.push(format!("{} was removed", p.display())),
            Some(h2) if h2 != h => out.push(format!("{} changed", p.display())),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            out.push(format!("{} appeared", p.display()));
        }
    }
    out
}

/// Copies `src` to a new file `dst`, leaving holes where whole 4 KiB
/// blocks are zero (corpus images are mostly unallocated clusters).
pub fn sparse_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut input = std::fs::File::open(src)?;
    let len = input.metadata()?.len();
    let mut out = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; 256 * BLOCK];
    let mut pos = 0u64;
    loop {
        let filled = read_full(&mut input, &mut buf)?;
        if filled == 0 {
            break;
        }
        for (i, block) in buf[..filled].chunks(BLOCK).enumerate() {
            if !is_zero(block) {
                out.seek(SeekFrom::Start(pos + (i * BLOCK) as u64))?;
                out.write_all(block)?;
            }
        }
        pos += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    out.set_len(len)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_is_exact() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a");
        let mut bytes = vec![0u8; 3 * 1024 * 1024 + 17];
        bytes[5000] = 1;
        bytes[2 * 1024 * 1024 + 3] = 7;
        *bytes.last_mut().unwrap() = 9;
        std::fs::write(&src, &bytes).unwrap();
        let dst = d.path().join("b");
        sparse_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), bytes);
        let before = hash_tree(d.path()).unwrap();
        assert_eq!(before.len(), 2);
        std::fs::write(&dst, b"x").unwrap();
        let after = hash_tree(d.path()).unwrap();
        assert_eq!(differences(&before, &after), vec!["b changed".to_string()]);
    }
}
