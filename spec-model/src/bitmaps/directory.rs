//! Reading the bitmap directory entry by entry (spec "Bitmap directory").
//!
//! `bitmap_directory_size` is a claim, and so is `nb_bitmaps`; only the
//! entries themselves say how many bytes they take (24 fixed bytes, the
//! extra data, the name, zero padding to a multiple of 8). The model reads
//! the directory as far as its `nb_bitmaps` entries reach and no further,
//! so a size field that the entries cannot fill (a terabyte for two
//! entries, which can take at most [`MAX_ENTRY_LENGTH`] bytes each) is
//! judged by its rule (`bitmaps.ext.directory-size`) without reading or
//! allocating what it claims. What is read is held within
//! [`MAX_STRUCTURE`](crate::io::MAX_STRUCTURE), as any structure is.

use crate::fields::bitmap_entry as entry;
use crate::io::{reserve, CheckError, Image, CHUNK, MAX_STRUCTURE};
use std::io::{Read, Seek};

/// The longest one directory entry can be: the fixed part, the largest
/// extra data (`extra_data_size` is 32 bits) and the longest name
/// (`name_size` is 16 bits), padded to a multiple of 8.
pub const MAX_ENTRY_LENGTH: u64 = entry::entry_length(u32::MAX as u64, u16::MAX as u64);

/// The most bytes `nb_bitmaps` entries can fill.
pub fn most_filled(nb_bitmaps: u32) -> u64 {
    u64::from(nb_bitmaps).saturating_mul(MAX_ENTRY_LENGTH)
}

/// The first bytes of the directory at `offset` (of `size` claimed bytes,
/// which the caller has checked lie in the file): exactly as many as the
/// first `nb_bitmaps` entries take, or up to `size` when an entry runs
/// past it. The directory is read [`CHUNK`] bytes at a time as the
/// entries need them.
pub fn read_entries<R: Read + Seek>(
    img: &mut Image<R>,
    offset: u64,
    size: u64,
    nb_bitmaps: u32,
) -> Result<Vec<u8>, CheckError> {
    let mut buf = Vec::new();
    let mut pos = 0u64;
    // Where the entries end (or, when one runs past `size`, `size`).
    let mut reached = 0u64;
    for _ in 0..nb_bitmaps {
        if pos >= size {
            break;
        }
        let fixed = pos + entry::FIXED_LENGTH as u64;
        fill(img, &mut buf, offset, size, fixed.min(size))?;
        if fixed > size {
            reached = size;
            break;
        }
        let raw = &buf[pos as usize..];
        let len = entry::entry_length(entry::EXTRA_DATA_SIZE.get(raw), entry::NAME_SIZE.get(raw));
        fill(img, &mut buf, offset, size, (pos + len).min(size))?;
        if pos + len > size {
            reached = size;
            break;
        }
        pos += len;
        reached = pos;
    }
    // Chunks read past the entries are no part of the directory.
    buf.truncate(reached as usize);
    Ok(buf)
}

/// Extends `buf` (the directory's first bytes) to at least `end` bytes,
/// reading at least a chunk at a time, never past `size`.
fn fill<R: Read + Seek>(
    img: &mut Image<R>,
    buf: &mut Vec<u8>,
    offset: u64,
    size: u64,
    end: u64,
) -> Result<(), CheckError> {
    let have = buf.len() as u64;
    if have >= end {
        return Ok(());
    }
    let want = end.max(have.saturating_add(CHUNK)).min(size);
    if want > MAX_STRUCTURE {
        return Err(CheckError::Limit {
            structure: "bitmap directory",
            offset,
            size: want,
            limit: MAX_STRUCTURE,
        });
    }
    reserve(buf, "bitmap directory", offset, want - have)?;
    let more = img
        .read_structure("bitmap directory", offset + have, want - have)?
        .ok_or_else(|| CheckError::Io {
            offset: offset + have,
            source: std::io::ErrorKind::UnexpectedEof.into(),
        })?;
    buf.extend_from_slice(&more);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_entry_is_the_largest_fields_padded() {
        // 24 + (2^32 - 1) + (2^16 - 1) = 4,295,032,854, padded to 8.
        assert_eq!(MAX_ENTRY_LENGTH, 4_295_032_856);
        assert_eq!(most_filled(2), 8_590_065_712);
        // 2^32 - 1 entries could fill more than a u64 counts: saturated.
        assert_eq!(most_filled(u32::MAX), u64::MAX);
    }
}
