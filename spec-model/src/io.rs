//! Bounded reads from the image under test. Every read is checked against
//! the file's length first, so no buffer is ever larger than the file.

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
}

/// The image file: any `Read + Seek`, with its length known up front.
pub struct Image<R> {
    inner: R,
    len: u64,
}

impl<R: Read + Seek> Image<R> {
    /// Wraps a reader, measuring its length by seeking to the end.
    pub fn new(mut inner: R) -> Result<Self, CheckError> {
        let len = inner
            .seek(SeekFrom::End(0))
            .map_err(|source| CheckError::Io { offset: 0, source })?;
        Ok(Image { inner, len })
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
        if !self.contains(offset, length) {
            return Ok(None);
        }
        let mut buf = vec![0u8; length as usize];
        self.read_into(offset, &mut buf)?;
        Ok(Some(buf))
    }

    /// Reads up to `length` bytes at `offset`, clipped at the end of file.
    pub fn read_clipped(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, CheckError> {
        let avail = self.len.saturating_sub(offset).min(length);
        let mut buf = vec![0u8; avail as usize];
        if avail > 0 {
            self.read_into(offset, &mut buf)?;
        }
        Ok(buf)
    }
}
