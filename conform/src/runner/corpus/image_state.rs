//! An image as the reference model reads it before and after a check
//! changes it: virtual size, verdict, bitmaps-extension state, error
//! rules, and each bitmap's flags, granularity and dirty ranges. The write
//! check ([`crate::runner::judge::write_check`]) and QEMU's bitmap-operations check
//! ([`crate::runner::adapters::qemu::ops`]) compare two of these.
//!
//! Also how every image is opened for the model ([`open_model`]): only a
//! regular file, opened non-blocking (a FIFO, socket, device or directory
//! is refused at once, never waited on), with its data extents
//! (`SEEK_DATA`/`SEEK_HOLE`) so that the model skips a sparse file's holes.

use spec_model::{CheckError, ExtensionState, Model, Severity, Verdict};
use std::fs::File;
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
    /// The header's `autoclear_features` (0 for version 2 or no header).
    pub autoclear: u64,
    /// What a writer must keep as it is (`keep.unknown-as-is`), as (what,
    /// bytes): every header extension of a type the spec does not define,
    /// and every bitmap's extra data.
    pub unknown: Vec<(String, Vec<u8>)>,
    /// The header's `crypt_method` is not 0: the payload is encrypted.
    pub encrypted: bool,
}

/// Why the model could not read an image.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("model: {0}")]
    Model(#[source] CheckError),
}

/// Data extents listed at most; past them the rest of the file counts as
/// data (a file fragmented further is read, not skipped).
const MAX_EXTENTS: usize = 1 << 16;

/// Opens `path` for reading if it is a regular file, without waiting
/// ([`crate::runner::corpus::input::open_regular`]).
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    crate::runner::corpus::input::open_regular(path).map_err(|e| match e {
        crate::runner::corpus::input::InputError::Open { source, .. } => ReadError::Open(source),
        e => ReadError::NotRegular(e.irregular_kind().unwrap_or("not a regular file")),
    })
}

/// The data extents of `file` (`len` bytes) as `SEEK_DATA`/`SEEK_HOLE`
/// report them; `None` when the file system cannot say.
pub fn data_extents(file: &File, len: u64) -> Option<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        if out.len() >= MAX_EXTENTS {
            out.push((pos, len));
            break;
        }
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return None,
        };
        let hole = seek(file, SeekFrom::Hole(data)).ok()?.min(len);
        if hole <= data {
            return None;
        }
        out.push((data, hole));
        pos = hole;
    }
    Some(out)
}

/// Opens the image at `path` for the model ([`open_regular`]), telling it
/// the file's holes ([`data_extents`]).
pub fn open_model(path: &Path) -> Result<Model<File>, ReadError> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(ReadError::Open)?.len();
    match data_extents(&file, len) {
        Some(extents) => Model::open_with_data_extents(file, extents),
        None => Model::open(file),
    }
    .map_err(ReadError::Model)
}

/// Reads the image at `path` with the model.
pub fn read(path: &Path) -> Result<ImageState, ReadError> {
    let mut model = open_model(path)?;
    let report = model.report().clone();
    let h = model.analysis().header.as_ref();
    let size = h.map(|h| h.size).unwrap_or(0);
    let autoclear = h.map_or(0, |h| h.autoclear_features);
    let encrypted = h.is_some_and(|h| h.crypt_method != 0);
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
    let mut unknown: Vec<(String, Vec<u8>)> = model
        .analysis()
        .extensions
        .iter()
        .filter(|x| x.type_name == "unknown")
        .map(|x| {
            (
                format!("unknown header extension {:#010x}", x.ext_type),
                x.data.clone(),
            )
        })
        .collect();
    unknown.extend(
        model
            .analysis()
            .entries
            .iter()
            .filter(|e| e.extra_data_size > 0)
            .map(|e| {
                let name = crate::runner::text::short(&String::from_utf8_lossy(&e.name));
                (
                    format!("unknown extra data of bitmap {name}"),
                    e.extra_data.clone(),
                )
            }),
    );
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
        autoclear,
        unknown,
        encrypted,
    })
}

/// The first 512-aligned file offset of `image` holding `block` (512
/// bytes), read in 1 MiB pieces.
pub fn find_block(image: &Path, block: &[u8]) -> Option<u64> {
    use std::io::Read;
    let mut f = open_regular(image).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut base = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(_) => return None,
            }
        }
        if let Some(i) = buf[..filled].chunks_exact(512).position(|c| c == block) {
            return Some(base + i as u64 * 512);
        }
        if filled < buf.len() {
            return None;
        }
        base += filled as u64;
    }
}
