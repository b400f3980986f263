//! Guest data as a reader of the virtual disk sees it (spec "Cluster
//! mapping", "Extended L2 Entries", compressed clusters): the model's answer
//! for what an implementation must read back.

use crate::fields::header::INCOMPAT_EXTERNAL_DATA;
use crate::fields::mapping as m;
use crate::header::Header;
use crate::io::{CheckError, Image};
use std::io::{Read, Seek};

/// Why guest data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("guest read at {offset:#x}: {reason}")]
    Unreadable { offset: u64, reason: String },
}

fn unreadable(offset: u64, reason: impl Into<String>) -> GuestError {
    GuestError::Unreadable {
        offset,
        reason: reason.into(),
    }
}

/// Reads guest clusters through the active L1 table.
pub(crate) struct GuestReader {
    l1: Option<Vec<u64>>,
}

impl GuestReader {
    pub fn new() -> GuestReader {
        GuestReader { l1: None }
    }

    /// Fills `buf` with virtual disk bytes from `offset`. Unallocated
    /// clusters read as zeros (images with a backing file are refused, as
    /// the backing file is not part of the image).
    pub fn read<R: Read + Seek>(
        &mut self,
        img: &mut Image<R>,
        h: &Header,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), GuestError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= h.size)
            .ok_or_else(|| unreadable(offset, format!("past the virtual size {}", h.size)))?;
        if h.backing_file_offset != 0 {
            return Err(unreadable(offset, "the image has a backing file"));
        }
        if h.incompatible_features & INCOMPAT_EXTERNAL_DATA != 0 {
            return Err(unreadable(
                offset,
                "guest data lives in an external data file",
            ));
        }
        if h.crypt_method != 0 {
            return Err(unreadable(offset, "the image is encrypted"));
        }
        if h.cluster_bits > crate::header::QEMU_MAX_CLUSTER_BITS {
            return Err(unreadable(
                offset,
                "clusters larger than 2 MiB are not read",
            ));
        }
        if self.l1.is_none() {
            let bytes = u64::from(h.l1_size) * 8;
            let raw = img
                .read_checked(h.l1_table_offset, bytes)?
                .ok_or_else(|| unreadable(offset, "the L1 table lies outside the file"))?;
            self.l1 = Some(
                raw.chunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            );
        }
        let cs = h.cluster_size();
        let mut pos = offset;
        let mut cluster = Vec::new();
        while pos < end {
            let gc = pos / cs;
            let within = (pos % cs) as usize;
            let n = ((cs - pos % cs).min(end - pos)) as usize;
            self.cluster(img, h, gc, &mut cluster)?;
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&cluster[within..within + n]);
            pos += n as u64;
        }
        Ok(())
    }

    /// The `cs` bytes of guest cluster `gc`.
    fn cluster<R: Read + Seek>(
        &self,
        img: &mut Image<R>,
        h: &Header,
        gc: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), GuestError> {
        let cs = h.cluster_size();
        let at = gc * cs;
        out.clear();
        out.resize(cs as usize, 0);
        let l2_entries = h.l2_entries();
        let l1 = self.l1.as_deref().unwrap_or(&[]);
        let Some(&l1e) = l1.get((gc / l2_entries) as usize) else {
            return Err(unreadable(at, "beyond the L1 table"));
        };
        let l2_off = l1e & m::L1_OFFSET_MASK;
        if l2_off == 0 {
            return Ok(());
        }
        let es = h.l2_entry_size();
        let e_at = l2_off + (gc % l2_entries) * es;
        let raw = img
            .read_checked(e_at, es)?
            .ok_or_else(|| unreadable(at, "L2 entry outside the file"))?;
        let e = u64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
        if e & m::COMPRESSED != 0 {
            return self.compressed(img, h, e, at, out);
        }
        let host = e & m::L2_OFFSET_MASK;
        if !h.extended_l2() {
            if e & m::ZERO != 0 && h.version == 3 || host == 0 {
                return Ok(());
            }
            return read_host(img, host, at, out);
        }
        // Extended L2: 32 subclusters with allocated / zero bits.
        let sub = u64::from_be_bytes(raw[8..16].try_into().unwrap_or_default());
        let sc = (cs / 32) as usize;
        let mut data = Vec::new();
        for i in 0..32 {
            if (sub >> i) & 1 == 1 && (sub >> (32 + i)) & 1 == 0 {
                if data.is_empty() {
                    data.resize(cs as usize, 0);
                    read_host(img, host, at, &mut data)?;
                }
                out[i * sc..(i + 1) * sc].copy_from_slice(&data[i * sc..(i + 1) * sc]);
            }
        }
        Ok(())
    }

    fn compressed<R: Read + Seek>(
        &self,
        img: &mut Image<R>,
        h: &Header,
        e: u64,
        at: u64,
        out: &mut [u8],
    ) -> Result<(), GuestError> {
        let x = 62 - (h.cluster_bits - 8);
        let host = e & ((1u64 << x) - 1);
        let sectors = (e & !(m::COMPRESSED | m::COPIED)) >> x;
        let len = ((sectors + 1) * 512 - (host & 511)).min(img.len().saturating_sub(host));
        let input = img
            .read_checked(host, len)?
            .ok_or_else(|| unreadable(at, "compressed data outside the file"))?;
        match h.compression_type {
            0 => {
                let mut state =
                    miniz_oxide::inflate::stream::InflateState::new(miniz_oxide::DataFormat::Raw);
                let r = miniz_oxide::inflate::stream::inflate(
                    &mut state,
                    &input,
                    out,
                    miniz_oxide::MZFlush::Finish,
                );
                if r.bytes_written != out.len() {
                    return Err(unreadable(
                        at,
                        format!(
                            "deflate data gave {} of {} bytes",
                            r.bytes_written,
                            out.len()
                        ),
                    ));
                }
            }
            1 => {
                let mut dec = ruzstd::decoding::StreamingDecoder::new(&input[..])
                    .map_err(|e| unreadable(at, format!("zstd: {e}")))?;
                let mut filled = 0;
                while filled < out.len() {
                    let n = dec
                        .read(&mut out[filled..])
                        .map_err(|e| unreadable(at, format!("zstd: {e}")))?;
                    if n == 0 {
                        return Err(unreadable(at, "zstd data ends early"));
                    }
                    filled += n;
                }
            }
            t => return Err(unreadable(at, format!("unknown compression type {t}"))),
        }
        Ok(())
    }
}

fn read_host<R: Read + Seek>(
    img: &mut Image<R>,
    host: u64,
    at: u64,
    out: &mut [u8],
) -> Result<(), GuestError> {
    // A cluster the file ends inside reads as zeros past the end.
    let avail = img.len().saturating_sub(host).min(out.len() as u64) as usize;
    if avail == 0 {
        return Err(unreadable(
            at,
            format!("data cluster {host:#x} lies past the end of the file"),
        ));
    }
    out[avail..].fill(0);
    img.read_into(host, &mut out[..avail])?;
    Ok(())
}
