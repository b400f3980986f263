//! The corpus manifest (`manifest.json`), shared by `generate`, the runner
//! and the corpus commands.

use crate::expected::Expected;
use serde::{Deserialize, Serialize};

/// The manifest format this version writes and reads.
pub const FORMAT: &str = "qcow2-conform-corpus/1";

/// Why a manifest cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not a manifest's JSON.
    #[error("manifest: {0}")]
    Json(serde_json::Error),
    /// A manifest of another format.
    #[error("manifest format {0:?} is not supported (expected {FORMAT:?})")]
    Format(String),
}

/// One case: an image file and what a conforming checker must say of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCase {
    /// Stable ID, e.g. `bitmaps.dir.name-unique/0001` or `valid/0003`.
    pub id: String,
    /// Path of the image, relative to the manifest.
    pub file: String,
    pub expected: Expected,
    pub description: String,
    /// Files the image refers to (backing files, an external data file),
    /// relative to the manifest like `file`. A runner copies each beside
    /// its private copy of the image under its path relative to the
    /// image's directory, so that the relative names stored in the image
    /// resolve; every companion must lie under the image's directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub companions: Vec<String>,
    /// The passphrase of an encrypted image (qcow2 `crypt_method` 2,
    /// LUKS), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Why a companion path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompanionError {
    #[error("companion {0:?} is absolute; companions are relative to the manifest")]
    Absolute(String),
    #[error("companion {0:?} contains `..`; companions must stay inside the corpus")]
    ParentDir(String),
    #[error("companion {companion:?} is not under the directory of the image {image:?}")]
    OutsideImageDir { companion: String, image: String },
    #[error("companion {0:?} has the image's own name")]
    IsImage(String),
}

impl ManifestCase {
    /// A case whose image is `images/FILE_NAME` beside the manifest, with
    /// no companions and no secret (what `generate` and `corpus build`
    /// make).
    pub fn in_images(
        id: String,
        file_name: &str,
        expected: Expected,
        description: String,
    ) -> ManifestCase {
        ManifestCase {
            id,
            file: format!("images/{file_name}"),
            expected,
            description,
            companions: Vec::new(),
            secret: None,
        }
    }

    /// Each companion with its path relative to the image's directory
    /// (where a runner puts it beside its copy of the image), or why a
    /// companion path is refused: absolute, with a `..` component, or not
    /// under the image's directory.
    pub fn companion_places(&self) -> Result<Vec<(String, std::path::PathBuf)>, CompanionError> {
        use std::path::{Component, Path};
        let image_dir = Path::new(&self.file).parent().unwrap_or(Path::new(""));
        let mut out = Vec::new();
        for c in &self.companions {
            let p = Path::new(c);
            if p.is_absolute() || c.starts_with('/') {
                return Err(CompanionError::Absolute(c.clone()));
            }
            if p.components()
                .any(|x| !matches!(x, Component::Normal(_) | Component::CurDir))
            {
                return Err(CompanionError::ParentDir(c.clone()));
            }
            let rel = p
                .strip_prefix(image_dir)
                .map_err(|_| CompanionError::OutsideImageDir {
                    companion: c.clone(),
                    image: self.file.clone(),
                })?;
            if rel.as_os_str().is_empty() || p == Path::new(&self.file) {
                return Err(CompanionError::IsImage(c.clone()));
            }
            out.push((c.clone(), rel.to_path_buf()));
        }
        Ok(out)
    }
}

/// How a generated corpus was made, so that it can be made again: the
/// tool and its version, the seed and the arguments that chose the cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// `qcow2-conform VERSION`.
    pub tool: String,
    pub seed: u64,
    /// The arguments that decide the cases (not the output directory).
    pub arguments: Vec<String>,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Set by `generate` (the fixed corpus plan has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_by: Option<Generation>,
    pub cases: Vec<ManifestCase>,
}

impl Manifest {
    pub fn new(cases: Vec<ManifestCase>) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            generated_by: None,
            cases,
        }
    }

    /// Parses a manifest, refusing unknown formats.
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_str(text).map_err(ManifestError::Json)?;
        if m.format != FORMAT {
            return Err(ManifestError::Format(m.format));
        }
        Ok(m)
    }

    /// Stable, pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// `json` (pretty) with every line but the first indented by `n` spaces,
/// to sit inside an enclosing pretty object (a JSON string never holds a
/// raw newline, so every newline is between tokens).
fn indented(json: &str, n: usize) -> String {
    json.replace('\n', &format!("\n{}", " ".repeat(n)))
}

/// Writes a manifest one case at a time, byte for byte as
/// [`Manifest::to_json`] writes the whole: `generate` streams its cases so
/// that its memory does not grow with their number.
pub struct ManifestWriter<W: std::io::Write> {
    out: W,
    cases: u64,
}

impl<W: std::io::Write> ManifestWriter<W> {
    /// Starts the manifest (format, `generated_by`) on `out`.
    pub fn new(mut out: W, generated_by: Option<&Generation>) -> std::io::Result<Self> {
        let json = |e: serde_json::Error| std::io::Error::other(e);
        write!(
            out,
            "{{\n  \"format\": {}",
            serde_json::to_string(FORMAT).map_err(json)?
        )?;
        if let Some(g) = generated_by {
            let g = serde_json::to_string_pretty(g).map_err(json)?;
            write!(out, ",\n  \"generated_by\": {}", indented(&g, 2))?;
        }
        write!(out, ",\n  \"cases\": [")?;
        Ok(ManifestWriter { out, cases: 0 })
    }

    /// Appends one case.
    pub fn push(&mut self, case: &ManifestCase) -> std::io::Result<()> {
        let c = serde_json::to_string_pretty(case).map_err(std::io::Error::other)?;
        let sep = if self.cases == 0 { "" } else { "," };
        write!(self.out, "{sep}\n    {}", indented(&c, 4))?;
        self.cases += 1;
        Ok(())
    }

    /// Ends the manifest; returns the writer (flushed) and the case count.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        if self.cases == 0 {
            writeln!(self.out, "]\n}}")?;
        } else {
            writeln!(self.out, "\n  ]\n}}")?;
        }
        self.out.flush()?;
        Ok((self.out, self.cases))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_manifest_is_the_whole_one() {
        for n in [0, 1, 3] {
            for generated in [false, true] {
                let mut m = Manifest::new(
                    (0..n)
                        .map(|i| case(&format!("images/{i}.qcow2"), &[]))
                        .collect(),
                );
                if generated {
                    m.generated_by = Some(Generation {
                        tool: "t 1".into(),
                        seed: 3,
                        arguments: vec!["--count".into(), "3".into()],
                    });
                }
                let mut w = ManifestWriter::new(Vec::new(), m.generated_by.as_ref()).unwrap();
                for c in &m.cases {
                    w.push(c).unwrap();
                }
                let (bytes, count) = w.finish().unwrap();
                assert_eq!(count, n as u64);
                assert_eq!(String::from_utf8(bytes).unwrap(), m.to_json());
            }
        }
    }

    fn case(file: &str, companions: &[&str]) -> ManifestCase {
        ManifestCase {
            id: "x/1".into(),
            file: file.into(),
            expected: Expected {
                verdict: spec_model::Verdict::Valid,
                rules: vec![],
                bitmaps_extension: spec_model::ExtensionState::Absent,
                bitmaps: None,
            },
            description: String::new(),
            companions: companions.iter().map(|s| s.to_string()).collect(),
            secret: None,
        }
    }

    #[test]
    fn companions_are_placed_relative_to_the_image() {
        let c = case(
            "images/q/top.qcow2",
            &["images/q/mid.qcow2", "images/q/d/base"],
        );
        let places = c.companion_places().unwrap();
        assert_eq!(places[0].1, std::path::PathBuf::from("mid.qcow2"));
        assert_eq!(places[1].1, std::path::PathBuf::from("d/base"));
    }

    #[test]
    fn companions_outside_are_refused() {
        let bad = |c: &str| {
            case("images/q/top.qcow2", &[c])
                .companion_places()
                .unwrap_err()
        };
        assert!(matches!(bad("/etc/passwd"), CompanionError::Absolute(_)));
        assert!(matches!(
            bad("images/q/../../x"),
            CompanionError::ParentDir(_)
        ));
        assert!(matches!(
            bad("images/r/x"),
            CompanionError::OutsideImageDir { .. }
        ));
        assert!(matches!(
            bad("images/q/top.qcow2"),
            CompanionError::IsImage(_)
        ));
    }

    #[test]
    fn empty_companions_and_secret_are_not_written() {
        let json = serde_json::to_string(&case("a", &[])).unwrap();
        assert!(!json.contains("companions") && !json.contains("secret"));
    }
}
