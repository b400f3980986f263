//! Bitmap contents (spec "Bitmaps", "Bitmap table", "Bitmap data"): the
//! bytes a reader obtains by expanding the bitmap table, with bits past
//! `nbits` cleared, streamed cluster by cluster.

use crate::fields::bitmap_table_entry as table_entry;
use crate::io::{CheckError, Image};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek};

/// Sizes of one bitmap, derived from the virtual size, its granularity and
/// the cluster size. All values fit in u64 for every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub size: u64,
    pub granularity_bits: u32,
    pub cluster_bits: u32,
}

impl Geometry {
    /// Bits in the bitmap: ceil(size / granularity).
    pub fn nbits(&self) -> u64 {
        if self.granularity_bits >= 64 {
            return u64::from(self.size > 0);
        }
        let g = 1u128 << self.granularity_bits;
        (u128::from(self.size).div_ceil(g)) as u64
    }

    /// Data bytes: ceil(nbits / 8).
    pub fn nbytes(&self) -> u64 {
        self.nbits().div_ceil(8)
    }

    /// Bitmap table entries the data needs: ceil(nbytes / cluster_size).
    pub fn clusters_needed(&self) -> u64 {
        self.nbytes().div_ceil(1u64 << self.cluster_bits)
    }

    /// The virtual byte range `[start, end)` that bits `[first, last)` cover.
    pub fn virtual_range(&self, first: u64, last: u64) -> (u64, u64) {
        let g = self.granularity_bits.min(127);
        let start = (u128::from(first) << g).min(u128::from(self.size)) as u64;
        let end = (u128::from(last) << g).min(u128::from(self.size)) as u64;
        (start, end)
    }
}

/// A piece of the bitmap's data bytes.
pub enum Chunk<'a> {
    Zeros(u64),
    Ones(u64),
    Bytes(&'a [u8]),
}

/// Streams the `nbytes` data bytes of a bitmap through `visit`, in order.
/// `table` must hold at least `clusters_needed` entries whose data
/// clusters lie inside the file (the checks guarantee it before calling).
pub fn stream<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geometry,
    table: &[u64],
    mut visit: impl FnMut(Chunk<'_>),
) -> Result<(), CheckError> {
    let cs = 1u64 << geo.cluster_bits;
    let nbytes = geo.nbytes();
    let nbits = geo.nbits();
    let tail_mask: Option<u8> = match nbits % 8 {
        0 => None,
        r => Some(((1u16 << r) - 1) as u8),
    };
    let mut buf = Vec::new();
    for (j, &entry) in table
        .iter()
        .enumerate()
        .take(geo.clusters_needed() as usize)
    {
        let start = j as u64 * cs;
        let len = cs.min(nbytes - start);
        let is_last = start + len == nbytes;
        let host = entry & table_entry::OFFSET_MASK;
        // Everything but a masked last byte goes through as is.
        let body = if is_last && tail_mask.is_some() {
            len - 1
        } else {
            len
        };
        let last_byte = if host == 0 {
            let ones = entry & table_entry::ALL_ONES != 0;
            if body > 0 {
                visit(if ones {
                    Chunk::Ones(body)
                } else {
                    Chunk::Zeros(body)
                });
            }
            if ones {
                0xff
            } else {
                0
            }
        } else {
            buf.resize(len as usize, 0);
            let avail = img.len().saturating_sub(host).min(len) as usize;
            buf[avail..].fill(0);
            img.read_into(host, &mut buf[..avail])?;
            if body > 0 {
                visit(Chunk::Bytes(&buf[..body as usize]));
            }
            buf[len as usize - 1]
        };
        if let (true, Some(mask)) = (is_last, tail_mask) {
            let b = [last_byte & mask];
            visit(Chunk::Bytes(&b));
        }
    }
    Ok(())
}

/// SHA-256 and population count of the data bytes.
pub fn digest<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geometry,
    table: &[u64],
) -> Result<(String, u64), CheckError> {
    // Runs of zeros and ones are hashed from these (no per-call buffers:
    // most bitmaps are small, and allocating and filling 128 KiB for each
    // would cost more than hashing them).
    const FILL: usize = 16 * 1024;
    static ZEROS: [u8; FILL] = [0; FILL];
    static ONES: [u8; FILL] = [0xff; FILL];
    let mut hash = Sha256::new();
    let mut set = 0u64;
    let feed = |hash: &mut Sha256, fill: &[u8], mut n: u64| {
        while n > 0 {
            let k = n.min(FILL as u64) as usize;
            hash.update(&fill[..k]);
            n -= k as u64;
        }
    };
    stream(img, geo, table, |chunk| match chunk {
        Chunk::Zeros(n) => feed(&mut hash, &ZEROS, n),
        Chunk::Ones(n) => {
            feed(&mut hash, &ONES, n);
            set += n * 8;
        }
        Chunk::Bytes(b) => {
            hash.update(b);
            set += popcount(b);
        }
    })?;
    Ok((hex::encode(hash.finalize()), set))
}

/// A key that determines a bitmap's contents: its geometry and, per needed
/// table entry, whether it reads as zeros or ones or, for a stored cluster,
/// the stored bytes. Costs a read of the stored clusters only, so bitmaps
/// whose keys match share one content digest without hashing the (often
/// mostly zero) data again.
pub fn fingerprint<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geometry,
    table: &[u64],
) -> Result<[u8; 32], CheckError> {
    let cs = 1u64 << geo.cluster_bits;
    let nbytes = geo.nbytes();
    let mut key = Sha256::new();
    key.update(geo.nbits().to_be_bytes());
    key.update(geo.cluster_bits.to_be_bytes());
    let mut buf = Vec::new();
    for (j, &entry) in table
        .iter()
        .enumerate()
        .take(geo.clusters_needed() as usize)
    {
        let host = entry & table_entry::OFFSET_MASK;
        if host == 0 {
            key.update([u8::from(entry & table_entry::ALL_ONES != 0)]);
            continue;
        }
        let len = cs.min(nbytes - j as u64 * cs);
        buf.resize(len as usize, 0);
        let avail = img.len().saturating_sub(host).min(len) as usize;
        buf[avail..].fill(0);
        img.read_into(host, &mut buf[..avail])?;
        key.update([2]);
        key.update(&buf);
    }
    Ok(key.finalize().into())
}

fn popcount(b: &[u8]) -> u64 {
    let mut words = b.chunks_exact(8);
    let mut n: u64 = (&mut words)
        .map(|w| u64::from(u64::from_ne_bytes(w.try_into().unwrap_or_default()).count_ones()))
        .sum();
    n += words
        .remainder()
        .iter()
        .map(|x| u64::from(x.count_ones()))
        .sum::<u64>();
    n
}

/// The set bits as half-open bit ranges `[first, last)`, merged.
pub fn set_ranges<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geometry,
    table: &[u64],
) -> Result<Vec<(u64, u64)>, CheckError> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut push = |first: u64, last: u64| match out.last_mut() {
        Some(prev) if prev.1 == first => prev.1 = last,
        _ => out.push((first, last)),
    };
    let mut pos = 0u64; // byte position in the data
    stream(img, geo, table, |chunk| match chunk {
        Chunk::Zeros(n) => pos += n,
        Chunk::Ones(n) => {
            push(pos * 8, (pos + n) * 8);
            pos += n;
        }
        Chunk::Bytes(b) => {
            for (i, &byte) in b.iter().enumerate() {
                if byte == 0 {
                    continue;
                }
                let base = (pos + i as u64) * 8;
                if byte == 0xff {
                    push(base, base + 8);
                    continue;
                }
                for bit in 0..8 {
                    if byte >> bit & 1 == 1 {
                        push(base + bit, base + bit + 1);
                    }
                }
            }
            pos += b.len() as u64;
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_never_overflows() {
        let g = Geometry {
            size: u64::MAX,
            granularity_bits: 0,
            cluster_bits: 9,
        };
        assert_eq!(g.nbits(), u64::MAX);
        assert_eq!(g.nbytes(), u64::MAX / 8 + 1);
        let g = Geometry {
            size: u64::MAX,
            granularity_bits: 63,
            cluster_bits: 63,
        };
        assert_eq!(g.nbits(), 2);
        assert_eq!(g.clusters_needed(), 1);
        let g = Geometry {
            size: 0,
            granularity_bits: 16,
            cluster_bits: 16,
        };
        assert_eq!((g.nbits(), g.nbytes(), g.clusters_needed()), (0, 0, 0));
        let g = Geometry {
            size: 1 << 20,
            granularity_bits: 16,
            cluster_bits: 16,
        };
        assert_eq!(g.virtual_range(1, 3), (1 << 16, 3 << 16));
        assert_eq!(g.virtual_range(15, 99), (15 << 16, 1 << 20));
    }
}
