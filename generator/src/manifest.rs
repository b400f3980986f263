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
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub cases: Vec<ManifestCase>,
}

impl Manifest {
    pub fn new(cases: Vec<ManifestCase>) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
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
