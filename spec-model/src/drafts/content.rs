//! A bitmap's data as the draft readers see it: what each table entry
//! stands for ([`Slot`]), the bitmap's sizes ([`Geo`]), its contents'
//! digest and set tail bits, and the work budget that bounds a read.

use super::DraftRun;
use crate::io::{CheckError, Image};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek};

/// Bitmap data bytes hashed per bitmap at most; larger bitmaps get a
/// `bitmaps.work-limit` finding and no contents.
pub const MAX_CONTENT_BYTES: u64 = 64 << 20;

/// Table entries one read reads at most, whatever the file's length: 8 Mi
/// (64 MiB of entries).
const MAX_TABLE_ENTRIES: u64 = 8 << 20;

/// Bitmap data bytes one read hashes at most, whatever the file's length.
const MAX_CONTENT_TOTAL: u64 = 1 << 30;

/// Work budget of one read, proportional to the file's length, so that a
/// hostile file (many entries sharing one huge table, tables of
/// unallocated entries standing for terabytes of zeros) cannot make the
/// reader run for long.
pub(crate) struct Budget {
    table_entries: u64,
    content_bytes: u64,
}

impl Budget {
    pub(crate) fn for_file(len: u64) -> Budget {
        // Capped as well: a sparse file's length says nothing of what it
        // stores (the caps lie above any budget of a file up to 12 MiB).
        Budget {
            table_entries: (len / 8)
                .saturating_mul(4)
                .saturating_add(1 << 20)
                .min(MAX_TABLE_ENTRIES),
            content_bytes: len
                .saturating_mul(8)
                .saturating_add(256 << 20)
                .min(MAX_CONTENT_TOTAL),
        }
    }

    pub(crate) fn take_entries(&mut self, n: u64) -> bool {
        if n > self.table_entries {
            return false;
        }
        self.table_entries -= n;
        true
    }

    pub(crate) fn take_bytes(&mut self, n: u64) -> bool {
        if n > self.content_bytes {
            return false;
        }
        self.content_bytes -= n;
        true
    }
}

/// What one table entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Zeros,
    Ones,
    Data(u64),
    /// A broken entry (reserved bits, misaligned, outside the file); the
    /// raw value is kept for the dump.
    Invalid(u64),
}

/// Folds table slots into runs.
pub(crate) fn runs(slots: &[Slot], cluster_size: u64) -> Vec<DraftRun> {
    crate::dump::fold_runs(
        slots.iter().map(|s| match *s {
            Slot::Zeros => ("zeros", None),
            Slot::Ones => ("ones", None),
            Slot::Data(h) => ("data", Some(h)),
            Slot::Invalid(v) => ("invalid", Some(v)),
        }),
        cluster_size,
    )
}

/// Sizes of one bitmap, in u128 so that no field value can overflow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geo {
    /// Bytes covered.
    pub size: u128,
    /// Granularity in bytes, at least 1.
    pub granularity: u128,
    pub cluster_bits: u32,
}

impl Geo {
    pub(crate) fn nbits(&self) -> u128 {
        self.size.div_ceil(self.granularity.max(1))
    }
    pub(crate) fn nbytes(&self) -> u128 {
        self.nbits().div_ceil(8)
    }
    pub(crate) fn needed(&self) -> u128 {
        self.nbytes().div_ceil(1u128 << self.cluster_bits.min(126))
    }
}

/// SHA-256 and set-bit count of the data bytes that `slots` describe.
/// `slots` must hold `geo.needed()` valid entries whose data clusters are
/// inside the file, and `geo.nbytes()` must fit the budget already taken.
pub(crate) fn digest<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geo,
    slots: &[Slot],
) -> Result<Option<(String, u64)>, CheckError> {
    const FILL: usize = 64 * 1024;
    let nbits = geo.nbits();
    let nbytes = geo.nbytes();
    if nbytes > u128::from(MAX_CONTENT_BYTES) || geo.cluster_bits > 62 {
        return Ok(None);
    }
    let (nbits, nbytes) = (nbits as u64, nbytes as u64);
    let cs = 1u64 << geo.cluster_bits;
    let tail_mask: Option<u8> = match nbits % 8 {
        0 => None,
        r => Some(((1u16 << r) - 1) as u8),
    };
    let mut hash = Sha256::new();
    let mut set = 0u64;
    let zeros = vec![0u8; FILL];
    let ones = vec![0xffu8; FILL];
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0u64;
    let mut j = 0usize;
    while pos < nbytes {
        let len = cs.min(nbytes - pos);
        let is_last = pos + len == nbytes;
        let Some(&slot) = slots.get(j) else {
            return Ok(None);
        };
        match slot {
            Slot::Zeros | Slot::Ones => {
                let all_ones = slot == Slot::Ones;
                let fill = if all_ones { &ones } else { &zeros };
                // A masked last byte is fed separately.
                let body = if is_last && tail_mask.is_some() {
                    len - 1
                } else {
                    len
                };
                let mut b = body;
                while b > 0 {
                    let k = b.min(FILL as u64) as usize;
                    hash.update(&fill[..k]);
                    b -= k as u64;
                }
                if all_ones {
                    set += body * 8;
                }
                if body < len {
                    let last = if all_ones { 0xff } else { 0 } & tail_mask.unwrap_or(0xff);
                    hash.update([last]);
                    set += u64::from(last.count_ones());
                }
            }
            Slot::Data(host) => {
                if !img.contains(host, len) {
                    return Ok(None);
                }
                buf.resize(len as usize, 0);
                img.read_into(host, &mut buf)?;
                if let (true, Some(mask), Some(last)) = (is_last, tail_mask, buf.last_mut()) {
                    *last &= mask;
                }
                hash.update(&buf);
                set += buf.iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
            }
            Slot::Invalid(_) => return Ok(None),
        }
        pos += len;
        j += 1;
    }
    Ok(Some((hex::encode(hash.finalize()), set)))
}

/// True when a bit past `nbits` is set in the last needed data cluster
/// (read up to the cluster's end, clipped to the file).
pub(crate) fn tail_bits_set<R: Read + Seek>(
    img: &mut Image<R>,
    geo: Geo,
    slots: &[Slot],
) -> Result<Option<u64>, CheckError> {
    let needed = geo.needed();
    if needed == 0 || geo.cluster_bits > 62 || needed > slots.len() as u128 {
        return Ok(None);
    }
    let cs = 1u128 << geo.cluster_bits;
    let last = (needed - 1) as usize;
    let Slot::Data(host) = slots[last] else {
        return Ok(None);
    };
    // First byte offset (within the cluster) that holds a bit past nbits.
    let used_bits = geo.nbits() - (needed - 1) * cs * 8;
    let first_byte = (used_bits / 8) as u64;
    let partial = (used_bits % 8) as u32;
    let Some(at) = host.checked_add(first_byte) else {
        return Ok(None);
    };
    let len = (cs as u64).saturating_sub(first_byte);
    let bytes = img.read_clipped(at, len)?;
    for (k, &b) in bytes.iter().enumerate() {
        let b = if k == 0 && partial > 0 {
            b & !(((1u16 << partial) - 1) as u8)
        } else {
            b
        };
        if b != 0 {
            return Ok(Some(at + k as u64));
        }
    }
    Ok(None)
}
