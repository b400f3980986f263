//! The files beyond the image that a reader of its guest data needs: the
//! backing image (spec "Header": `backing_file_offset`; unallocated
//! clusters read from it, zeros past its end) and the external data file
//! (spec "Header extensions": external data file name, incompatible bit 2;
//! with autoclear bit 1, `data_file_raw`, the data file is itself the raw
//! guest disk). The model opens no files: the caller supplies each layer
//! as a reader ([`Layers`]), and a chain of images nests through
//! [`GuestSource`] ([`Layered`] for a qcow2 layer, [`RawSource`] for a raw
//! one).

use crate::guest::GuestError;
use crate::io::Image;
use crate::Model;
use std::io::{Read, Seek};

/// A reader with `Seek`, as a trait object.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek + ?Sized> ReadSeek for T {}

/// Anything a guest read can fall through to: a backing image.
pub trait GuestSource {
    /// The virtual disk's size in bytes (reads past it see zeros).
    fn guest_size(&self) -> u64;
    /// Fills `buf` with virtual disk bytes from `offset`; the range lies
    /// inside [`GuestSource::guest_size`].
    fn read_guest_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), GuestError>;
}

/// The layers of one guest read: the backing image and the external data
/// file, each when the image needs it. `Layers::default()` supplies none
/// (an image that needs one is then refused).
#[derive(Default)]
pub struct Layers<'a> {
    pub backing: Option<&'a mut dyn GuestSource>,
    pub data_file: Option<&'a mut dyn ReadSeek>,
}

/// A raw image as a backing layer: its bytes are the guest disk.
pub struct RawSource<R> {
    img: Image<R>,
}

impl<R: Read + Seek> RawSource<R> {
    pub fn new(reader: R) -> Result<RawSource<R>, crate::CheckError> {
        Ok(RawSource {
            img: Image::new(reader)?,
        })
    }
}

impl<R: Read + Seek> GuestSource for RawSource<R> {
    fn guest_size(&self) -> u64 {
        self.img.len()
    }

    fn read_guest_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), GuestError> {
        read_zero_extended(&mut self.img, offset, buf)
    }
}

/// A qcow2 image with its own layers, as a backing layer of another (or
/// as the top of a chain): `Layered::new(model)` for a base image,
/// `.with_backing(..)`, `.with_data_file(..)` for the rest.
pub struct Layered<'a, R> {
    pub model: Model<R>,
    backing: Option<Box<dyn GuestSource + 'a>>,
    data_file: Option<Box<dyn ReadSeek + 'a>>,
}

impl<'a, R: Read + Seek> Layered<'a, R> {
    pub fn new(model: Model<R>) -> Layered<'a, R> {
        Layered {
            model,
            backing: None,
            data_file: None,
        }
    }

    pub fn with_backing(mut self, backing: Box<dyn GuestSource + 'a>) -> Layered<'a, R> {
        self.backing = Some(backing);
        self
    }

    pub fn with_data_file(mut self, data_file: Box<dyn ReadSeek + 'a>) -> Layered<'a, R> {
        self.data_file = Some(data_file);
        self
    }

    /// The guest size of the backing layer, when there is one: shorter
    /// than the image's own disk, the rest of the disk reads as zeros
    /// where the image allocates nothing (spec "Cluster mapping").
    pub fn backing_size(&self) -> Option<u64> {
        self.backing.as_ref().map(|b| b.guest_size())
    }

    /// Reads guest data through every layer.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), GuestError> {
        let mut layers = Layers {
            backing: self
                .backing
                .as_deref_mut()
                .map(|b| b as &mut dyn GuestSource),
            data_file: self
                .data_file
                .as_deref_mut()
                .map(|d| d as &mut dyn ReadSeek),
        };
        self.model.read_guest_with(offset, buf, &mut layers)
    }
}

impl<R: Read + Seek> GuestSource for Layered<'_, R> {
    fn guest_size(&self) -> u64 {
        self.model.analysis().header.as_ref().map_or(0, |h| h.size)
    }

    fn read_guest_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), GuestError> {
        self.read(offset, buf)
    }
}

/// `buf` from `offset` of `img`, zeros past its end.
pub(crate) fn read_zero_extended<R: Read + Seek>(
    img: &mut Image<R>,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), GuestError> {
    let avail = img.len().saturating_sub(offset).min(buf.len() as u64) as usize;
    buf[avail..].fill(0);
    if avail > 0 {
        img.read_into(offset, &mut buf[..avail])?;
    }
    Ok(())
}

/// `buf` from guest `offset` of `backing`, zeros past its size (or all
/// zeros without a backing layer).
pub(crate) fn read_backing(
    backing: Option<&mut dyn GuestSource>,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), GuestError> {
    let Some(b) = backing else {
        buf.fill(0);
        return Ok(());
    };
    let avail = b.guest_size().saturating_sub(offset).min(buf.len() as u64) as usize;
    buf[avail..].fill(0);
    if avail > 0 {
        b.read_guest_at(offset, &mut buf[..avail])?;
    }
    Ok(())
}
