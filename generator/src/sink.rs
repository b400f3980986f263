//! Where a built image goes: a byte vector, or a (sparse) file.

use std::io::{Seek, SeekFrom, Write};

/// A random-access byte destination.
pub trait Sink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Makes the image exactly `len` bytes long.
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
}

impl Sink for Vec<u8> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = offset as usize + data.len();
        if self.len() < end {
            self.resize(end, 0);
        }
        self[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.resize(len as usize, 0);
        Ok(())
    }
}

impl Sink for std::fs::File {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(offset))?;
        self.write_all(data)
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}
