//! An image as the reference model reads it before and after a check
//! changes it: virtual size, verdict, bitmaps-extension state, error
//! rules, and each bitmap's flags, granularity and dirty ranges. The write
//! check ([`super::writes`]) and QEMU's bitmap-operations check
//! ([`super::adapters::qemu::ops`]) compare two of these.

use spec_model::{CheckError, ExtensionState, Model, Severity, Verdict};
use std::path::Path;

/// One bitmap as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelBitmap {
    pub usable: bool,
    pub in_use: bool,
    pub auto: bool,
    pub gbits: u8,
    /// Dirty virtual byte ranges, for usable bitmaps.
    pub ranges: Option<Vec<(u64, u64)>>,
}

/// An image as the model reads it.
#[derive(Debug, Clone)]
pub struct ImageState {
    /// Virtual size in bytes (0 without a header).
    pub size: u64,
    pub verdict: Verdict,
    pub extension: ExtensionState,
    /// Rule IDs of error findings.
    pub error_rules: Vec<String>,
    /// Every bitmap by name, in directory order.
    pub bitmaps: Vec<(String, ModelBitmap)>,
    /// Per bitmap (directory order), its set bits as merged half-open
    /// granule index ranges, for usable bitmaps.
    pub bits: Vec<Option<Vec<(u64, u64)>>>,
    /// Header fields a rewrite may change, as (name, value): `version`,
    /// `cluster_bits`, `size`, `refcount_order`.
    pub header: Vec<(&'static str, u64)>,
}

/// Why the model could not read an image.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    #[error("model: {0}")]
    Model(#[source] CheckError),
}

/// Reads the image at `path` with the model.
pub fn read(path: &Path) -> Result<ImageState, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Open)?;
    let mut model = Model::open(file).map_err(ReadError::Model)?;
    let report = model.report().clone();
    let h = model.analysis().header.as_ref();
    let size = h.map(|h| h.size).unwrap_or(0);
    let header = h
        .map(|h| {
            vec![
                ("version", u64::from(h.version)),
                ("cluster_bits", u64::from(h.cluster_bits)),
                ("size", h.size),
                ("refcount_order", u64::from(h.refcount_order)),
            ]
        })
        .unwrap_or_default();
    let mut bitmaps = Vec::with_capacity(report.bitmaps.len());
    let mut bits = Vec::with_capacity(report.bitmaps.len());
    for (i, b) in report.bitmaps.iter().enumerate() {
        let ranges = if b.usable {
            bits.push(model.set_bit_ranges(i).map_err(ReadError::Model)?);
            model.dirty_ranges(i).map_err(ReadError::Model)?
        } else {
            bits.push(None);
            None
        };
        bitmaps.push((
            b.name.clone(),
            ModelBitmap {
                usable: b.usable,
                in_use: b.flags.in_use,
                auto: b.flags.auto,
                gbits: b.granularity_bits,
                ranges,
            },
        ));
    }
    Ok(ImageState {
        size,
        verdict: report.verdict,
        extension: report.bitmaps_extension,
        error_rules: report
            .rules_with(Severity::Error)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        bitmaps,
        bits,
        header,
    })
}
