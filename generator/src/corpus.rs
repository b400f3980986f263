//! The shared corpus: a fixed plan of cases with stable IDs, built
//! deterministically. Hand-described valid images cover the features the
//! corpus promises vendors; fixed-seed random images add variety; every
//! mutation of the catalogue contributes one case (so every rule has one);
//! every draft revision contributes cases.

use crate::cases::{self, describe, Case};
use crate::contents::Contents;
use crate::expected::{Expected, ExpectedBitmap};
use crate::mutate::MutateError;
use crate::spec::{BitmapSpec, Config, GuestWrite, ImageSpec, UnknownExtension};
use crate::BuildError;
use spec_model::{ExtensionState, Revision, Verdict};

/// The seed of every randomised part of the corpus.
pub const CORPUS_SEED: u64 = 20261121;

/// Why a planned case could not be made (the messages name the case).
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{id}: {error}")]
    Build { id: String, error: BuildError },
    #[error("{id}: {error}")]
    Mutate { id: String, error: MutateError },
    #[error("no mutation {0}")]
    NoMutation(String),
    #[error("no bitmaps extension")]
    NoBitmapsExtension,
}

/// Where one corpus case comes from.
#[derive(Debug, Clone)]
pub enum CaseSource {
    /// A hand-described spec, built unchanged.
    Hand(&'static str, ImageSpec),
    /// A random valid spec from a fixed seed.
    Random(u64),
    /// One mutation of the catalogue (by its ID) at a fixed seed.
    Mutation(&'static str),
    /// A draft revision's layout, from a fixed seed.
    Draft(Revision, u64),
    /// A one-bitmap image whose nb_bitmaps claims 70,000: beyond QEMU's
    /// limit (`bitmaps.ext.limits`) and, since the directory holds one
    /// entry, `bitmaps.ext.directory-size`. It stands in for the heavy
    /// 65,536-bitmap mutation, whose manifest entry alone would list every
    /// bitmap.
    NbBitmapsBeyondLimit,
    /// A hand-described spec built, then changed by a few bytes that the
    /// spec cannot describe ([`Edit`]); the expected verdict is stated
    /// with it, from the rules the edits break.
    Edited(EditedCase),
}

/// A byte-level change to a built image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Sets this bit of `autoclear_features`.
    SetAutoclear(u32),
    /// Clears this bit of `autoclear_features`.
    ClearAutoclear(u32),
    /// Sets the refcount of the header cluster (cluster 0) to 0.
    UnallocateHeader,
    /// Sets the refcount of the bitmap directory's first cluster to 0.
    UnallocateDirectory,
}

/// A hand-described spec, the edits made to its image, and what the spec
/// requires of the result.
#[derive(Debug, Clone)]
pub struct EditedCase {
    pub spec: ImageSpec,
    pub edits: Vec<Edit>,
    pub expected: Expected,
    pub description: &'static str,
}

fn image(cluster_bits: u32, size: u64) -> ImageSpec {
    let mut s = ImageSpec::empty(size);
    s.cluster_bits = cluster_bits;
    s
}

/// A 1 MiB disk with 4 KiB clusters and the one bitmap `b`.
fn one_bitmap(b: BitmapSpec) -> ImageSpec {
    let mut s = image(12, 1 << 20);
    s.bitmaps.push(b);
    s
}

fn some_bits() -> Contents {
    Contents::Ranges(vec![(0, 3), (40, 41), (100, 260)])
}

/// The hand-described valid (or unspecified) cases: (ID suffix, spec).
pub fn hand_specs() -> Vec<(&'static str, ImageSpec)> {
    let mut v = Vec::new();
    let mut s = image(9, 4 << 20);
    s.writes.push(GuestWrite::new(1000, 9000, 0x5a));
    s.bitmaps.push(BitmapSpec::new("b512", 9, some_bits()));
    s.record_writes_in_auto_bitmaps();
    v.push(("cluster-512", s));

    let mut s = image(16, 64 << 20);
    s.writes.push(GuestWrite::new(3 << 20, 100_000, 0x11));
    s.bitmaps.push(BitmapSpec::new("b64k", 16, Contents::Empty));
    s.record_writes_in_auto_bitmaps();
    v.push(("cluster-64k", s));

    // 2 MiB clusters: no guest data and an empty bitmap keep this to the
    // fewest clusters such an image can have.
    let mut s = image(21, 1 << 30);
    s.bitmaps.push(BitmapSpec::new("b2m", 21, Contents::Empty));
    v.push(("cluster-2m", s));

    let mut s = image(12, 1 << 20);
    s.version = 2;
    s.header_length = 72;
    s.writes.push(GuestWrite::new(0, 4096, 1));
    v.push(("version-2", s));

    for (id, gb) in [
        ("granularity-9", 9u8),
        ("granularity-31", 31),
        ("granularity-0", 0),
        ("granularity-63", 63),
    ] {
        v.push((
            id,
            one_bitmap(BitmapSpec::new(
                id,
                gb,
                Contents::Ranges(vec![(0, 1), (7, 9)]),
            )),
        ));
    }

    let mut s = image(12, 0);
    s.bitmaps
        .push(BitmapSpec::new("empty-disk", 16, Contents::Empty));
    v.push(("zero-size-disk", s));

    let mut s = image(12, (1 << 20) + 1536);
    s.bitmaps.push(BitmapSpec::new("tail", 16, Contents::Full));
    s.bitmaps.push(BitmapSpec::new(
        "tail-9",
        9,
        Contents::Ranges(vec![(2050, 2051)]),
    ));
    v.push(("size-not-multiple-of-granularity", s));

    let mut s = image(9, 1 << 20);
    for i in 0..1000u32 {
        let c = if i % 7 == 0 {
            Contents::Full
        } else {
            Contents::Empty
        };
        s.bitmaps.push(BitmapSpec {
            name: format!("bitmap-{i:04}").into_bytes(),
            auto: i % 2 == 0,
            ..BitmapSpec::new("", 16, c)
        });
    }
    v.push(("1000-bitmaps", s));

    v.push((
        "name-1-byte",
        one_bitmap(BitmapSpec::new("x", 16, some_bits())),
    ));

    let mut s = image(12, 1 << 20);
    let long: String = (0..1023).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    s.bitmaps.push(BitmapSpec {
        name: long.into_bytes(),
        ..BitmapSpec::new("", 16, some_bits())
    });
    v.push(("name-1023-bytes", s));

    let mut s = image(14, 4 << 20);
    s.extended_l2 = true;
    s.writes.push(GuestWrite::new(512, 1024, 3));
    s.bitmaps.push(BitmapSpec::new("ext", 13, Contents::Empty));
    s.record_writes_in_auto_bitmaps();
    v.push(("extended-l2", s));

    let mut s = image(12, 2 << 20);
    s.writes.push(GuestWrite::new(8192, 20000, 9));
    s.snapshots = vec!["before-backup".into(), "after-backup".into()];
    s.bitmaps.push(BitmapSpec::new("snap", 12, Contents::Empty));
    s.record_writes_in_auto_bitmaps();
    v.push(("internal-snapshots", s));

    let mut s = image(9, 8 << 20);
    s.bitmaps.push(BitmapSpec {
        ones_entries: true,
        ..BitmapSpec::new(
            "ones",
            9,
            Contents::Ranges(vec![(0, 4096 * 2), (3 * 4096, 3 * 4096 + 5)]),
        )
    });
    v.push(("all-ones-entries", s));

    let mut s = image(9, 8 << 20);
    s.bitmaps.push(BitmapSpec::new(
        "zeros",
        9,
        Contents::Ranges(vec![(5 * 4096 + 1, 5 * 4096 + 2)]),
    ));
    v.push(("all-zeros-entries", s));

    let mut s = image(12, 1 << 20);
    s.bitmaps.push(BitmapSpec {
        in_use: true,
        ..BitmapSpec::new("stale", 16, some_bits())
    });
    s.bitmaps.push(BitmapSpec::new("fresh", 16, some_bits()));
    v.push(("in-use", s));

    v.push((
        "extra-data-compatible",
        one_bitmap(BitmapSpec {
            extra_data: vec![0xee; 12],
            extra_data_compatible: true,
            ..BitmapSpec::new("extra-ok", 16, some_bits())
        }),
    ));

    v.push((
        "extra-data-incompatible",
        one_bitmap(BitmapSpec {
            extra_data: vec![0xee; 12],
            ..BitmapSpec::new("extra-unknown", 16, some_bits())
        }),
    ));

    v.push((
        "compatible-flag-without-extra-data",
        one_bitmap(BitmapSpec {
            extra_data_compatible: true,
            ..BitmapSpec::new("flag-only", 16, some_bits())
        }),
    ));

    // A header extension of a type the spec does not define (ignored by
    // a reader, kept as it is by a writer: `keep.unknown-as-is`), beside
    // the bitmaps extension, guest data and an enabled bitmap.
    let mut s = image(12, 1 << 20);
    s.unknown_extensions.push(UnknownExtension {
        ext_type: 0x7a3c_51e0,
        data: b"unknown-to-every-reader".to_vec(),
    });
    s.writes.push(GuestWrite::new(4096, 8192, 0x3c));
    s.bitmaps
        .push(BitmapSpec::new("beside-unknown", 16, Contents::Empty));
    s.record_writes_in_auto_bitmaps();
    v.push(("unknown-header-extension", s));

    // Bitmaps no writer may set bits in: both disabled, so a write must
    // leave them as they are (and a bitmaps-unaware writer must still
    // clear autoclear bit 0 first).
    let mut s = image(12, 1 << 20);
    s.writes.push(GuestWrite::new(65536, 4096, 0x21));
    for name in ["off-1", "off-2"] {
        s.bitmaps.push(BitmapSpec {
            auto: false,
            ..BitmapSpec::new(name, 16, some_bits())
        });
    }
    v.push(("only-disabled-bitmaps", s));

    // The only bitmap is `in_use`: listed, not usable, never updated.
    v.push((
        "only-in-use-bitmap",
        one_bitmap(BitmapSpec {
            in_use: true,
            ..BitmapSpec::new("stale-only", 16, some_bits())
        }),
    ));

    // An enabled bitmap whose set bits already cover the range the runner
    // writes (`conform::runner::writes::write_range`: 70,000 bytes from
    // about a third of the disk; on this 1 MiB disk, bytes 350,184 to
    // 420,183, bits 5 and 6 at 64 KiB): a write changes none of its bits,
    // so only the header says whether a writer knew the bitmap.
    v.push((
        "auto-bits-cover-write-range",
        one_bitmap(BitmapSpec::new(
            "covers-write",
            16,
            Contents::Ranges(vec![(4, 8)]),
        )),
    ));

    // 4-bit refcounts and no bitmaps extension: a writer must keep the
    // refcounts right at this width too.
    let mut s = image(12, 1 << 20);
    s.refcount_order = 2;
    s.writes.push(GuestWrite::new(4096, 12288, 0x44));
    v.push(("refcount-bits-4", s));

    // A 720-byte disk: the virtual size is not a multiple of 512.
    let mut s = image(9, 720);
    s.writes.push(GuestWrite::new(0, 720, 0x72));
    s.bitmaps.push(BitmapSpec::new("tiny", 9, Contents::Empty));
    s.record_writes_in_auto_bitmaps();
    v.push(("disk-720-bytes", s));

    // A name with a NUL byte inside it: all eight bytes are the name.
    v.push(("name-nul-inside", nul_name_spec()));
    v
}

/// A bitmap named `b0-14\0 2` (eight bytes, a NUL in the middle).
fn nul_name_spec() -> ImageSpec {
    one_bitmap(BitmapSpec {
        name: b"b0-14\0 2".to_vec(),
        ..BitmapSpec::new("", 16, some_bits())
    })
}

/// `for_spec`'s bitmaps, made unusable (an extension that must be
/// ignored).
fn unusable(bitmaps: Vec<ExpectedBitmap>) -> Vec<ExpectedBitmap> {
    bitmaps
        .into_iter()
        .map(|mut b| {
            b.usable = false;
            b.content_sha256 = None;
            b.set_bits = None;
            b
        })
        .collect()
}

/// The hand-described cases with byte edits: (ID, case). Each expected
/// verdict follows from the rules the edits break (their severities in
/// `shared/spec/DIGEST.md`), not from the model.
pub fn edited_specs() -> Vec<(&'static str, EditedCase)> {
    let mut v = Vec::new();
    let rules = |r: &[&str]| r.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // Autoclear bit 2 is not defined: the spec leaves the image's meaning
    // to the bits it defines (`header.autoclear-unknown`, unspecified);
    // a writer must clear the bit before its first write.
    let mut s = image(12, 1 << 20);
    s.bitmaps.push(BitmapSpec::new("b0", 16, some_bits()));
    let mut e = crate::expected::for_spec(&s);
    e.verdict = Verdict::Unspecified;
    e.rules = rules(&["header.autoclear-unknown"]);
    v.push((
        "header.autoclear-unknown/bit-2",
        EditedCase {
            spec: s,
            edits: vec![Edit::SetAutoclear(2)],
            expected: e,
            description:
                "autoclear bit 2 (undefined) set beside bit 0 in a valid image with one bitmap",
        },
    ));

    // 4-bit refcounts with a bitmaps extension that is not consistent
    // (autoclear bit 0 clear): the extension is ignored, the image valid.
    let mut s = image(12, 1 << 20);
    s.refcount_order = 2;
    s.writes.push(GuestWrite::new(8192, 8192, 0x45));
    s.bitmaps
        .push(BitmapSpec::new("ignored", 16, Contents::Empty));
    s.record_writes_in_auto_bitmaps();
    let mut e = crate::expected::for_spec(&s);
    e.rules = rules(&["bitmaps.autoclear-missing"]);
    e.bitmaps_extension = ExtensionState::Inconsistent;
    e.bitmaps = e.bitmaps.map(unusable);
    v.push((
        "valid/refcount-bits-4-inconsistent-bitmaps",
        EditedCase {
            spec: s,
            edits: vec![Edit::ClearAutoclear(0)],
            expected: e,
            description: "refcount_order 2 (4-bit refcounts) and a bitmaps extension whose autoclear bit 0 is clear (inconsistent: ignored)",
        },
    ));

    // Refcount 0 on the bitmap directory's cluster: metadata in use with
    // no reference counted (`refcount.unallocated`).
    let mut s = image(12, 1 << 20);
    s.bitmaps.push(BitmapSpec::new("b0", 16, some_bits()));
    v.push((
        "refcount.unallocated/bitmap-directory",
        EditedCase {
            spec: s,
            edits: vec![Edit::UnallocateDirectory],
            expected: Expected {
                verdict: Verdict::Invalid,
                rules: rules(&["refcount.unallocated"]),
                bitmaps_extension: ExtensionState::Consistent,
                bitmaps: None,
            },
            description: "the refcount of the bitmap directory's cluster set to 0 (its table and data clusters stay allocated)",
        },
    ));

    // The NUL-named bitmap again, with an unrelated error: refcount 0 on
    // the header cluster.
    v.push((
        "refcount.unallocated/header-with-nul-name",
        EditedCase {
            spec: nul_name_spec(),
            edits: vec![Edit::UnallocateHeader],
            expected: Expected {
                verdict: Verdict::Invalid,
                rules: rules(&["bitmaps.dir.name-bytes", "refcount.unallocated"]),
                bitmaps_extension: ExtensionState::Consistent,
                bitmaps: None,
            },
            description: "the header cluster's refcount set to 0 in an image whose only bitmap is named `b0-14\\0 2` (a NUL inside its 8 bytes)",
        },
    ));
    v
}

/// Applies `edits` to a built image.
fn apply_edits(
    spec: &ImageSpec,
    built: crate::build::Built,
    edits: &[Edit],
) -> Result<Vec<u8>, CorpusError> {
    use spec_model::fields::header::AUTOCLEAR_FEATURES;
    let mut t = crate::mutate::Target {
        bytes: built.bytes,
        layout: built.layout,
        spec: spec.clone(),
        rng: rand::SeedableRng::seed_from_u64(CORPUS_SEED),
    };
    for e in edits {
        match *e {
            Edit::SetAutoclear(bit) => {
                let v = t.get(0, AUTOCLEAR_FEATURES) | 1 << bit;
                t.put(0, AUTOCLEAR_FEATURES, v);
            }
            Edit::ClearAutoclear(bit) => {
                let v = t.get(0, AUTOCLEAR_FEATURES) & !(1 << bit);
                t.put(0, AUTOCLEAR_FEATURES, v);
            }
            Edit::UnallocateHeader => t.set_refcount(0, 0),
            Edit::UnallocateDirectory => {
                if t.spec.bitmaps.is_empty() {
                    return Err(CorpusError::NoBitmapsExtension);
                }
                let at = t.layout.directory_offset;
                t.set_refcount(at, 0);
            }
        }
    }
    Ok(t.bytes)
}

/// The whole plan, in manifest order.
pub fn plan() -> Vec<(String, CaseSource)> {
    let mut v: Vec<(String, CaseSource)> = hand_specs()
        .into_iter()
        .map(|(id, spec)| (format!("valid/{id}"), CaseSource::Hand(id, spec)))
        .collect();
    for i in 1..=12 {
        v.push((format!("valid/random-{i:02}"), CaseSource::Random(i)));
    }
    // Heavy mutations (multi-MiB images or manifests) stay out of the
    // checked-in corpus; `generate --rule` still makes them.
    for m in crate::mutate::catalogue().iter().filter(|m| !m.heavy) {
        v.push((m.id.to_string(), CaseSource::Mutation(m.id)));
    }
    v.push((
        "bitmaps.ext.limits/nb-bitmaps-70000-one-entry".to_string(),
        CaseSource::NbBitmapsBeyondLimit,
    ));
    for (id, case) in edited_specs() {
        v.push((id.to_string(), CaseSource::Edited(case)));
    }
    for rev in Revision::ALL.iter().filter(|r| **r != Revision::Final) {
        for i in 1..=3 {
            v.push((format!("revision/{rev}/{i:02}"), CaseSource::Draft(*rev, i)));
        }
    }
    v
}

/// A file name for a case ID (`/` becomes `--`).
pub fn file_name(id: &str, ext: &str) -> String {
    format!("{}.{ext}", id.replace('/', "--"))
}

/// Builds one planned case.
pub fn make(id: &str, source: &CaseSource) -> Result<Case, CorpusError> {
    let build_error = |error| CorpusError::Build {
        id: id.to_string(),
        error,
    };
    let mut case = match source {
        CaseSource::Hand(_, spec) => {
            let built = crate::build(spec).map_err(build_error)?;
            Case {
                id: String::new(),
                file_name: String::new(),
                bytes: built.bytes,
                expected: crate::expected::for_spec(spec),
                description: format!("hand-described: {}", describe(spec)),
            }
        }
        CaseSource::Random(i) => {
            cases::valid(CORPUS_SEED, *i, &Config::tiny()).map_err(build_error)?
        }
        CaseSource::Mutation(mid) => {
            let m = crate::mutate::by_id(mid)
                .ok_or_else(|| CorpusError::NoMutation(mid.to_string()))?;
            // Tiny bases keep the corpus small; some mutations need more room.
            cases::mutant(m, CORPUS_SEED, 0, &Config::tiny())
                .or_else(|_| cases::mutant(m, CORPUS_SEED, 0, &Config::small()))
                .map_err(|error| CorpusError::Mutate {
                    id: id.to_string(),
                    error,
                })?
        }
        CaseSource::NbBitmapsBeyondLimit => {
            let mut spec = image(12, 1 << 20);
            spec.bitmaps.push(BitmapSpec::new("only", 16, some_bits()));
            let mut built = crate::build(&spec).map_err(build_error)?;
            let at = built
                .layout
                .bitmaps_ext_data()
                .ok_or(CorpusError::NoBitmapsExtension)? as usize;
            spec_model::fields::bitmaps_ext::NB_BITMAPS.put(&mut built.bytes[at..], 70_000);
            let mut expected = crate::expected::for_spec(&spec);
            expected.verdict = spec_model::Verdict::Invalid;
            expected.rules = vec![
                "bitmaps.ext.directory-size".into(),
                "bitmaps.ext.limits".into(),
            ];
            expected.bitmaps = None;
            Case {
                id: String::new(),
                file_name: String::new(),
                bytes: built.bytes,
                expected,
                description: "nb_bitmaps 70000 (beyond QEMU's 65535) with one directory entry: the limit and a directory-size error".into(),
            }
        }
        CaseSource::Edited(e) => {
            let built = crate::build(&e.spec).map_err(build_error)?;
            Case {
                id: String::new(),
                file_name: String::new(),
                bytes: apply_edits(&e.spec, built, &e.edits)?,
                expected: e.expected.clone(),
                description: format!("{}: {}", e.description, describe(&e.spec)),
            }
        }
        CaseSource::Draft(rev, i) => {
            cases::revision(*rev, CORPUS_SEED, *i, &Config::tiny()).map_err(build_error)?
        }
    };
    let ext = if matches!(source, CaseSource::Draft(Revision::Qdb2014, _)) {
        "qdb"
    } else {
        "qcow2"
    };
    case.id = id.to_string();
    case.file_name = file_name(id, ext);
    Ok(case)
}
