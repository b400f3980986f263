//! What guest data must read as: the model's view of an image at the
//! sample ranges ([`Expectation`]), with the allocated clusters to sample
//! asked of [`spec_model::guest::allocated_clusters`], and how a range an
//! implementation read differently is described ([`describe_difference`]).

use super::sampling::sample_ranges;
use crate::runner::corpus::image_layers::{self, LayersError};
use spec_model::guest::{allocated_clusters, GuestError};
use spec_model::io::Image;
use std::fmt::Display;
use std::fs::File;
use std::path::Path;

/// At most this many L2 tables are read to find allocated clusters.
const MAX_L2_TABLES: usize = 256;

/// The model's view of an image: header, sample ranges and their data
/// (an error where the model cannot read, with why).
pub(crate) struct Expectation {
    pub size: Option<u64>,
    pub ranges: Vec<(u64, u64)>,
    pub data: Vec<Result<Vec<u8>, GuestError>>,
    pub notes: Vec<String>,
    /// Where a backing file shorter than the disk ends, when there is one
    /// (`guest.short-backing-zeros`).
    pub backing_end: Option<u64>,
    /// Per range: it lies wholly past [`Expectation::backing_end`] where
    /// the image allocates nothing (the model reads zeros there).
    pub past_backing: Vec<bool>,
}

impl Expectation {
    /// Nothing to compare, and why.
    fn nothing(why: impl Display) -> Expectation {
        Expectation {
            size: None,
            ranges: Vec::new(),
            data: Vec::new(),
            notes: vec![format!("no guest data compared: {why}")],
            backing_end: None,
            past_backing: Vec::new(),
        }
    }
}

/// What the model reads at the sample ranges of `image`.
pub(crate) fn expectation(image: &Path) -> Expectation {
    let file = match File::open(image) {
        Ok(f) => f,
        Err(e) => return Expectation::nothing(e),
    };
    // Through the backing chain and the data file beside the image.
    let mut layered = match image_layers::open(image) {
        Ok(l) => l,
        Err(LayersError::NoHeader(_)) => {
            return Expectation::nothing("the model finds no qcow2 header")
        }
        Err(e) => return Expectation::nothing(e),
    };
    let Some(h) = layered.model.analysis().header.clone() else {
        return Expectation::nothing("the model finds no qcow2 header");
    };
    let allocated = Image::new(&file)
        .and_then(|mut img| allocated_clusters(&mut img, &h, MAX_L2_TABLES))
        .unwrap_or_default();
    let backing_end = layered.backing_size().filter(|&b| b < h.size);
    let mut ranges = sample_ranges(h.size, h.cluster_size(), &allocated);
    if let Some(end) = backing_end {
        // The first bytes past the backing file's end, where a reader
        // that stops at it goes wrong.
        ranges.push((end, (h.size - end).min(4096)));
        ranges.sort_unstable();
        ranges.dedup();
    }
    let cluster = h.cluster_size();
    let past_backing = ranges
        .iter()
        .map(|&(o, l)| {
            backing_end.is_some_and(|end| o >= end)
                && !allocated
                    .iter()
                    .any(|&c| c < o + l && c.saturating_add(cluster) > o)
        })
        .collect();
    let data = ranges
        .iter()
        .map(|&(o, l)| {
            let mut buf = vec![0u8; l as usize];
            layered.read(o, &mut buf).map(|()| buf)
        })
        .collect();
    Expectation {
        size: Some(h.size),
        ranges,
        data,
        notes: Vec::new(),
        backing_end,
        past_backing,
    }
}

/// Where two buffers first differ, how many bytes differ, and a message.
pub(crate) fn describe_difference(
    offset: u64,
    got: &[u8],
    want: &[u8],
    who: &str,
) -> Option<String> {
    let first = got.iter().zip(want).position(|(a, b)| a != b)?;
    let count = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let end = (first + 8).min(got.len());
    Some(format!(
        "guest data at virtual offset {} ({:#x}) differs: {who} read {} where the model reads {} ({count} of the {} bytes of range {:#x}+{:#x} differ)",
        offset + first as u64,
        offset + first as u64,
        hex::encode(&got[first..end]),
        hex::encode(&want[first..end]),
        got.len(),
        offset,
        got.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::describe_difference;

    #[test]
    fn differences() {
        assert_eq!(describe_difference(0, b"abc", b"abc", "x"), None);
        let d = describe_difference(4096, b"abd", b"abc", "x").unwrap();
        assert!(d.contains("offset 4098 (0x1002)"), "{d}");
        assert!(d.contains("1 of the 3 bytes"), "{d}");
    }
}
