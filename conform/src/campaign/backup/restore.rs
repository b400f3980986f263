//! A backup chain read back and restored without QEMU: each target image
//! is read by the format model (its allocated guest clusters, data,
//! zero-flagged and compressed alike, and what they read as), the full
//! backup copied whole, each incremental's clusters laid over it in
//! order, and the result compared byte for byte with the disk as it was.

pub use crate::runner::adapters::qemu_live::backup::Extents;
use spec_model::guest::{allocated_clusters, GuestError};
use spec_model::io::Image;
use spec_model::semantics::granules::{self, Ranges};
use spec_model::{CheckError, Model};
use std::fs::File;
use std::path::{Path, PathBuf};

/// At most this many L2 tables are followed in a backup image.
const MAX_L2_TABLES: usize = 4096;

/// Why a backup image could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the model cannot read {}: {source}", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: CheckError,
    },
    #[error("the model cannot read the guest data of {}: {source}", path.display())]
    Guest {
        path: PathBuf,
        #[source]
        source: GuestError,
    },
    #[error("{} is not a qcow2 image", path.display())]
    NoHeader { path: PathBuf },
}

/// The clusters a backup image holds, with the data a reader sees in
/// them, clipped to `size`.
pub fn image_extents(path: &Path) -> Result<Extents, RestoreError> {
    let open = |p: &Path| {
        File::open(p).map_err(|source| RestoreError::Open {
            path: p.to_owned(),
            source,
        })
    };
    let model_err = |source| RestoreError::Model {
        path: path.to_owned(),
        source,
    };
    let mut model = Model::open(open(path)?).map_err(model_err)?;
    let h = model
        .analysis()
        .header
        .clone()
        .ok_or_else(|| RestoreError::NoHeader {
            path: path.to_owned(),
        })?;
    let file = open(path)?;
    let clusters = Image::new(&file)
        .and_then(|mut img| allocated_clusters(&mut img, &h, MAX_L2_TABLES))
        .map_err(model_err)?;
    let cs = h.cluster_size();
    let mut out: Extents = Vec::with_capacity(clusters.len());
    for c in clusters {
        let n = cs.min(h.size - c);
        let mut buf = vec![0u8; n as usize];
        model
            .read_guest(c, &mut buf)
            .map_err(|source| RestoreError::Guest {
                path: path.to_owned(),
                source,
            })?;
        out.push((c, buf));
    }
    Ok(out)
}

/// Lays `extents` over `disk` (a restore step).
pub fn apply(disk: &mut [u8], extents: &Extents) {
    for (at, data) in extents {
        let start = (*at as usize).min(disk.len());
        let end = (start + data.len()).min(disk.len());
        disk[start..end].copy_from_slice(&data[..end - start]);
    }
}

/// The byte ranges `extents` cover, merged.
pub fn covered(extents: &Extents) -> Ranges {
    granules::merge(
        extents
            .iter()
            .map(|(at, d)| (*at, at + d.len() as u64))
            .collect(),
    )
}

/// The bytes of `must` that `extents` do not cover.
pub fn missing(must: &[(u64, u64)], extents: &Extents) -> Ranges {
    granules::subtract(must, &covered(extents))
}

/// Where `got` first differs from `want`, and how many bytes differ.
pub fn difference(got: &[u8], want: &[u8]) -> Option<(u64, u64)> {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let count = got.iter().zip(want).filter(|(a, b)| a != b).count() as u64
        + got.len().abs_diff(want.len()) as u64;
    match first {
        Some(i) => Some((i as u64, count)),
        None if got.len() != want.len() => Some((got.len().min(want.len()) as u64, count)),
        None => None,
    }
}

/// Byte ranges as `[a, b) ...` for messages (at most 8 shown).
pub fn show(r: &[(u64, u64)]) -> String {
    let mut s: Vec<String> = r
        .iter()
        .take(8)
        .map(|(a, b)| format!("[{a:#x}, {b:#x})"))
        .collect();
    if r.len() > 8 {
        s.push(format!("and {} more", r.len() - 8));
    }
    s.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_arithmetic() {
        let mut d = vec![0u8; 8];
        apply(&mut d, &vec![(2, vec![1, 1]), (7, vec![5, 5])]);
        assert_eq!(d, [0, 0, 1, 1, 0, 0, 0, 5]);
        let x = vec![(0, vec![0; 4]), (8, vec![0; 4])];
        assert_eq!(covered(&x), vec![(0, 4), (8, 12)]);
        assert_eq!(missing(&[(2, 10)], &x), vec![(4, 8)]);
        assert_eq!(difference(b"abc", b"abc"), None);
        assert_eq!(difference(b"abd", b"abc"), Some((2, 1)));
        assert_eq!(difference(b"ab", b"abc"), Some((2, 1)));
    }
}
