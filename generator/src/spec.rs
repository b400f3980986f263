//! `ImageSpec`: everything the generator can vary about a valid image, and
//! the `Config` that bounds random specs (in the manner of wasm-smith).

use crate::contents::Contents;
use arbitrary::{Result, Unstructured};
use serde::{Deserialize, Serialize};
use spec_model::bitmaps::content::Geometry;

/// One guest write: `len` bytes of `pattern` at virtual offset `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestWrite {
    pub offset: u64,
    pub len: u64,
    pub pattern: u8,
}

impl GuestWrite {
    /// `len` bytes of `pattern` at virtual offset `offset`.
    pub const fn new(offset: u64, len: u64, pattern: u8) -> GuestWrite {
        GuestWrite {
            offset,
            len,
            pattern,
        }
    }
}

/// A header extension of a type the spec does not define.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownExtension {
    pub ext_type: u32,
    pub data: Vec<u8>,
}

/// One bitmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitmapSpec {
    /// Name bytes (unique within the image).
    pub name: Vec<u8>,
    pub granularity_bits: u8,
    /// The entry's `type` field: 1 (dirty tracking) is the only defined
    /// value; anything else makes the image invalid (`bitmaps.dir.type`).
    #[serde(default = "dirty_tracking")]
    pub bitmap_type: u8,
    pub in_use: bool,
    pub auto: bool,
    pub extra_data_compatible: bool,
    pub extra_data: Vec<u8>,
    pub contents: Contents,
    /// Store all-zero clusters as zero table entries (as QEMU does) rather
    /// than as allocated clusters of zeros.
    pub zero_entries: bool,
    /// Store all-one clusters as all-ones table entries (bit 0 set).
    pub ones_entries: bool,
}

fn dirty_tracking() -> u8 {
    1
}

impl BitmapSpec {
    /// A dirty-tracking bitmap with the `auto` flag as QEMU makes it: not
    /// in use, no extra data, all-zero clusters as zero table entries.
    pub fn new(name: &str, granularity_bits: u8, contents: Contents) -> BitmapSpec {
        BitmapSpec {
            name: name.as_bytes().to_vec(),
            granularity_bits,
            bitmap_type: 1,
            in_use: false,
            auto: true,
            extra_data_compatible: false,
            extra_data: Vec::new(),
            contents,
            zero_entries: true,
            ones_entries: false,
        }
    }

    /// The directory entry's flags field.
    pub fn flags(&self) -> u32 {
        u32::from(self.in_use)
            | u32::from(self.auto) << 1
            | u32::from(self.extra_data_compatible) << 2
    }
}

/// Where structures go in the file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayoutSpec {
    /// Leave random free clusters between structures (seeded).
    pub scatter_seed: Option<u64>,
    /// Allocate the bitmaps' clusters before the guest data's.
    pub bitmaps_first: bool,
    /// Allocate the bitmap directory before the bitmap tables and data.
    pub directory_first: bool,
}

/// A complete description of one valid image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// 2 or 3.
    pub version: u32,
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Version 3 only (version 2 implies 4).
    pub refcount_order: u32,
    /// Version 3 only: at least 104, a multiple of 8.
    pub header_length: u32,
    /// Extended L2 entries (version 3, cluster_bits >= 14).
    pub extended_l2: bool,
    pub feature_name_table: bool,
    /// A backing file format name extension (without a backing file).
    pub backing_format: Option<String>,
    pub unknown_extensions: Vec<UnknownExtension>,
    pub writes: Vec<GuestWrite>,
    /// Internal snapshots, taken after all writes.
    pub snapshots: Vec<String>,
    pub bitmaps: Vec<BitmapSpec>,
    pub layout: LayoutSpec,
}

impl ImageSpec {
    /// A small v3 image with no data and no bitmaps.
    pub fn empty(size: u64) -> ImageSpec {
        ImageSpec {
            version: 3,
            cluster_bits: 16,
            size,
            refcount_order: 4,
            header_length: 112,
            extended_l2: false,
            feature_name_table: false,
            backing_format: None,
            unknown_extensions: Vec::new(),
            writes: Vec::new(),
            snapshots: Vec::new(),
            bitmaps: Vec::new(),
            layout: LayoutSpec::default(),
        }
    }

    /// Bytes the header and its extensions (with the end marker) take in
    /// the first cluster.
    pub fn header_area_len(&self) -> u64 {
        let pad = |n: usize| 8 + (n as u64).div_ceil(8) * 8;
        let mut n = if self.version == 2 {
            72
        } else {
            u64::from(self.header_length)
        };
        if self.feature_name_table && self.version == 3 {
            n += pad(8 * 48);
        }
        if let Some(f) = &self.backing_format {
            n += pad(f.len());
        }
        if !self.bitmaps.is_empty() {
            n += pad(24);
        }
        for u in &self.unknown_extensions {
            n += pad(u.data.len());
        }
        n + 8
    }

    /// The geometry of bitmap `b` in this image.
    pub fn geometry(&self, b: &BitmapSpec) -> Geometry {
        Geometry {
            size: self.size,
            granularity_bits: u32::from(b.granularity_bits),
            cluster_bits: self.cluster_bits,
        }
    }

    /// Sets the bits of every bitmap with `auto` that `writes` touch, the way
    /// a bitmap-aware writer must.
    pub fn record_writes_in_auto_bitmaps(&mut self) {
        let writes = self.writes.clone();
        let size = self.size;
        for b in self.bitmaps.iter_mut().filter(|b| b.auto) {
            let g = u32::from(b.granularity_bits);
            let geo = Geometry {
                size,
                granularity_bits: g,
                cluster_bits: self.cluster_bits,
            };
            let mut r = b.contents.ranges(geo.nbits());
            for w in writes.iter().filter(|w| w.len > 0) {
                r.push((w.offset >> g, ((w.offset + w.len - 1) >> g) + 1));
            }
            b.contents = Contents::Ranges(crate::contents::normalise(&r, geo.nbits()));
        }
    }
}

/// Bounds and switches for random specs.
#[derive(Debug, Clone)]
pub struct Config {
    pub versions: Vec<u32>,
    pub min_cluster_bits: u32,
    pub max_cluster_bits: u32,
    pub max_size: u64,
    pub allow_zero_size: bool,
    /// Virtual sizes that are not multiples of 512.
    pub allow_unaligned_size: bool,
    pub max_refcount_order: u32,
    pub max_bitmaps: usize,
    pub min_granularity_bits: u8,
    pub max_granularity_bits: u8,
    pub max_name_len: usize,
    pub max_writes: usize,
    pub max_write_len: u64,
    pub max_snapshots: usize,
    pub allow_in_use: bool,
    pub allow_extra_data: bool,
    /// Set flag bit 2 (`extra_data_compatible`) on some bitmaps. QEMU treats
    /// the bit as reserved and refuses the whole image, so its profile
    /// leaves it clear (see docs/findings.md).
    pub allow_compatible_flag: bool,
    pub allow_extended_l2: bool,
    pub allow_unknown_extensions: bool,
    pub allow_backing_format: bool,
    pub allow_ones_entries: bool,
    pub allow_scatter: bool,
    /// Let `auto` bitmaps record the guest writes (as QEMU would have).
    pub record_writes: bool,
}

impl Default for Config {
    /// Everything the spec allows in a valid image (verdict `valid`, with
    /// notes and limits), at sizes that keep images small.
    fn default() -> Self {
        Config {
            versions: vec![2, 3],
            min_cluster_bits: 9,
            max_cluster_bits: 21,
            max_size: 64 << 20,
            allow_zero_size: true,
            allow_unaligned_size: true,
            max_refcount_order: 6,
            max_bitmaps: 4,
            min_granularity_bits: 0,
            max_granularity_bits: 63,
            max_name_len: 1100,
            max_writes: 6,
            max_write_len: 256 << 10,
            max_snapshots: 2,
            allow_in_use: true,
            allow_extra_data: true,
            allow_compatible_flag: true,
            allow_extended_l2: true,
            allow_unknown_extensions: true,
            allow_backing_format: true,
            allow_ones_entries: true,
            allow_scatter: true,
            record_writes: true,
        }
    }
}

impl Config {
    /// Images within QEMU's documented limits, with bitmaps QEMU will use.
    pub fn qemu() -> Self {
        Config {
            min_granularity_bits: 9,
            max_granularity_bits: 31,
            max_name_len: 1023,
            allow_unaligned_size: false,
            allow_in_use: false,
            allow_extra_data: false,
            allow_compatible_flag: false,
            allow_backing_format: false,
            ..Config::default()
        }
    }

    /// Small images for throughput: 64 KiB clusters, up to 64 MiB, up to 4
    /// bitmaps.
    pub fn small() -> Self {
        Config {
            min_cluster_bits: 16,
            max_cluster_bits: 16,
            ..Config::qemu()
        }
    }

    /// Tiny images for the checked-in corpus: 512 B to 16 KiB clusters, up
    /// to 4 MiB virtual, few and short writes, at most 2 bitmaps.
    pub fn tiny() -> Self {
        Config {
            min_cluster_bits: 9,
            max_cluster_bits: 14,
            max_size: 4 << 20,
            max_bitmaps: 2,
            max_writes: 2,
            max_write_len: 16 << 10,
            max_snapshots: 1,
            max_name_len: 64,
            ..Config::qemu()
        }
    }
}

fn pick_name(u: &mut Unstructured, cfg: &Config, index: usize) -> Result<Vec<u8>> {
    let style = u.int_in_range(0u8..=9)?;
    let mut name = match style {
        0 => vec![b'a' + (index % 26) as u8],
        1 => {
            let n = u.int_in_range(1..=cfg.max_name_len.max(1))?;
            (0..n).map(|i| b'a' + ((i + index) % 26) as u8).collect()
        }
        2 => format!("bitmap-é-{index}").into_bytes(),
        _ => format!("b{index}-{}", u.int_in_range(0u32..=9999)?).into_bytes(),
    };
    // Unique by construction: the index is part of every long or short name.
    if style == 1 {
        let tag = format!("{index}-");
        let k = tag.len().min(name.len());
        name[..k].copy_from_slice(&tag.as_bytes()[..k]);
    }
    Ok(name)
}

fn pick_contents(u: &mut Unstructured, nbits: u64) -> Result<Contents> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => Contents::Empty,
        1 => Contents::Full,
        _ => {
            let n = u.int_in_range(1usize..=8)?;
            let mut r = Vec::with_capacity(n);
            for _ in 0..n {
                let len = match u.int_in_range(0u8..=3)? {
                    0 => 1,
                    1 => u.int_in_range(1..=64)?,
                    2 => u.int_in_range(1..=nbits.clamp(1, 1 << 20))?,
                    _ => nbits.clamp(1, 1 << 16),
                };
                // Favour the last bits, where the tail rules live.
                let start = if u.ratio(1u8, 4)? {
                    nbits.saturating_sub(len)
                } else {
                    u.int_in_range(0..=nbits.saturating_sub(1))?
                };
                r.push((start, start.saturating_add(len)));
            }
            Contents::Ranges(crate::contents::normalise(&r, nbits))
        }
    })
}

impl ImageSpec {
    /// A random spec within `cfg`.
    pub fn arbitrary_with(u: &mut Unstructured, cfg: &Config) -> Result<ImageSpec> {
        let version = *u.choose(&cfg.versions)?;
        let cluster_bits = u.int_in_range(cfg.min_cluster_bits..=cfg.max_cluster_bits)?;
        let cs = 1u64 << cluster_bits;
        let size = match u.int_in_range(0u8..=7)? {
            0 if cfg.allow_zero_size => 0,
            1 => cs * u.int_in_range(1..=64)?,
            _ => {
                let s = u.int_in_range(1..=cfg.max_size)?;
                if cfg.allow_unaligned_size {
                    s
                } else {
                    s.div_ceil(512) * 512
                }
            }
        };
        let mut spec = ImageSpec::empty(size);
        spec.version = version;
        spec.cluster_bits = cluster_bits;
        if version == 3 {
            spec.refcount_order = u.int_in_range(0..=cfg.max_refcount_order)?;
            spec.header_length = 104 + 8 * u.int_in_range(0u32..=3)?;
            spec.extended_l2 = cfg.allow_extended_l2 && cluster_bits >= 14 && u.ratio(1u8, 5)?;
            spec.feature_name_table = u.arbitrary()?;
        } else {
            spec.refcount_order = 4;
            spec.header_length = 72;
        }
        if cfg.allow_backing_format && u.ratio(1u8, 8)? {
            spec.backing_format = Some("raw".into());
        }
        if cfg.allow_unknown_extensions && u.ratio(1u8, 5)? {
            let n = u.int_in_range(1u32..=24)?;
            spec.unknown_extensions.push(UnknownExtension {
                ext_type: 0x7a00_0000 | u.int_in_range(1u32..=0xffff)?,
                data: (0..n).map(|i| i as u8 ^ 0x5a).collect(),
            });
        }
        if size > 0 {
            let n = u.int_in_range(0..=cfg.max_writes)?;
            for _ in 0..n {
                let offset = u.int_in_range(0..=size - 1)?;
                let len = u.int_in_range(1..=cfg.max_write_len.min(size - offset))?;
                let pattern = u.int_in_range(1u8..=255)?;
                spec.writes.push(GuestWrite {
                    offset,
                    len,
                    pattern,
                });
            }
        }
        // Snapshots need refcounts above 1: at most 2^bits - 2 of them.
        let max_refcount = if spec.refcount_order >= 6 {
            u64::MAX
        } else {
            (1u64 << (1u64 << spec.refcount_order)) - 1
        };
        let max_snaps = (cfg.max_snapshots as u64).min(max_refcount - 1) as usize;
        for i in 0..u.int_in_range(0..=max_snaps)? {
            spec.snapshots.push(format!("snap{i}"));
        }
        // Bitmaps: only in v3 images of non-zero size (a v2 image cannot
        // mark them consistent; a zero-size disk makes empty tables, which
        // the spec leaves unspecified).
        if version == 3 && size > 0 {
            for i in 0..u.int_in_range(0..=cfg.max_bitmaps)? {
                let granularity_bits =
                    u.int_in_range(cfg.min_granularity_bits..=cfg.max_granularity_bits)?;
                let geo = Geometry {
                    size,
                    granularity_bits: u32::from(granularity_bits),
                    cluster_bits,
                };
                // Keep bitmaps from dwarfing the image: at most 4M bits.
                if geo.nbits() > 1 << 22 {
                    continue;
                }
                let extra = cfg.allow_extra_data && u.ratio(1u8, 6)?;
                spec.bitmaps.push(BitmapSpec {
                    name: pick_name(u, cfg, i)?,
                    granularity_bits,
                    bitmap_type: 1,
                    in_use: cfg.allow_in_use && u.ratio(1u8, 6)?,
                    auto: u.arbitrary()?,
                    extra_data_compatible: cfg.allow_compatible_flag && u.arbitrary()?,
                    extra_data: if extra {
                        vec![0xa5; u.int_in_range(1usize..=20)?]
                    } else {
                        Vec::new()
                    },
                    contents: pick_contents(u, geo.nbits())?,
                    zero_entries: !u.ratio(1u8, 5)?,
                    ones_entries: cfg.allow_ones_entries && u.arbitrary()?,
                });
            }
        }
        if cfg.record_writes {
            spec.record_writes_in_auto_bitmaps();
        }
        // Optional extensions go first when the header cluster is too small.
        let cs = 1u64 << cluster_bits;
        if spec.header_area_len() > cs {
            spec.feature_name_table = false;
        }
        if spec.header_area_len() > cs {
            spec.unknown_extensions.clear();
            spec.backing_format = None;
        }
        spec.layout = LayoutSpec {
            scatter_seed: if cfg.allow_scatter && u.ratio(1u8, 3)? {
                Some(u.arbitrary()?)
            } else {
                None
            },
            bitmaps_first: u.arbitrary()?,
            directory_first: u.arbitrary()?,
        };
        Ok(spec)
    }
}

impl<'a> arbitrary::Arbitrary<'a> for ImageSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        ImageSpec::arbitrary_with(u, &Config::default())
    }
}

/// How many cases a property test over random specs runs: `QC_TESTS`
/// from the environment when it is set (a longer or a quicker run), else
/// `default`.
pub fn quickcheck_tests(default: u64) -> u64 {
    std::env::var("QC_TESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl quickcheck::Arbitrary for ImageSpec {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let bytes: Vec<u8> = (0..4096).map(|_| u8::arbitrary(g)).collect();
        let mut u = Unstructured::new(&bytes);
        ImageSpec::arbitrary_with(&mut u, &Config::default())
            .unwrap_or_else(|_| ImageSpec::empty(1 << 20))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let mut out = Vec::new();
        for i in 0..self.bitmaps.len() {
            let mut s = self.clone();
            s.bitmaps.remove(i);
            out.push(s);
        }
        for i in 0..self.writes.len() {
            let mut s = self.clone();
            s.writes.remove(i);
            out.push(s);
        }
        if !self.snapshots.is_empty() {
            let mut s = self.clone();
            s.snapshots.pop();
            out.push(s);
        }
        if !self.unknown_extensions.is_empty()
            || self.backing_format.is_some()
            || self.feature_name_table
        {
            let mut s = self.clone();
            s.unknown_extensions.clear();
            s.backing_format = None;
            s.feature_name_table = false;
            out.push(s);
        }
        if self.layout != LayoutSpec::default() {
            let mut s = self.clone();
            s.layout = LayoutSpec::default();
            out.push(s);
        }
        for (i, b) in self.bitmaps.iter().enumerate() {
            if b.contents != Contents::Empty {
                let mut s = self.clone();
                s.bitmaps[i].contents = Contents::Empty;
                out.push(s);
            }
        }
        Box::new(out.into_iter())
    }
}
