//! What every backend of the probe provides: an image opened by one
//! implementation, seen as a virtual disk ([`GuestDisk`]), and why one of
//! its steps failed ([`DiskError`]). The backends ([`super::imago`],
//! [`super::qcow2_rs`], [`super::qcow2_crate`], [`super::libqcow`]) import
//! these from here; [`super::kind`] dispatches to them.

/// An image opened by an implementation, as a virtual disk.
pub trait GuestDisk {
    /// The virtual size the implementation reports.
    fn size(&self) -> u64;
    /// Fills `buf` from virtual offset `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    /// Writes `data` at virtual offset `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let _ = (offset, data);
        Err(DiskError::ReadOnly("this implementation"))
    }
    /// Flushes and closes the image.
    fn close(self: Box<Self>) -> Result<(), DiskError> {
        Ok(())
    }
    /// If the implementation's helper process died of a signal, which.
    fn helper_signal(&self) -> Option<i32> {
        None
    }
}

/// Why an implementation could not open, read, write or close an image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The implementation's own error, in its own words.
    #[error(transparent)]
    Implementation(Box<dyn std::error::Error + Send + Sync>),
    /// The implementation (named) cannot write.
    #[error("{0} cannot write")]
    ReadOnly(&'static str),
    /// Fewer bytes came back than were asked for.
    #[error("short read: {got} of {wanted} bytes at {offset}")]
    ShortRead {
        got: usize,
        wanted: u64,
        offset: u64,
    },
}

impl DiskError {
    /// Wraps the implementation's own error (its message unchanged).
    pub fn implementation(e: impl std::error::Error + Send + Sync + 'static) -> DiskError {
        DiskError::Implementation(Box::new(e))
    }
}
