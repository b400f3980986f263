//! The `qcow2` crate (version 0.1.2) as an implementation under test,
//! through the probe process ([`super`]). A reader only: it opens
//! version 3 images, reads standard clusters, and knows neither bitmaps
//! nor writing.

use super::disk::{DiskError, GuestDisk};
use positioned_io::ReadAt;
use qcow2::Qcow2;
use std::fs::File;
use std::path::Path;

struct Disk {
    image: Qcow2<File>,
}

pub fn open(image: &Path, writable: bool) -> Result<Box<dyn GuestDisk>, DiskError> {
    if writable {
        return Err(DiskError::ReadOnly("the qcow2 crate"));
    }
    let file = File::open(image).map_err(DiskError::implementation)?;
    let image = Qcow2::open(file).map_err(DiskError::implementation)?;
    Ok(Box::new(Disk { image }))
}

impl GuestDisk for Disk {
    fn size(&self) -> u64 {
        self.image.guest_size()
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let reader = self.image.reader().map_err(DiskError::implementation)?;
        reader
            .read_exact_at(offset, buf)
            .map_err(DiskError::implementation)
    }
}
