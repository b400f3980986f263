//! Guest data as a reader of the virtual disk sees it (spec "Cluster
//! mapping", "Extended L2 Entries", compressed clusters): the model's answer
//! for what an implementation must read back.

use crate::fields::header::{AUTOCLEAR_RAW_EXTERNAL, INCOMPAT_EXTERNAL_DATA};
use crate::fields::mapping as m;
use crate::header::{Header, MIN_CLUSTER_BITS, QEMU_MAX_CLUSTER_BITS};
use crate::io::{CheckError, Image};
use crate::layers::{read_backing, read_zero_extended, GuestSource, Layers};
use crate::zeros::nonzero_table_entries;
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

/// The virtual offsets of the guest clusters whose entry in the active L2
/// tables is not all zero (data, zero-flagged and compressed clusters; with
/// extended L2 entries, also an entry with only subcluster bits set), in
/// ascending order and all below the virtual size: where a reader of the
/// virtual disk finds clusters allocated.
///
/// Offsets are taken as [`crate::fields::mapping::L1_OFFSET_MASK`] gives
/// them, unaligned ones included, as [`GuestReader`] follows them; nothing
/// is validated or reported here. Only the L1 entries the virtual size
/// needs are read, and only when they all lie inside the file; an L2 table
/// is read only when it lies wholly inside the file. At most
/// `max_l2_tables` L2 table offsets are followed (one outside the file
/// counts too). Work and memory stay bounded by the file and that limit,
/// never by a size field. Empty when `cluster_bits` lies outside
/// [`MIN_CLUSTER_BITS`]..=[`QEMU_MAX_CLUSTER_BITS`].
pub fn allocated_clusters<R: Read + Seek>(
    img: &mut Image<R>,
    h: &Header,
    max_l2_tables: usize,
) -> Result<Vec<u64>, CheckError> {
    let mut out = Vec::new();
    if !(MIN_CLUSTER_BITS..=QEMU_MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
        return Ok(out);
    }
    let cs = h.cluster_size();
    let l2_entries = h.l2_entries();
    // At most `l1_size` (a u32) entries, so the byte count cannot overflow.
    let l1_needed = h.l1_entries_needed(h.size).min(u128::from(h.l1_size)) as u64;
    if !img.contains(h.l1_table_offset, l1_needed * 8) {
        return Ok(out);
    }
    let mut l2 = Vec::new();
    let mut tables = 0usize;
    // A chunk of the L1 table at a time (it can claim 32 GiB).
    let mut chunks = crate::io::Chunks::new(h.l1_table_offset, l1_needed * 8);
    'chunks: while let Some((base, bytes)) = chunks.next(img)? {
        for (k, raw) in nonzero_table_entries(bytes, 8) {
            let i = (base / 8) as usize + k;
            let l2_off = u64::from_be_bytes(raw.try_into().unwrap_or_default()) & m::L1_OFFSET_MASK;
            if l2_off == 0 {
                continue;
            }
            tables += 1;
            if tables > max_l2_tables {
                break 'chunks;
            }
            if !img.contains(l2_off, cs) {
                continue;
            }
            l2.resize(cs as usize, 0);
            img.read_into(l2_off, &mut l2)?;
            let first = i as u64 * l2_entries;
            for (j, _) in nonzero_table_entries(&l2, h.l2_entry_size() as usize) {
                let Some(virt) = (first + j as u64).checked_mul(cs).filter(|&v| v < h.size) else {
                    break;
                };
                out.push(virt);
            }
        }
    }
    Ok(out)
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
    /// clusters read from the backing image in `layers` (zeros past its
    /// size), or as zeros for an image without one; data clusters of an
    /// image with an external data file read from `layers.data_file`. An
    /// image that needs a layer `layers` lacks is refused.
    pub fn read<R: Read + Seek>(
        &mut self,
        img: &mut Image<R>,
        h: &Header,
        offset: u64,
        buf: &mut [u8],
        layers: &mut Layers<'_>,
    ) -> Result<(), GuestError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= h.size)
            .ok_or_else(|| unreadable(offset, format!("past the virtual size {}", h.size)))?;
        if h.backing_file_offset != 0 && layers.backing.is_none() {
            return Err(unreadable(offset, "the image has a backing file"));
        }
        let external = h.incompatible_features & INCOMPAT_EXTERNAL_DATA != 0;
        let mut data = match (external, layers.data_file.as_deref_mut()) {
            (false, _) => None,
            (true, None) => {
                return Err(unreadable(
                    offset,
                    "guest data lives in an external data file",
                ))
            }
            (true, Some(d)) => Some(Image::new(d)?),
        };
        if h.crypt_method != 0 {
            return Err(unreadable(offset, "the image is encrypted"));
        }
        // With data_file_raw the data file is the guest disk itself.
        if let Some(d) = data
            .as_mut()
            .filter(|_| h.autoclear_features & AUTOCLEAR_RAW_EXTERNAL != 0)
        {
            return read_zero_extended(d, offset, buf);
        }
        let mut backing: Option<&mut dyn GuestSource> = match layers.backing.as_mut() {
            Some(b) => Some(&mut **b),
            None => None,
        };
        if h.cluster_bits > crate::header::QEMU_MAX_CLUSTER_BITS {
            return Err(unreadable(
                offset,
                "clusters larger than 2 MiB are not read",
            ));
        }
        if self.l1.is_none() {
            let bytes = u64::from(h.l1_size) * 8;
            let table = crate::io::read_u64_table(img, "L1 table", h.l1_table_offset, bytes / 8)?
                .ok_or_else(|| unreadable(offset, "the L1 table lies outside the file"))?;
            self.l1 = Some(table);
        }
        let cs = h.cluster_size();
        let mut pos = offset;
        let mut cluster = Vec::new();
        while pos < end {
            let gc = pos / cs;
            let within = (pos % cs) as usize;
            let n = ((cs - pos % cs).min(end - pos)) as usize;
            let mut src = Sources {
                data: data.as_mut(),
                backing: match backing.as_mut() {
                    Some(b) => Some(&mut **b),
                    None => None,
                },
            };
            self.cluster(img, h, gc, &mut cluster, &mut src)?;
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&cluster[within..within + n]);
            pos += n as u64;
        }
        Ok(())
    }

    /// The `cs` bytes of guest cluster `gc`.
    fn cluster<R: Read + Seek, D: Read + Seek>(
        &self,
        img: &mut Image<R>,
        h: &Header,
        gc: u64,
        out: &mut Vec<u8>,
        src: &mut Sources<'_, D>,
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
            return read_backing(src.backing(), at, out);
        }
        let es = h.l2_entry_size();
        let e_at = l2_off + (gc % l2_entries) * es;
        let raw = img
            .read_checked(e_at, es)?
            .ok_or_else(|| unreadable(at, "L2 entry outside the file"))?;
        let e = u64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
        if e & m::COMPRESSED != 0 {
            if src.data.is_some() {
                return Err(unreadable(
                    at,
                    "a compressed cluster in an image with an external data file",
                ));
            }
            return self.compressed(img, h, e, at, out);
        }
        let host = e & m::L2_OFFSET_MASK;
        if !h.extended_l2() {
            if e & m::ZERO != 0 && h.version == 3 {
                return Ok(());
            }
            // Host offset 0 means unallocated, unless an external data
            // file is used and bit 63 is set (spec "Cluster mapping").
            if host == 0 && (src.data.is_none() || e & m::COPIED == 0) {
                return read_backing(src.backing(), at, out);
            }
            return src.read_host(img, host, at, out);
        }
        // Extended L2: 32 subclusters with allocated / zero bits; neither
        // set: unallocated, read from the backing image.
        let sub = u64::from_be_bytes(raw[8..16].try_into().unwrap_or_default());
        let sc = (cs / 32) as usize;
        let mut data = Vec::new();
        let mut below = Vec::new();
        for i in 0..32 {
            let (alloc, zero) = ((sub >> i) & 1 == 1, (sub >> (32 + i)) & 1 == 1);
            let part = i * sc..(i + 1) * sc;
            if alloc && !zero {
                if data.is_empty() {
                    data.resize(cs as usize, 0);
                    src.read_host(img, host, at, &mut data)?;
                }
                out[part.clone()].copy_from_slice(&data[part]);
            } else if !alloc && !zero && src.backing.is_some() {
                if below.is_empty() {
                    below.resize(cs as usize, 0);
                    read_backing(src.backing(), at, &mut below)?;
                }
                out[part.clone()].copy_from_slice(&below[part]);
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

/// Where one guest read finds what the image does not hold.
struct Sources<'d, D> {
    data: Option<&'d mut Image<D>>,
    backing: Option<&'d mut dyn GuestSource>,
}

impl<D: Read + Seek> Sources<'_, D> {
    /// The backing layer, reborrowed.
    fn backing(&mut self) -> Option<&mut dyn GuestSource> {
        match &mut self.backing {
            Some(b) => Some(&mut **b),
            None => None,
        }
    }

    /// A data cluster at `host`: from the external data file when there is
    /// one, else from the image.
    fn read_host<R: Read + Seek>(
        &mut self,
        img: &mut Image<R>,
        host: u64,
        at: u64,
        out: &mut [u8],
    ) -> Result<(), GuestError> {
        match self.data.as_deref_mut() {
            Some(d) => read_host(d, host, at, out),
            None => read_host(img, host, at, out),
        }
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

#[cfg(test)]
mod tests {
    use super::allocated_clusters;
    use crate::fields::header::INCOMPAT_EXTENDED_L2;
    use crate::fields::mapping as m;
    use crate::header::Header;
    use crate::io::Image;
    use std::io::Cursor;

    /// A header with 512-byte clusters (64 entries per L2 table, 32 KiB of
    /// guest data per L1 entry) and its L1 table at 512.
    fn header(size: u64, l1_size: u32) -> Header {
        Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: 9,
            size,
            crypt_method: 0,
            l1_size,
            l1_table_offset: 512,
            refcount_table_offset: 0,
            refcount_table_clusters: 0,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: 104,
            compression_type: 0,
            raw: Vec::new(),
        }
    }

    fn put(file: &mut [u8], at: usize, v: u64) {
        file[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    fn allocated(file: &[u8], h: &Header, max_l2_tables: usize) -> Vec<u64> {
        let mut img = Image::new(Cursor::new(file)).unwrap();
        allocated_clusters(&mut img, h, max_l2_tables).unwrap()
    }

    #[test]
    fn lists_every_non_zero_l2_entry_below_the_virtual_size() {
        let mut file = vec![0u8; 4096];
        // L1: tables at 1024 and 1536 (with the COPIED bit), an unused
        // entry between them, and an entry past the virtual size.
        put(&mut file, 512, 1024 | m::COPIED);
        put(&mut file, 512 + 16, 1536);
        put(&mut file, 512 + 24, 2048);
        // Data, zero-flagged and compressed entries in the first table.
        put(&mut file, 1024, 3072 | m::COPIED);
        put(&mut file, 1024 + 5 * 8, m::ZERO);
        put(&mut file, 1024 + 7 * 8, m::COMPRESSED | 3584);
        // The third L1 entry's table: entry 1 in range, entry 63 past the
        // virtual size, which ends at that cluster.
        put(&mut file, 1536 + 8, 3072);
        put(&mut file, 1536 + 63 * 8, 3072);
        put(&mut file, 2048, 3072);
        let h = header(2 * 32768 + 63 * 512, 4);
        assert_eq!(
            allocated(&file, &h, 256),
            vec![0, 5 * 512, 7 * 512, 2 * 32768 + 512]
        );
        // Only the first table is followed.
        assert_eq!(allocated(&file, &h, 1), vec![0, 5 * 512, 7 * 512]);
        // A table outside the file counts towards the limit.
        put(&mut file, 512, 1 << 20);
        assert_eq!(allocated(&file, &h, 1), Vec::<u64>::new());
        assert_eq!(allocated(&file, &h, 2), vec![2 * 32768 + 512]);
    }

    #[test]
    fn extended_entries_with_only_subcluster_bits_count() {
        let mut file = vec![0u8; 2048];
        put(&mut file, 512, 1024);
        // 16-byte entries: entry 2 has only its subcluster bitmap set.
        put(&mut file, 1024 + 2 * 16 + 8, 1 << 32);
        let mut h = header(1 << 20, 1);
        h.incompatible_features = INCOMPAT_EXTENDED_L2;
        assert_eq!(allocated(&file, &h, 256), vec![2 * 512]);
    }

    /// Reads `len` guest bytes from 0 of `file` under `h` through `layers`.
    fn read(
        file: &[u8],
        h: &Header,
        len: usize,
        layers: &mut crate::layers::Layers<'_>,
    ) -> Result<Vec<u8>, super::GuestError> {
        let mut img = Image::new(Cursor::new(file)).unwrap();
        let mut buf = vec![0xeeu8; len];
        super::GuestReader::new().read(&mut img, h, 0, &mut buf, layers)?;
        Ok(buf)
    }

    #[test]
    fn unallocated_clusters_fall_through_to_the_backing_image() {
        use crate::layers::{Layers, RawSource};
        let mut file = vec![0u8; 2048];
        put(&mut file, 512, 1024);
        put(&mut file, 1024, 1536 | m::COPIED); // cluster 0: data
        put(&mut file, 1024 + 8, m::ZERO); // cluster 1: zeros
        file[1536..2048].fill(0xaa); // cluster 2, 3: unallocated
        let mut h = header(4 * 512, 1);
        h.backing_file_offset = 104;
        assert!(read(&file, &h, 2048, &mut Layers::default()).is_err());
        // A backing image that ends 100 bytes into cluster 2.
        let mut raw = RawSource::new(Cursor::new(vec![0x55u8; 2 * 512 + 100])).unwrap();
        let mut layers = Layers {
            backing: Some(&mut raw),
            data_file: None,
        };
        let got = read(&file, &h, 2048, &mut layers).unwrap();
        let mut want = vec![0xaau8; 512];
        want.extend([0u8; 512]);
        want.extend([0x55u8; 100]);
        want.extend(vec![0u8; 412 + 512]);
        assert_eq!(got, want);
    }

    #[test]
    fn data_clusters_come_from_the_external_data_file() {
        use crate::fields::header::{AUTOCLEAR_RAW_EXTERNAL, INCOMPAT_EXTERNAL_DATA};
        use crate::layers::Layers;
        let mut file = vec![0u8; 1536];
        put(&mut file, 512, 1024);
        // Cluster 0 at data-file offset 0 (bit 63 set), cluster 1 at 1024,
        // cluster 2 unallocated (offset 0, bit 63 clear).
        put(&mut file, 1024, m::COPIED);
        put(&mut file, 1024 + 8, 1024 | m::COPIED);
        let mut data: Vec<u8> = (0..1536u32).map(|i| (i / 512 + 1) as u8).collect();
        let mut h = header(3 * 512, 1);
        h.incompatible_features = INCOMPAT_EXTERNAL_DATA;
        assert!(read(&file, &h, 1536, &mut Layers::default()).is_err());
        let mut reader = Cursor::new(&mut data);
        let mut layers = Layers {
            backing: None,
            data_file: Some(&mut reader),
        };
        let got = read(&file, &h, 1536, &mut layers).unwrap();
        let mut want = vec![1u8; 512];
        want.extend([3u8; 512]);
        want.extend([0u8; 512]);
        assert_eq!(got, want);
        // data_file_raw: the data file is the guest disk.
        h.autoclear_features = AUTOCLEAR_RAW_EXTERNAL;
        let mut reader = Cursor::new(&mut data);
        let mut layers = Layers {
            backing: None,
            data_file: Some(&mut reader),
        };
        let got = read(&file, &h, 1536, &mut layers).unwrap();
        assert_eq!(
            got,
            (0..1536u32)
                .map(|i| (i / 512 + 1) as u8)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn nothing_when_the_tables_cannot_be_read() {
        let mut file = vec![0u8; 2048];
        put(&mut file, 512, 1024);
        put(&mut file, 1024, 1536);
        let mut h = header(1 << 20, 1);
        assert_eq!(allocated(&file, &h, 256), vec![0]);
        // L1 past the end of the file.
        h.l1_table_offset = 4096;
        assert!(allocated(&file, &h, 256).is_empty());
        // Cluster sizes outside 512 bytes to 2 MiB.
        for bits in [0, 8, 22, 63, 64, 200] {
            let mut h = header(1 << 20, 1);
            h.cluster_bits = bits;
            assert!(allocated(&file, &h, 256).is_empty(), "cluster_bits {bits}");
        }
    }

    #[test]
    fn never_panics_nor_outgrows_the_file() {
        fn prop(file: Vec<u8>, size: u64, l1_size: u32, l1_offset: u64, bits: u8) -> bool {
            let mut h = header(size, l1_size);
            h.l1_table_offset = l1_offset % 4096;
            h.cluster_bits = u32::from(bits % 24);
            let got = allocated(&file, &h, 8);
            // Each listed cluster has its own non-zero entry in the file.
            got.len() <= file.len() / 8 && got.windows(2).all(|w| w[0] < w[1])
        }
        quickcheck::QuickCheck::new()
            .tests(2000)
            .quickcheck(prop as fn(Vec<u8>, u64, u32, u64, u8) -> bool);
        // The largest virtual size.
        let mut file = vec![0u8; 2048];
        put(&mut file, 512, 1024);
        put(&mut file, 1024 + 63 * 8, 1536);
        assert_eq!(allocated(&file, &header(u64::MAX, 1), 256), vec![63 * 512]);
    }
}
