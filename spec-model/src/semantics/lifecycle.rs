//! What the image file must say after the program holding it ends: a
//! clean close stores every persistent bitmap (flags and bits exact,
//! `in_use` clear) and drops the others; a crash leaves the bitmaps loaded
//! from the image marked `in_use` (present, well-formed, never to be
//! used) and none of those added since. [`judge_file`] compares what the
//! format model reads from the file with that expectation, and
//! [`Disk::reopened`] is the running state a reopen must start from.

use super::granules::{self, Ranges};
use super::state::{Bitmap, Disk};
use crate::{CheckError, ExtensionState, Model, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek};

/// What the file must hold for one bitmap name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "must", rename_all = "kebab-case")]
pub enum FileBitmap {
    /// Stored cleanly: `in_use` clear, `auto` as given, bits exact outside
    /// `unspecified`.
    Stored {
        gbits: u8,
        auto: bool,
        bits: Ranges,
        unspecified: Ranges,
    },
    /// Present with `in_use` set (contents not judged: unusable).
    InUse { gbits: u8 },
    /// Either present with `in_use` set, or absent.
    InUseOrAbsent { gbits: u8 },
    /// Anything, or absent: a persistent bitmap added while the node was
    /// inactive (the image was not the node's to write).
    Any,
}

/// What the file must say; a name not listed must be absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileExpectation {
    pub size: u64,
    pub bitmaps: BTreeMap<String, FileBitmap>,
}

impl Disk {
    /// The file while the node is inactive, and after it ends inactive
    /// (cleanly or not): the bitmaps the inactivation stored, stored
    /// cleanly; persistent bitmaps added since are not judged.
    fn inactive_file(&self) -> FileExpectation {
        let mut want = FileExpectation {
            size: self.size,
            bitmaps: stored_clean(&self.stored),
        };
        for (n, b) in &self.bitmaps {
            if b.persistent {
                want.bitmaps.entry(n.clone()).or_insert(FileBitmap::Any);
            }
        }
        want
    }

    /// The file while a node reopened read-only holds it, and after it
    /// ends read-only (cleanly or not): what the reopen stored, unchanged
    /// (a persistent bitmap added since is never stored).
    fn frozen_file(&self, frozen: &BTreeMap<String, Bitmap>) -> FileExpectation {
        FileExpectation {
            size: self.size,
            bitmaps: stored_clean(frozen),
        }
    }

    /// The file after a clean close.
    pub fn close(&self) -> FileExpectation {
        if !self.active {
            return self.inactive_file();
        }
        if let Some(frozen) = &self.frozen {
            return self.frozen_file(frozen);
        }
        let bitmaps = stored_clean(&self.bitmaps);
        FileExpectation {
            size: self.size,
            bitmaps,
        }
    }

    /// The file after the holder was killed: every bitmap loaded from the
    /// image and still held is `in_use`; one removed since may be gone or
    /// still `in_use`; bitmaps added since are absent. The virtual size is
    /// the current one (a resize writes the header at once).
    pub fn crash(&self) -> FileExpectation {
        if !self.active {
            return self.inactive_file();
        }
        if let Some(frozen) = &self.frozen {
            return self.frozen_file(frozen);
        }
        let mut bitmaps = BTreeMap::new();
        for n in &self.on_image {
            if let Some(b) = self.bitmaps.get(n) {
                bitmaps.insert(n.clone(), FileBitmap::InUse { gbits: b.gbits });
            }
        }
        for n in &self.removed {
            bitmaps
                .entry(n.clone())
                .or_insert(FileBitmap::InUseOrAbsent { gbits: 0 });
        }
        FileExpectation {
            size: self.size,
            bitmaps,
        }
    }
}

/// The persistent bitmaps of `bitmaps` as a clean store leaves them.
fn stored_clean(bitmaps: &BTreeMap<String, Bitmap>) -> BTreeMap<String, FileBitmap> {
    bitmaps
        .iter()
        .filter(|(_, b)| b.persistent)
        .map(|(n, b)| {
            let f = if b.inconsistent {
                FileBitmap::InUse { gbits: b.gbits }
            } else {
                FileBitmap::Stored {
                    gbits: b.gbits,
                    auto: b.enabled,
                    bits: b.bits.clone(),
                    unspecified: b.unspecified.clone(),
                }
            };
            (n.clone(), f)
        })
        .collect()
}

/// One bitmap as the format model read it from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBitmapRead {
    pub gbits: u8,
    pub in_use: bool,
    pub auto: bool,
    pub usable: bool,
    /// Set granules, for usable bitmaps.
    pub bits: Option<Ranges>,
}

/// A file as the format model read it.
#[derive(Debug, Clone)]
pub struct FileRead {
    pub size: u64,
    /// The header's version (2 or 3; 0 when the header did not parse).
    pub version: u32,
    /// log2 of the cluster size (16 when the header did not parse).
    pub cluster_bits: u8,
    pub verdict: Verdict,
    pub extension: ExtensionState,
    pub error_rules: Vec<String>,
    pub bitmaps: BTreeMap<String, FileBitmapRead>,
}

impl FileRead {
    /// Reads an image with the format model.
    pub fn read<R: Read + Seek>(image: R) -> Result<FileRead, CheckError> {
        let mut model = Model::open(image)?;
        let report = model.report().clone();
        let header = model.analysis().header.as_ref();
        let (size, version) = header.map_or((0, 0), |h| (h.size, h.version));
        let cluster_bits = header.map_or(16, |h| h.cluster_bits.min(63) as u8);
        let mut bitmaps = BTreeMap::new();
        for (i, b) in report.bitmaps.iter().enumerate() {
            let bits = if b.usable {
                model.set_bit_ranges(i)?
            } else {
                None
            };
            bitmaps.insert(
                b.name.clone(),
                FileBitmapRead {
                    gbits: b.granularity_bits,
                    in_use: b.flags.in_use,
                    auto: b.flags.auto,
                    usable: b.usable,
                    bits,
                },
            );
        }
        let error_rules = report
            .findings
            .iter()
            .filter(|f| f.severity == crate::Severity::Error)
            .map(|f| f.rule.to_string())
            .collect();
        Ok(FileRead {
            size,
            version,
            cluster_bits,
            verdict: report.verdict,
            extension: report.bitmaps_extension,
            error_rules,
            bitmaps,
        })
    }
}

/// Every way `file` differs from `want` (empty: it is what the semantics
/// require). The file must conform; while it holds bitmaps its extension
/// must be consistent; `in_use` bitmaps must be present and unusable.
pub fn judge_file(want: &FileExpectation, file: &FileRead) -> Vec<String> {
    let mut p = Vec::new();
    if file.verdict == Verdict::Invalid {
        p.push(format!(
            "the image does not conform: {}",
            file.error_rules.join(", ")
        ));
        return p;
    }
    if file.size != want.size {
        p.push(format!(
            "virtual size {} instead of {}",
            file.size, want.size
        ));
    }
    if !file.bitmaps.is_empty() && file.extension != ExtensionState::Consistent {
        p.push(format!(
            "the bitmaps extension is {:?}: every bitmap is lost",
            file.extension
        ));
        return p;
    }
    for (name, w) in &want.bitmaps {
        let got = file.bitmaps.get(name);
        match (w, got) {
            (FileBitmap::InUseOrAbsent { .. } | FileBitmap::Any, None) => {}
            (FileBitmap::Any, Some(_)) => {}
            (_, None) => p.push(format!("bitmap {name:?} is missing")),
            (FileBitmap::InUse { gbits } | FileBitmap::InUseOrAbsent { gbits }, Some(g)) => {
                if !g.in_use || g.usable {
                    p.push(format!(
                        "bitmap {name:?}: in_use={} usable={}, expected in_use and unusable",
                        g.in_use, g.usable
                    ));
                } else if *gbits != 0 && g.gbits != *gbits {
                    p.push(format!(
                        "bitmap {name:?}: granularity 2^{} instead of 2^{gbits}",
                        g.gbits
                    ));
                }
            }
            (
                FileBitmap::Stored {
                    gbits,
                    auto,
                    bits,
                    unspecified,
                },
                Some(g),
            ) => {
                if g.in_use || g.auto != *auto || g.gbits != *gbits || !g.usable {
                    p.push(format!(
                        "bitmap {name:?}: in_use={} auto={} granularity 2^{} usable={}, expected in_use=false auto={auto} granularity 2^{gbits} usable=true",
                        g.in_use, g.auto, g.gbits, g.usable
                    ));
                    continue;
                }
                let got = g.bits.clone().unwrap_or_default();
                if granules::subtract(&got, unspecified) != *bits {
                    p.push(format!(
                        "bitmap {name:?}: set granules {} instead of {}",
                        show(&got),
                        show(bits)
                    ));
                }
            }
        }
    }
    for name in file.bitmaps.keys() {
        if !want.bitmaps.contains_key(name) {
            p.push(format!("bitmap {name:?} is present but must be absent"));
        }
    }
    p
}

/// Granule ranges in messages: the first six.
pub fn show(r: &[(u64, u64)]) -> String {
    let mut s: Vec<String> = r.iter().take(6).map(|(a, b)| format!("{a}..{b}")).collect();
    if r.len() > 6 {
        s.push(format!("(+{} more)", r.len() - 6));
    }
    format!("[{}]", s.join(", "))
}

impl Disk {
    /// The running state a program opening `file` must start from: each
    /// bitmap loaded as the file says (an `in_use` one inconsistent).
    pub fn reopened(file: &FileRead) -> Disk {
        let disk = Disk::opened(
            file.size,
            file.bitmaps.iter().map(|(n, b)| {
                (
                    n.clone(),
                    Bitmap::loaded(
                        b.gbits,
                        b.auto,
                        b.in_use || !b.usable,
                        b.bits.clone().unwrap_or_default(),
                    ),
                )
            }),
        );
        disk.with_version(file.version)
            .with_cluster_bits(file.cluster_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::Op;
    use super::*;

    fn read(size: u64, bms: &[(&str, FileBitmapRead)]) -> FileRead {
        FileRead {
            size,
            version: 3,
            cluster_bits: 16,
            verdict: Verdict::Valid,
            extension: ExtensionState::Consistent,
            error_rules: vec![],
            bitmaps: bms
                .iter()
                .map(|(n, b)| (n.to_string(), b.clone()))
                .collect(),
        }
    }

    fn stored(bits: Ranges) -> FileBitmapRead {
        FileBitmapRead {
            gbits: 16,
            in_use: false,
            auto: true,
            usable: true,
            bits: Some(bits),
        }
    }

    #[test]
    fn close_stores_persistent_bitmaps_only() {
        let mut d = Disk::one_loaded("old", false);
        d.apply(&Op::add("tmp", 16, false, false));
        d.apply(&Op::Write {
            offset: 65_536,
            len: 1,
        });
        let want = d.close();
        assert_eq!(want.bitmaps.len(), 1);
        assert!(judge_file(&want, &read(1 << 20, &[("old", stored(vec![(0, 2)]))])).is_empty());
        let p = judge_file(&want, &read(1 << 20, &[("old", stored(vec![(0, 1)]))]));
        assert_eq!(
            p,
            vec!["bitmap \"old\": set granules [0..1] instead of [0..2]".to_string()]
        );
        let p = judge_file(
            &want,
            &read(
                1 << 20,
                &[("old", stored(vec![(0, 2)])), ("tmp", stored(vec![]))],
            ),
        );
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn crash_marks_loaded_bitmaps_in_use_and_drops_added_ones() {
        let mut d = Disk::opened(
            1 << 20,
            [
                (
                    "old".to_string(),
                    Bitmap::loaded(16, true, false, vec![(0, 1)]),
                ),
                ("gone".to_string(), Bitmap::loaded(16, false, false, vec![])),
            ],
        );
        d.apply(&Op::add("new", 16, true, false));
        d.apply(&Op::Remove {
            name: "gone".into(),
        });
        let want = d.crash();
        let in_use = FileBitmapRead {
            gbits: 16,
            in_use: true,
            auto: true,
            usable: false,
            bits: None,
        };
        assert!(judge_file(&want, &read(1 << 20, &[("old", in_use.clone())])).is_empty());
        assert!(judge_file(
            &want,
            &read(
                1 << 20,
                &[("old", in_use.clone()), ("gone", in_use.clone())]
            )
        )
        .is_empty());
        assert_eq!(
            judge_file(&want, &read(1 << 20, &[("old", stored(vec![(0, 1)]))])).len(),
            1
        );
        assert_eq!(
            judge_file(
                &want,
                &read(1 << 20, &[("old", in_use.clone()), ("new", in_use.clone())])
            )
            .len(),
            1
        );
        let again = Disk::reopened(&read(1 << 20, &[("old", in_use)]));
        assert!(again.bitmaps["old"].inconsistent && !again.bitmaps["old"].usable());
    }
}
