//! The `imago` crate (version 0.2.6, built with its `sync` feature) as an
//! implementation under test, through the probe process ([`super`]).
//!
//! imago reads and writes qcow2 but knows nothing of bitmaps. When it opens
//! an image writable it clears every autoclear bit, bitmaps extension
//! consistency included, before anything else is written: what the spec
//! asks of a program that does not maintain bitmaps.

use super::disk::{DiskError, GuestDisk};
use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};
use std::path::Path;

struct Disk {
    access: FormatAccess<File>,
}

/// Opens `image` with imago (backing files it names are opened as imago
/// would by default; corpus images have none).
pub fn open(image: &Path, writable: bool) -> Result<Box<dyn GuestDisk>, DiskError> {
    let q = Qcow2::<File>::builder_path(image)
        .write(writable)
        .open(PermissiveImplicitOpenGate::default())
        .map_err(DiskError::implementation)?;
    Ok(Box::new(Disk {
        access: FormatAccess::new(q),
    }))
}

impl GuestDisk for Disk {
    fn size(&self) -> u64 {
        self.access.size()
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.access
            .read(buf, offset)
            .map_err(DiskError::implementation)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.access
            .write(data, offset)
            .map_err(DiskError::implementation)
    }

    fn close(self: Box<Self>) -> Result<(), DiskError> {
        self.access.flush().map_err(DiskError::implementation)
    }
}
