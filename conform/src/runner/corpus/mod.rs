//! The corpus a run reads: its manifest, private copies of its images
//! ([`sparse_copy`]), and a fingerprint of every file so a run can prove
//! it changed nothing.

pub mod image_layers;
pub mod image_state;
pub mod input;
pub mod references;

pub use generator::files::sparse_copy;
use generator::files::{sha256_reader, Hashing};
use generator::manifest::ManifestError;
use generator::{Manifest, ManifestCase};
use input::InputError;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Why a corpus cannot be read or hashed.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read the manifest")]
    ReadManifest(#[source] InputError),
    #[error("{}: {error}", path.display())]
    Manifest { path: PathBuf, error: ManifestError },
    #[error("case {case}: image {} does not exist", path.display())]
    MissingImage { case: String, path: PathBuf },
    #[error("case {case}: image {file:?}: {error}")]
    Image {
        case: String,
        file: String,
        #[source]
        error: InputError,
    },
    #[error("case {case}: {error}")]
    Companion {
        case: String,
        error: generator::manifest::CompanionError,
    },
    #[error("case {case}: companion {file:?}: {error}")]
    CompanionFile {
        case: String,
        file: String,
        #[source]
        error: InputError,
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
    #[error("cannot fingerprint the corpus")]
    Entry(#[source] InputError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads `DIR/manifest.json` (a regular file within
/// [`input::MANIFEST_CAP`]) and checks every path it names: each image is
/// a regular file resolved beneath `dir` ([`input::open_beneath`]: no
/// absolute path, no `..`, no symbolic link leading out of the corpus),
/// and every companion stays inside the corpus under its image's
/// directory (a missing companion file is the case's own `error` outcome
/// at run time, not a load failure; one that exists must resolve beneath
/// `dir` as an image does).
pub fn load(dir: &Path) -> Result<Manifest, CorpusError> {
    let path = dir.join("manifest.json");
    let text = input::open_beneath(dir, Path::new("manifest.json"))
        .and_then(|f| input::read_file_capped(f, &path, input::MANIFEST_CAP, "a manifest"))
        .and_then(|b| input::utf8(b, &path))
        .map_err(CorpusError::ReadManifest)?;
    let m = match Manifest::from_json(&text) {
        Ok(m) => m,
        Err(error) => return Err(CorpusError::Manifest { path, error }),
    };
    for c in &m.cases {
        check_case_files(dir, c)?;
    }
    Ok(m)
}

/// The checks [`load`] makes on one case's image and companions.
pub fn check_case_files(dir: &Path, c: &ManifestCase) -> Result<(), CorpusError> {
    match input::open_beneath(dir, Path::new(&c.file)) {
        Ok(_) => {}
        Err(e) if e.open_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
            let case = c.id.clone();
            let path = dir.join(&c.file);
            return Err(CorpusError::MissingImage { case, path });
        }
        Err(error) => {
            return Err(CorpusError::Image {
                case: c.id.clone(),
                file: c.file.clone(),
                error,
            })
        }
    }
    if let Err(error) = c.companion_places() {
        let case = c.id.clone();
        return Err(CorpusError::Companion { case, error });
    }
    for f in &c.companions {
        match input::open_beneath(dir, Path::new(f)) {
            Ok(_) => {}
            Err(e) if e.open_error().is_some() || e.irregular_kind().is_some() => {}
            Err(error) => {
                return Err(CorpusError::CompanionFile {
                    case: c.id.clone(),
                    file: f.clone(),
                    error,
                })
            }
        }
    }
    Ok(())
}

/// What a fingerprint records of an entry that is not a regular file: a
/// symbolic link by its target (never followed: what it points to inside
/// the corpus is fingerprinted where it lies, and [`load`] refuses a case
/// whose path leads out), anything else by its type.
fn other_entry(path: &Path, t: std::fs::FileType) -> Result<String, CorpusError> {
    use sha2::Digest;
    if t.is_symlink() {
        let target = std::fs::read_link(path).map_err(|source| CorpusError::Hash {
            path: path.to_owned(),
            source,
        })?;
        let h = sha2::Sha256::digest(target.as_os_str().as_encoded_bytes());
        return Ok(format!("symlink:{}", hex::encode(h)));
    }
    Ok(format!("special:{}", input::kind(t)))
}

/// Every entry under `dir` (recursively), relative path -> its
/// fingerprint: a regular file's SHA-256 ([`Hashing::Fingerprint`], the
/// file opened beneath `dir` without waiting), a symbolic link's target
/// and any other entry's type ([`other_entry`]). Directories are walked,
/// symbolic links are not: a corpus whose `images/` is a link to a
/// directory inside it is fingerprinted through the directory itself, and
/// retargeting a link shows as a change.
pub fn hash_tree(dir: &Path) -> Result<BTreeMap<PathBuf, String>, CorpusError> {
    let mut files = Vec::new();
    let mut others = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let list = std::fs::read_dir(&d).map_err(|source| CorpusError::List {
            path: d.clone(),
            source,
        })?;
        for e in list {
            let e = e?;
            let t = e.file_type()?;
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap_or(&e.path())
                .to_path_buf();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                files.push(rel);
            } else {
                others.insert(rel, other_entry(&e.path(), t)?);
            }
        }
    }
    let mut out: BTreeMap<PathBuf, String> = files
        .par_iter()
        .map(|rel| {
            let f = input::open_beneath(dir, rel).map_err(CorpusError::Entry)?;
            let h = sha256_reader(f, Hashing::Fingerprint).map_err(|source| CorpusError::Hash {
                path: dir.join(rel),
                source,
            })?;
            Ok((rel.clone(), h))
        })
        .collect::<Result<_, CorpusError>>()?;
    out.extend(others);
    Ok(out)
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
