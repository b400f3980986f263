//! Helpers of the guest-data targets: what a spec's writes say the virtual
//! disk holds, and re-encodings of a built image's clusters that must not
//! change what a reader sees.
//!
//! The generator stores every written guest cluster as a plain data
//! cluster (all subclusters allocated with extended L2 entries). To put
//! the other cluster kinds of the spec under the same oracle,
//! [`recode`] rewrites some of them in place:
//! - a data cluster becomes a compressed cluster (raw deflate, or zstd when
//!   the header can name compression type 1; stored, or as runs of equal
//!   bytes: see [`crate::pack`]), its compressed bytes appended to the
//!   file at an arbitrary byte offset; the old host cluster
//!   keeps its data, unreferenced, and may serve below as a preallocated
//!   cluster whose contents must not be read;
//! - with extended L2 entries, the subclusters of a data cluster that the
//!   writes leave all zero become unallocated, or read-as-zero;
//! - (version 3) guest clusters no write touches but whose L2 table exists
//!   become zero clusters, some of them preallocated (a host offset with
//!   non-zero data: the zero flag, or the zero bits, must win).
//!
//! Refcounts are not updated: the image is no longer a conforming one,
//! but every L1/L2 entry still follows the spec's encoding, so the guest
//! data an implementation must read is unchanged.

use arbitrary::{Result, Unstructured};
use generator::build::Layout;
use generator::ImageSpec;
use spec_model::fields::header as hf;
use spec_model::fields::mapping as m;

/// The bytes `[offset, offset + len)` of the virtual disk that `spec`
/// describes: zeros, overlaid by every write in order (later writes win).
pub fn expected(spec: &ImageSpec, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let end = offset + len as u64;
    for w in &spec.writes {
        let (a, b) = (w.offset.max(offset), (w.offset + w.len).min(end));
        if a < b {
            out[(a - offset) as usize..(b - offset) as usize].fill(w.pattern);
        }
    }
    out
}

/// What [`recode`] changed, for assertion messages.
#[derive(Debug, Default)]
pub struct Recoded {
    pub zstd: bool,
    pub compressed: Vec<u64>,
    pub subclusters: Vec<u64>,
    pub zero: Vec<u64>,
}

/// At most this many clusters of one image are compressed.
const MAX_COMPRESSED: usize = 2;

fn get64(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put64(b: &mut [u8], at: u64, v: u64) {
    let at = at as usize;
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites some clusters of the image `bytes` that `build(spec)` made
/// (with `layout`) as described in the module documentation, choosing
/// which and how from `u`.
pub fn recode(
    bytes: &mut Vec<u8>,
    spec: &ImageSpec,
    layout: &Layout,
    u: &mut Unstructured,
) -> Result<Recoded> {
    let mut done = Recoded::default();
    let cb = layout.cluster_bits;
    let cs = 1u64 << cb;
    // Room for the compressed clusters: the image is copied once at most.
    bytes.reserve(MAX_COMPRESSED * (cs as usize + 1024));
    let v3 = spec.version == 3;
    let ext_l2 = spec.extended_l2 && v3;
    let es = if ext_l2 { 16 } else { 8 };
    let l2_entries = cs / es;
    // zstd needs the compression type field (header_length >= 112) and
    // incompatible bit 3.
    if v3 && spec.header_length as usize > hf::COMPRESSION_TYPE.offset && u.ratio(1u8, 3)? {
        hf::COMPRESSION_TYPE.put(bytes, 1);
        let f = hf::INCOMPATIBLE_FEATURES.get(bytes) | hf::INCOMPAT_COMPRESSION;
        hf::INCOMPATIBLE_FEATURES.put(bytes, f);
        done.zstd = true;
    }
    let l2_of = |gc: u64| {
        layout
            .l2_tables
            .iter()
            .find(|(l1i, _)| *l1i == gc / l2_entries)
            .map(|&(_, off)| off + (gc % l2_entries) * es)
    };
    // Host clusters whose data no entry references any more.
    let mut orphans: Vec<u64> = Vec::new();
    let sc = cs / 32;
    for &(gc, host) in &layout.data_clusters {
        let Some(e_at) = l2_of(gc) else {
            continue;
        };
        match u.int_in_range(0u8..=3)? {
            // A few per image: each copies a cluster and grows the file.
            1 if done.compressed.len() < MAX_COMPRESSED => {
                let data = &bytes[host as usize..(host + cs) as usize];
                let runs = u.arbitrary()?;
                let packed = match (done.zstd, runs) {
                    (true, _) => crate::pack::zstd(data, runs),
                    (false, true) => crate::pack::deflate_runs(data),
                    (false, false) => crate::pack::deflate_stored(data),
                };
                // Any byte offset will do; vary its position in a sector.
                let at = bytes.len() as u64 + u64::from(u.int_in_range(0u16..=511)?);
                let sectors = (at + packed.len() as u64 - 1) / 512 - at / 512;
                let x = 62 - (cb - 8);
                if at >= 1 << x || sectors >= 1 << (cb - 8) {
                    continue;
                }
                bytes.resize(at as usize, 0);
                bytes.extend_from_slice(&packed);
                put64(bytes, e_at, m::COMPRESSED | sectors << x | at);
                if ext_l2 {
                    put64(bytes, e_at + 8, 0);
                }
                orphans.push(host);
                done.compressed.push(gc);
            }
            2 if ext_l2 => {
                let mut bits = get64(bytes, e_at + 8);
                for i in 0..32 {
                    let (a, b) = (gc * cs + i * sc, gc * cs + (i + 1) * sc);
                    // Patterns are never 0: a subcluster no write touches
                    // is the only kind that reads as zeros.
                    let untouched = spec
                        .writes
                        .iter()
                        .all(|w| w.offset + w.len <= a || w.offset >= b);
                    if untouched && u.arbitrary()? {
                        bits &= !(1u64 << i);
                        if u.arbitrary()? {
                            bits |= 1 << (32 + i);
                        }
                    }
                }
                put64(bytes, e_at + 8, bits);
                done.subclusters.push(gc);
            }
            _ => {}
        }
    }
    // Unwritten guest clusters covered by an existing L2 table.
    if v3 {
        let size_clusters = spec.size.div_ceil(cs);
        for _ in 0..u.int_in_range(0u8..=4)? {
            let Some(&(l1i, _)) = layout
                .l2_tables
                .get(u.choose_index(layout.l2_tables.len().max(1))?)
            else {
                break;
            };
            let gc = l1i * l2_entries + u.int_in_range(0..=l2_entries - 1)?;
            if gc >= size_clusters || layout.data_clusters.iter().any(|&(g, _)| g == gc) {
                continue;
            }
            let Some(e_at) = l2_of(gc) else {
                continue;
            };
            let host = if orphans.is_empty() || u.arbitrary()? {
                0
            } else {
                orphans[u.choose_index(orphans.len())?]
            };
            if ext_l2 {
                put64(bytes, e_at, host);
                put64(bytes, e_at + 8, 0xffff_ffffu64 << 32);
            } else {
                put64(bytes, e_at, host | m::ZERO);
            }
            done.zero.push(gc);
        }
    }
    Ok(done)
}
