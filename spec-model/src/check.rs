//! One analysis of an image: every structure parsed and validated, every
//! cluster accounted, every usable bitmap's contents computed.

use crate::bitmaps::{content, BitmapsExt, DirEntry, ExtensionState};
use crate::clusters::{ClusterMap, Owner};
use crate::context::Ctx;
use crate::extensions::Extension;
use crate::fields::{encryption, extension};
use crate::finding::Findings;
use crate::header::{self, Header};
use crate::io::{CheckError, Image};
use crate::mapping::MappingStats;
use crate::refcount::RefcountStats;
use crate::report::{BitmapReport, Contents, Flags, Report, Verdict};
use crate::rules::Rule;
use crate::snapshots::Snapshot;
use std::io::{Read, Seek};

/// Everything one analysis found: the verdict plus the parsed structures
/// that `dump` prints and callers query.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub report: Report,
    pub file_len: u64,
    pub header: Option<Header>,
    pub extensions: Vec<Extension>,
    pub bitmaps_ext: Option<BitmapsExt>,
    pub entries: Vec<DirEntry>,
    pub snapshots: Vec<Snapshot>,
    pub mapping: MappingStats,
    pub refcounts: RefcountStats,
    pub usage: Vec<(Owner, u64)>,
}

/// An analysed image, kept open so that bitmap contents can be queried.
pub struct Model<R> {
    img: Image<R>,
    analysis: Analysis,
    guest: crate::guest::GuestReader,
}

impl<R: Read + Seek> Model<R> {
    /// Analyses the image read through `reader`.
    pub fn open(reader: R) -> Result<Model<R>, CheckError> {
        let img = Image::new(reader)?;
        analyse(img)
    }

    /// Analyses the image read through `reader`, whose data lies only in
    /// `extents` (half-open byte ranges, as `SEEK_DATA`/`SEEK_HOLE` give
    /// them): the holes read as zeros and are skipped, not read.
    pub fn open_with_data_extents(
        reader: R,
        extents: Vec<(u64, u64)>,
    ) -> Result<Model<R>, CheckError> {
        let img = Image::with_data_extents(reader, extents)?;
        analyse(img)
    }

    /// The verdict.
    pub fn report(&self) -> &Report {
        &self.analysis.report
    }

    /// Everything found.
    pub fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    /// Consumes the model, keeping the analysis.
    pub fn into_analysis(self) -> Analysis {
        self.analysis
    }

    /// The set bits of usable bitmap `index` (in directory order) as
    /// merged half-open bit ranges; `None` when the bitmap is not usable.
    pub fn set_bit_ranges(&mut self, index: usize) -> Result<Option<Vec<(u64, u64)>>, CheckError> {
        let Some((geo, table)) = self.usable_table(index) else {
            return Ok(None);
        };
        let table = table.to_vec();
        content::set_ranges(&mut self.img, geo, &table).map(Some)
    }

    /// The virtual disk byte ranges that usable bitmap `index` marks dirty,
    /// merged and clipped to the virtual size.
    pub fn dirty_ranges(&mut self, index: usize) -> Result<Option<Vec<(u64, u64)>>, CheckError> {
        let Some((geo, _)) = self.usable_table(index) else {
            return Ok(None);
        };
        Ok(self.set_bit_ranges(index)?.map(|r| {
            r.into_iter()
                .map(|(a, b)| geo.virtual_range(a, b))
                .collect()
        }))
    }

    /// Reads virtual disk bytes at `offset` into `buf`, as the spec says a
    /// reader must see them (zero clusters, subclusters and compressed
    /// clusters resolved). Refused for images with a backing file, an
    /// external data file or encryption, and for header-less files; see
    /// [`Model::read_guest_with`] for the first two.
    pub fn read_guest(
        &mut self,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), crate::guest::GuestError> {
        self.read_guest_with(offset, buf, &mut crate::layers::Layers::default())
    }

    /// [`Model::read_guest`] through the caller's `layers`: unallocated
    /// clusters fall through to the backing image (zeros past its size),
    /// data clusters are read from the external data file (with
    /// `data_file_raw`, the guest offset is the data-file offset). An image
    /// that needs a layer the caller does not supply is refused.
    pub fn read_guest_with(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        layers: &mut crate::layers::Layers<'_>,
    ) -> Result<(), crate::guest::GuestError> {
        let Some(h) = self.analysis.header.as_ref() else {
            return Err(crate::guest::GuestError::Unreadable {
                offset,
                reason: "not a qcow2 image".into(),
            });
        };
        self.guest.read(&mut self.img, h, offset, buf, layers)
    }

    /// The data bytes of usable bitmap `index` (bits LSB first, tail cleared).
    pub fn bitmap_bytes(&mut self, index: usize) -> Result<Option<Vec<u8>>, CheckError> {
        let Some((geo, table)) = self.usable_table(index) else {
            return Ok(None);
        };
        let table = table.to_vec();
        // The whole bitmap in memory: refused past the model's limit.
        let mut out = Vec::new();
        crate::io::reserve(&mut out, "bitmap data", geo_offset(&table), geo.nbytes())?;
        content::stream(&mut self.img, geo, &table, |c| match c {
            content::Chunk::Zeros(n) => out.resize(out.len() + n as usize, 0),
            content::Chunk::Ones(n) => out.resize(out.len() + n as usize, 0xff),
            content::Chunk::Bytes(b) => out.extend_from_slice(b),
        })?;
        Ok(Some(out))
    }

    fn usable_table(&self, index: usize) -> Option<(content::Geometry, &[u64])> {
        let a = &self.analysis;
        let h = a.header.as_ref()?;
        if !a.report.bitmaps.get(index)?.usable {
            return None;
        }
        let e = a.entries.get(index)?;
        Some((e.geometry(h.size, h.cluster_bits), e.table.as_deref()?))
    }
}

/// Checks the image read through `reader`.
pub fn check<R: Read + Seek>(reader: R) -> Result<Report, CheckError> {
    Model::open(reader).map(|m| m.analysis.report)
}

/// Checks an image held in memory. Never fails: reading a slice cannot.
pub fn check_bytes(bytes: &[u8]) -> Report {
    match check(std::io::Cursor::new(bytes)) {
        Ok(r) => r,
        Err(e) => unreachable_report(e),
    }
}

/// Checks the image file at `path`.
pub fn check_path(path: impl AsRef<std::path::Path>) -> Result<Report, CheckError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| CheckError::Open {
        path: path.display().to_string(),
        source,
    })?;
    check(file)
}

/// Where a bitmap's data starts, for messages: its first data cluster.
fn geo_offset(table: &[u64]) -> u64 {
    table
        .first()
        .map_or(0, |e| e & crate::fields::bitmap_table_entry::OFFSET_MASK)
}

fn unreachable_report(e: CheckError) -> Report {
    // A Cursor over a slice never returns an I/O error; keep the type total.
    Report {
        verdict: Verdict::Invalid,
        bitmaps_extension: ExtensionState::Absent,
        findings: vec![crate::finding::Finding {
            rule: Rule::HeaderTruncated,
            severity: crate::rules::Severity::Error,
            offset: 0,
            message: e.to_string().into(),
        }],
        bitmaps: Vec::new(),
    }
}

fn analyse<R: Read + Seek>(mut img: Image<R>) -> Result<Model<R>, CheckError> {
    let file_len = img.len();
    let mut findings = Findings::default();
    let Some(h) = header::parse(&mut img, &mut findings)? else {
        let findings = findings.into_sorted();
        let analysis = Analysis {
            report: Report {
                verdict: Verdict::of(&findings),
                bitmaps_extension: ExtensionState::Absent,
                findings,
                bitmaps: Vec::new(),
            },
            file_len,
            header: None,
            extensions: Vec::new(),
            bitmaps_ext: None,
            entries: Vec::new(),
            snapshots: Vec::new(),
            mapping: MappingStats::default(),
            refcounts: RefcountStats::default(),
            usage: Vec::new(),
        };
        return Ok(Model {
            img,
            analysis,
            guest: crate::guest::GuestReader::new(),
        });
    };
    let map = ClusterMap::new(h.cluster_bits, file_len);
    let mut ctx = Ctx {
        img,
        h,
        map,
        findings,
        file_len,
        l2_refs: Default::default(),
        retained: 0,
    };
    let extensions = ctx.parse_extensions()?;
    ctx.map.claim(&mut ctx.findings, 0, 1, Owner::Header, 0);
    if let Some(enc) = extensions
        .iter()
        .find(|x| x.ext_type == extension::ENCRYPTION)
    {
        let (off, len) = (enc.get(encryption::OFFSET), enc.get(encryption::LENGTH));
        ctx.claim_or_report(
            off,
            len,
            Owner::EncryptionHeader,
            enc.offset,
            Rule::ExtBounds,
            "encryption header",
        );
    }
    let has_enc = extensions
        .iter()
        .any(|x| x.ext_type == extension::ENCRYPTION);
    if has_enc != (ctx.h.crypt_method == 2) {
        ctx.findings.add_with(
            Rule::HeaderEncryptionExtension,
            crate::fields::header::CRYPT_METHOD.offset as u64,
            msg!(
                "crypt_method is {} but the image {} a full disk encryption header extension",
                ctx.h.crypt_method,
                if has_enc { "has" } else { "lacks" }
            ),
        );
    }
    let blocks = ctx.claim_refcount_structures()?;
    let mut mapping = MappingStats::default();
    if !ctx.h.aligned(ctx.h.l1_table_offset) {
        // header.alignment was reported; the table cannot be located.
    } else {
        let (off, size) = (ctx.h.l1_table_offset, ctx.h.l1_size);
        ctx.walk_l1(off, size, Owner::L1Table, Rule::L1Bounds, &mut mapping)?;
    }
    let snapshots = if ctx.h.aligned(ctx.h.snapshots_offset) {
        ctx.parse_snapshots(&mut mapping)?
    } else {
        Vec::new()
    };
    ctx.apply_l2_multiplicity()?;
    let found = ctx.check_bitmaps(&extensions)?;
    let refcounts = ctx.compare_refcounts(&blocks)?;

    let ext_ok = found.state == ExtensionState::Consistent && !ctx.findings.bitmaps_invalid();
    let mut bitmaps = Vec::with_capacity(found.entries.len());
    let mut digests: std::collections::HashMap<[u8; 32], (String, u64)> = Default::default();
    for e in &found.entries {
        let usable = ext_ok && e.self_usable(ctx.h.size, ctx.h.cluster_bits);
        let (mut set_bits, mut sha) = (None, None);
        if usable {
            let geo = e.geometry(ctx.h.size, ctx.h.cluster_bits);
            let table = e.table.as_deref().unwrap_or(&[]);
            let key = content::fingerprint(&mut ctx.img, geo, table)?;
            let (digest, bits) = match digests.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let d = content::digest(&mut ctx.img, geo, table)?;
                    digests.insert(key, d.clone());
                    d
                }
            };
            set_bits = Some(bits);
            sha = Some(digest);
        }
        let utf8 = std::str::from_utf8(&e.name).is_ok();
        bitmaps.push(BitmapReport {
            name: String::from_utf8_lossy(&e.name).into_owned(),
            name_hex: (!utf8).then(|| hex::encode(&e.name)),
            bitmap_type: e.bitmap_type,
            granularity_bits: e.granularity_bits,
            flags: Flags {
                in_use: e.in_use(),
                auto: e.auto(),
                extra_data_compatible: e.extra_data_compatible(),
            },
            usable,
            table_offset: e.bitmap_table_offset,
            table_size: e.bitmap_table_size,
            contents: Contents {
                set_bits,
                content_sha256: sha,
            },
        });
    }
    let usage = ctx.map.usage();
    let Ctx {
        img, h, findings, ..
    } = ctx;
    let findings = findings.into_sorted();
    let analysis = Analysis {
        report: Report {
            verdict: Verdict::of(&findings),
            bitmaps_extension: found.state,
            findings,
            bitmaps,
        },
        file_len,
        header: Some(h),
        extensions,
        bitmaps_ext: found.ext,
        entries: found.entries,
        snapshots,
        mapping,
        refcounts,
        usage,
    };
    Ok(Model {
        img,
        analysis,
        guest: crate::guest::GuestReader::new(),
    })
}
