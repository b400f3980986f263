//! The `qcow` crate (version 1.2.0, "A library for working with QEMU qcow
//! images", from the PANDA project) as an implementation under test,
//! through the probe process ([`super`]). A reader only: it parses the
//! header, extensions, snapshots and the L1 table when it opens an image,
//! loads L2 tables on demand, and has no way to write.

use super::disk::{DiskError, GuestDisk};
use qcow::{DynamicQcow, Qcow2};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The crate opened a version 1 image, which the probe does not read.
#[derive(Debug, thiserror::Error)]
#[error("the qcow crate opened a version 1 qcow image, not qcow2")]
struct VersionOne;

struct Disk {
    image: Qcow2,
    file: BufReader<File>,
}

pub fn open(path: &Path, writable: bool) -> Result<Box<dyn GuestDisk>, DiskError> {
    if writable {
        return Err(DiskError::ReadOnly("the qcow crate"));
    }
    let image = match qcow::open(path).map_err(DiskError::implementation)? {
        DynamicQcow::Qcow2(q) => q,
        DynamicQcow::Qcow1(_) => return Err(DiskError::implementation(VersionOne)),
    };
    let file = File::open(path).map_err(DiskError::implementation)?;
    Ok(Box::new(Disk {
        image,
        file: BufReader::new(file),
    }))
}

impl GuestDisk for Disk {
    fn size(&self) -> u64 {
        self.image.header.size
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let mut reader = self.image.reader(&mut self.file);
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(DiskError::implementation)?;
        reader.read_exact(buf).map_err(DiskError::implementation)
    }
}
