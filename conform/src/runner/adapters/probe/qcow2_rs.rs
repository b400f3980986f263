//! The `qcow2-rs` crate (version 0.1.6, ublk-org) as an implementation
//! under test, through the probe process ([`super`]).
//!
//! The crate is async; its `Qcow2IoSync` back end does plain blocking
//! `pread`/`pwrite`, so its futures are driven to completion with
//! `futures::executor::block_on`. It reads and writes in units of 512-byte
//! blocks: this adapter widens every request to whole blocks (a
//! read-modify-write for unaligned writes, as any block device user does).
//!
//! It knows nothing of bitmaps, and on a writable open it leaves the
//! autoclear bits as they are (its header code carries the clearing step
//! commented out, "it is caller's responsibility"): a write into an image
//! with `auto` bitmaps leaves them stale while the extension still claims
//! to be consistent.

use super::disk::{DiskError, GuestDisk};
use futures::executor::block_on;
use qcow2_rs::dev::{Qcow2Dev, Qcow2DevParams};
use qcow2_rs::sync_io::Qcow2IoSync;
use qcow2_rs::utils::qcow2_setup_dev_sync;
use std::path::Path;

/// Block size the crate is set up with (`1 << 9`, its default).
const BLOCK: u64 = 512;

struct Disk {
    dev: Qcow2Dev<Qcow2IoSync>,
}

pub fn open(image: &Path, writable: bool) -> Result<Box<dyn GuestDisk>, DiskError> {
    let params = Qcow2DevParams::new(9, None, None, !writable, false);
    let dev = qcow2_setup_dev_sync(image, &params).map_err(DiskError::implementation)?;
    block_on(dev.qcow2_prep_io()).map_err(DiskError::implementation)?;
    Ok(Box::new(Disk { dev }))
}

/// `[offset, offset+len)` widened to whole blocks.
fn widen(offset: u64, len: u64) -> (u64, u64) {
    let start = offset & !(BLOCK - 1);
    let end = (offset + len).div_ceil(BLOCK) * BLOCK;
    (start, end - start)
}

impl Disk {
    fn read_blocks(&self, start: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        let mut buf = vec![0u8; len as usize];
        let n = block_on(self.dev.read_at(&mut buf, start)).map_err(DiskError::implementation)?;
        if n != buf.len() {
            return Err(DiskError::ShortRead {
                got: n,
                wanted: len,
                offset: start,
            });
        }
        Ok(buf)
    }
}

impl GuestDisk for Disk {
    fn size(&self) -> u64 {
        self.dev.info.virtual_size()
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let (start, len) = widen(offset, buf.len() as u64);
        let data = self.read_blocks(start, len)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&data[skip..skip + buf.len()]);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let (start, len) = widen(offset, data.len() as u64);
        let mut blocks = if start == offset && len == data.len() as u64 {
            Vec::new()
        } else {
            self.read_blocks(start, len)?
        };
        if blocks.is_empty() {
            blocks = data.to_vec();
        } else {
            let skip = (offset - start) as usize;
            blocks[skip..skip + data.len()].copy_from_slice(data);
        }
        block_on(self.dev.write_at(&blocks, start)).map_err(DiskError::implementation)
    }

    fn close(self: Box<Self>) -> Result<(), DiskError> {
        if self.dev.need_flush_meta() {
            block_on(self.dev.flush_meta()).map_err(DiskError::implementation)?;
        }
        Ok(())
    }
}
