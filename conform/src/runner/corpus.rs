//! The corpus a run reads: its manifest, private copies of its images
//! ([`sparse_copy`]), and a fingerprint of every file so a run can prove
//! it changed nothing.

pub use generator::files::sparse_copy;
use generator::files::{sha256_file, Hashing};
use generator::manifest::ManifestError;
use generator::Manifest;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Why a corpus cannot be read or hashed.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read the manifest {}", path.display())]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {error}", path.display())]
    Manifest { path: PathBuf, error: ManifestError },
    #[error("case {case}: image {} does not exist", path.display())]
    MissingImage { case: String, path: PathBuf },
    #[error("case {case}: {error}")]
    Companion {
        case: String,
        error: generator::manifest::CompanionError,
    },
    #[error("cannot list {}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot hash {}", path.display())]
    Hash {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads `DIR/manifest.json` and checks that every image it names exists
/// and that every companion path stays inside the corpus, under its
/// image's directory (a missing companion file is the case's own `error`
/// outcome at run time, not a load failure).
pub fn load(dir: &Path) -> Result<Manifest, CorpusError> {
    let path = dir.join("manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(CorpusError::ReadManifest { path, source }),
    };
    let m = match Manifest::from_json(&text) {
        Ok(m) => m,
        Err(error) => return Err(CorpusError::Manifest { path, error }),
    };
    for c in &m.cases {
        let path = dir.join(&c.file);
        if !path.is_file() {
            let case = c.id.clone();
            return Err(CorpusError::MissingImage { case, path });
        }
        if let Err(error) = c.companion_places() {
            let case = c.id.clone();
            return Err(CorpusError::Companion { case, error });
        }
    }
    Ok(m)
}

/// Every regular file under `dir` (recursively), relative path -> its
/// SHA-256 fingerprint ([`Hashing::Fingerprint`]).
pub fn hash_tree(dir: &Path) -> Result<BTreeMap<PathBuf, String>, CorpusError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let list = std::fs::read_dir(&d).map_err(|source| CorpusError::List {
            path: d.clone(),
            source,
        })?;
        for e in list {
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
            let h = sha256_file(p, Hashing::Fingerprint).map_err(|source| CorpusError::Hash {
                path: p.clone(),
                source,
            })?;
            Ok((p.strip_prefix(dir).unwrap_or(p).to_path_buf(), h))
        })
        .collect()
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
