//! Bounded reads from the image under test. Every read is checked against
//! the file's length first, so no buffer is ever larger than the file, and
//! against the model's limits ([`MAX_STRUCTURE`]), so that no size field
//! can make it allocate more than that in a sparse file whose apparent
//! length is huge. Buffers are reserved fallibly: a failed reservation is
//! a [`CheckError::Limit`], never an abort. Large tables are read in
//! chunks ([`Chunks`]); the holes of a sparse file, when the caller names
//! its data extents ([`Image::with_data_extents`]), are not read at all.

use std::io::{Read, Seek, SeekFrom};

/// Why the check itself could not run (as opposed to a finding).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// A structure the file claims is larger than the model can check
    /// within its memory limit (or the memory for it could not be had).
    #[error(
        "{structure} at {offset:#x} ({size} bytes) is beyond the model's limit of {limit} bytes"
    )]
    Limit {
        structure: &'static str,
        offset: u64,
        size: u64,
        limit: u64,
    },
    /// A structure the file claims has more entries than the model keeps.
    #[error("{structure} at {offset:#x} has more than {limit} entries, beyond the model's limit")]
    TooMany {
        structure: &'static str,
        offset: u64,
        limit: u64,
    },
}

/// The largest structure the model reads into memory at once, or keeps:
/// 256 MiB (QEMU itself refuses bitmap directories over 64 MiB and bitmap
/// tables over 1 GiB; tables larger than this are read in chunks where
/// the model does not keep them).
pub const MAX_STRUCTURE: u64 = 256 << 20;

/// The most that the structures the model keeps for later (bitmap tables,
/// the snapshot list) may take together: 512 MiB.
pub const MAX_RETAINED: u64 = 512 << 20;

/// Bytes read at a time by [`Chunks`] (a multiple of every table entry's
/// width).
pub const CHUNK: u64 = 1 << 20;

/// A zeroed buffer of `len` bytes for `structure` at `offset`, reserved
/// fallibly and refused past [`MAX_STRUCTURE`].
pub fn zeroed(structure: &'static str, offset: u64, len: u64) -> Result<Vec<u8>, CheckError> {
    let mut buf = Vec::new();
    reserve(&mut buf, structure, offset, len)?;
    buf.resize(len as usize, 0);
    Ok(buf)
}

/// Reserves room for `len` more elements in `buf` for `structure` at
/// `offset`, fallibly, refusing more than [`MAX_STRUCTURE`] bytes.
pub fn reserve<T>(
    buf: &mut Vec<T>,
    structure: &'static str,
    offset: u64,
    len: u64,
) -> Result<(), CheckError> {
    let bytes = len.saturating_mul(std::mem::size_of::<T>().max(1) as u64);
    let limit = |limit| CheckError::Limit {
        structure,
        offset,
        size: bytes,
        limit,
    };
    if bytes > MAX_STRUCTURE {
        return Err(limit(MAX_STRUCTURE));
    }
    buf.try_reserve_exact(len as usize)
        .map_err(|_| limit(bytes.saturating_sub(1)))
}

/// The image file: any `Read + Seek`, with its length known up front.
pub struct Image<R> {
    inner: R,
    len: u64,
    /// The file's data extents, sorted and disjoint, when the caller knows
    /// them (`None`: all of the file may hold data).
    data: Option<Vec<(u64, u64)>>,
}

impl<R: Read + Seek> Image<R> {
    /// Wraps a reader, measuring its length by seeking to the end.
    pub fn new(mut inner: R) -> Result<Self, CheckError> {
        let len = inner
            .seek(SeekFrom::End(0))
            .map_err(|source| CheckError::Io { offset: 0, source })?;
        Ok(Image {
            inner,
            len,
            data: None,
        })
    }

    /// Wraps a reader whose data lies only in `extents` (half-open byte
    /// ranges, e.g. from `SEEK_DATA`/`SEEK_HOLE`): everything else reads
    /// as zeros and is never read. The extents are sorted and merged here.
    pub fn with_data_extents(inner: R, extents: Vec<(u64, u64)>) -> Result<Self, CheckError> {
        let mut img = Image::new(inner)?;
        img.data = Some(crate::semantics::granules::merge(extents));
        Ok(img)
    }

    /// True when the caller said that `[offset, offset + length)` lies in a
    /// hole: it reads as zeros.
    pub fn is_hole(&self, offset: u64, length: u64) -> bool {
        let Some(data) = &self.data else {
            return false;
        };
        let end = offset.saturating_add(length);
        let i = data.partition_point(|&(_, b)| b <= offset);
        data.get(i).is_none_or(|&(a, _)| a >= end)
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when `[offset, offset + length)` lies inside the file.
    pub fn contains(&self, offset: u64, length: u64) -> bool {
        offset
            .checked_add(length)
            .is_some_and(|end| end <= self.len)
    }

    /// Reads exactly `buf.len()` bytes at `offset`. Callers check bounds
    /// with [`Image::contains`] first; a short read is reported as I/O error.
    pub fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), CheckError> {
        let io = |source| CheckError::Io { offset, source };
        self.inner.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.inner.read_exact(buf).map_err(io)
    }

    /// Reads `length` bytes at `offset`, or `None` when they are not all
    /// inside the file (nothing is allocated then).
    pub fn read_checked(
        &mut self,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<u8>>, CheckError> {
        self.read_structure("structure", offset, length)
    }

    /// [`Image::read_checked`] for a structure named `structure` (for the
    /// error when it is beyond [`MAX_STRUCTURE`]).
    pub fn read_structure(
        &mut self,
        structure: &'static str,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<u8>>, CheckError> {
        if !self.contains(offset, length) {
            return Ok(None);
        }
        let mut buf = zeroed(structure, offset, length)?;
        if !self.is_hole(offset, length) {
            self.read_into(offset, &mut buf)?;
        }
        Ok(Some(buf))
    }

    /// Reads up to `length` bytes at `offset`, clipped at the end of file.
    pub fn read_clipped(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, CheckError> {
        let avail = self.len.saturating_sub(offset).min(length);
        let mut buf = zeroed("structure", offset, avail)?;
        if avail > 0 {
            self.read_into(offset, &mut buf)?;
        }
        Ok(buf)
    }
}

/// The table of `entries` big-endian 64-bit entries at `offset`, kept as
/// numbers: read a chunk at a time into a fallibly reserved vector (none
/// larger than [`MAX_STRUCTURE`]); `None` when it does not lie in the file.
pub fn read_u64_table<R: Read + Seek>(
    img: &mut Image<R>,
    structure: &'static str,
    offset: u64,
    entries: u64,
) -> Result<Option<Vec<u64>>, CheckError> {
    let bytes = entries.saturating_mul(8);
    if !img.contains(offset, bytes) {
        return Ok(None);
    }
    let mut table: Vec<u64> = Vec::new();
    reserve(&mut table, structure, offset, entries)?;
    let mut chunks = Chunks::new(offset, bytes);
    while let Some((base, raw)) = chunks.next(img)? {
        table.resize((base / 8) as usize, 0);
        table.extend(
            raw.chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default())),
        );
    }
    table.resize(entries as usize, 0);
    Ok(Some(table))
}

/// A table of `length` bytes at `offset` read [`CHUNK`] bytes at a time;
/// chunks that lie in a known hole are skipped (they hold only zero
/// entries). The caller checks that the table lies in the file.
pub struct Chunks {
    offset: u64,
    length: u64,
    pos: u64,
    buf: Vec<u8>,
}

impl Chunks {
    /// The table `[offset, offset + length)`.
    pub fn new(offset: u64, length: u64) -> Chunks {
        Chunks {
            offset,
            length,
            pos: 0,
            buf: Vec::new(),
        }
    }

    /// The next chunk that may hold data: its position in the table and
    /// its bytes; `None` at the end.
    pub fn next<R: Read + Seek>(
        &mut self,
        img: &mut Image<R>,
    ) -> Result<Option<(u64, &[u8])>, CheckError> {
        while self.pos < self.length {
            let at = self.pos;
            let n = (self.length - at).min(CHUNK);
            self.pos += n;
            if img.is_hole(self.offset + at, n) {
                continue;
            }
            if self.buf.len() < n as usize {
                let more = n - self.buf.len() as u64;
                reserve(&mut self.buf, "table chunk", self.offset + at, more)?;
            }
            self.buf.resize(n as usize, 0);
            img.read_into(self.offset + at, &mut self.buf)?;
            return Ok(Some((at, &self.buf)));
        }
        Ok(None)
    }
}
