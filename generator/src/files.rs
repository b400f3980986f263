//! Image files on disk, written and hashed one way for every user: the
//! SHA-256 file hasher (plain, as `sha256sum` prints it, or as a
//! fingerprint that skips zero blocks) and the sparse writer that leaves
//! holes where whole 4 KiB blocks are zero (images are mostly unallocated
//! clusters). The corpus commands, `generate` and the runner's private
//! copies all go through here.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// How a file's bytes enter its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// Every byte in order: the digest `sha256sum` prints.
    Plain,
    /// The file cut into 64 KiB blocks at fixed offsets; a block of zeros
    /// enters the hash as a tag byte and its length, any other block as
    /// another tag byte and its bytes. The encoding is injective, so equal
    /// fingerprints mean equal contents, and the zeros of sparse images
    /// (most of their apparent size) cost a cheap OR instead of SHA-256.
    Fingerprint,
}

/// The fingerprint's block size.
const HASH_BLOCK: usize = 64 << 10;

/// The sparse writer's block size: a block of zeros this large is a hole.
const SPARSE_BLOCK: usize = 4096;

/// The SHA-256 (hex) of the file at `path`, read in 1 MiB pieces.
pub fn sha256_file(path: &Path, hashing: Hashing) -> io::Result<String> {
    sha256_reader(File::open(path)?, hashing)
}

/// The SHA-256 (hex) of everything `f` reads, in 1 MiB pieces.
pub fn sha256_reader(mut f: impl Read, hashing: Hashing) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 16 * HASH_BLOCK];
    loop {
        let filled = read_full(&mut f, &mut buf)?;
        match hashing {
            Hashing::Plain => h.update(&buf[..filled]),
            Hashing::Fingerprint => {
                for block in buf[..filled].chunks(HASH_BLOCK) {
                    if is_zero(block) {
                        h.update([0u8]);
                        h.update((block.len() as u64).to_be_bytes());
                    } else {
                        h.update([1u8]);
                        h.update(block);
                    }
                }
            }
        }
        if filled < buf.len() {
            break;
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` to a new file `path`, sparse.
pub fn write_sparse(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut out = File::create(path)?;
    write_blocks(&mut out, 0, bytes)?;
    out.set_len(bytes.len() as u64)
}

/// Copies `src` to a new file `dst`, sparse, in 1 MiB pieces.
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<()> {
    let mut input = File::open(src)?;
    let len = input.metadata()?.len();
    let mut out = File::create(dst)?;
    let mut buf = vec![0u8; 256 * SPARSE_BLOCK];
    let mut pos = 0u64;
    loop {
        let filled = read_full(&mut input, &mut buf)?;
        write_blocks(&mut out, pos, &buf[..filled])?;
        pos += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    out.set_len(len)
}

/// Writes the blocks of `bytes` that are not all zero at offset `at`
/// (a multiple of the block size) of `out`.
fn write_blocks(out: &mut File, at: u64, bytes: &[u8]) -> io::Result<()> {
    for (i, block) in bytes.chunks(SPARSE_BLOCK).enumerate() {
        if !is_zero(block) {
            out.seek(SeekFrom::Start(at + (i * SPARSE_BLOCK) as u64))?;
            out.write_all(block)?;
        }
    }
    Ok(())
}

/// Reads from `r` until `buf` is full or the input ends; returns how many
/// bytes were read (less than `buf.len()` only at the end of the input).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// True when every byte of `block` is zero (a branch-free OR).
fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |a, &b| a | b) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_files_are_exact_and_hash_as_sha256sum() {
        let d = std::env::temp_dir().join(format!("generator-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut bytes = vec![0u8; 3 * 1024 * 1024 + 17];
        bytes[5000] = 1;
        bytes[2 * 1024 * 1024 + 3] = 7;
        *bytes.last_mut().unwrap() = 9;
        let (a, b) = (d.join("a"), d.join("b"));
        write_sparse(&a, &bytes).unwrap();
        sparse_copy(&a, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), bytes);
        assert_eq!(std::fs::read(&b).unwrap(), bytes);
        assert_eq!(
            sha256_file(&b, Hashing::Plain).unwrap(),
            hex::encode(Sha256::digest(&bytes))
        );
        let print = sha256_file(&b, Hashing::Fingerprint).unwrap();
        assert_eq!(print, sha256_file(&a, Hashing::Fingerprint).unwrap());
        std::fs::write(&b, b"x").unwrap();
        assert_ne!(print, sha256_file(&b, Hashing::Fingerprint).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
