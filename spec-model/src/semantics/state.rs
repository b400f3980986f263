//! The running state of an image's bitmaps and what each operation must
//! do to it: guest writes (write, write-zeroes, discard), add, remove,
//! clear, enable, disable, merge and resize. [`Disk::expect`] says whether
//! an operation must succeed, must be refused or may be refused (a limit
//! of the implementation); [`Disk::apply`] carries out one that succeeded.

use super::granules::{self, Ranges};
use crate::bitmaps::space::entry_bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a bitmap of the running image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Read from the image when it was opened.
    Loaded,
    /// Added while the image was open.
    Added,
}

/// One bitmap of a running image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bitmap {
    /// Granularity `2^gbits` bytes.
    pub gbits: u8,
    /// Records guest writes (stored as the `auto` flag).
    pub enabled: bool,
    /// Stored in the image on close.
    pub persistent: bool,
    /// Loaded with `in_use` set: its contents may be stale, so it must
    /// never be used (exported, merged, cleared, enabled); it records
    /// nothing and stays `in_use` in the image.
    pub inconsistent: bool,
    pub origin: Origin,
    /// Set granules (merged half-open index ranges), outside `unspecified`.
    pub bits: Ranges,
    /// Granules the spec leaves open (the area a resize grew): either
    /// value is accepted there.
    pub unspecified: Ranges,
}

impl Bitmap {
    /// A new, empty bitmap.
    pub fn new(gbits: u8, enabled: bool, persistent: bool) -> Bitmap {
        Bitmap {
            gbits,
            enabled,
            persistent,
            inconsistent: false,
            origin: Origin::Added,
            bits: Vec::new(),
            unspecified: Vec::new(),
        }
    }

    /// A bitmap read from an image: `auto` flag, `in_use` flag, set
    /// granules (ignored when `in_use`).
    pub fn loaded(gbits: u8, auto: bool, in_use: bool, bits: Ranges) -> Bitmap {
        Bitmap {
            gbits,
            enabled: auto && !in_use,
            persistent: true,
            inconsistent: in_use,
            origin: Origin::Loaded,
            bits: if in_use {
                Vec::new()
            } else {
                granules::merge(bits)
            },
            unspecified: Vec::new(),
        }
    }

    /// Whether the bitmap may be used (its contents are defined).
    pub fn usable(&self) -> bool {
        !self.inconsistent
    }

    /// A guest write of `[offset, offset+len)` on a disk of `nbits`
    /// granules (see [`granules::nbits`]): an enabled, consistent bitmap
    /// gains exactly the touched granules.
    pub fn record_write(&mut self, offset: u64, len: u64, n: u64) {
        if !self.enabled || self.inconsistent {
            return;
        }
        let t = granules::touched(offset, len, self.gbits, n);
        self.unspecified = granules::subtract(&self.unspecified, &[t]);
        let mut v = std::mem::take(&mut self.bits);
        v.push(t);
        self.bits = granules::merge(v);
    }

    /// A guest request on `[offset, offset+len)` that may or may not have
    /// changed the disk (a dropped discard): an enabled, consistent bitmap
    /// may gain the touched granules that are not already set.
    pub fn may_record_write(&mut self, offset: u64, len: u64, n: u64) {
        if !self.enabled || self.inconsistent {
            return;
        }
        let t = granules::touched(offset, len, self.gbits, n);
        let open = granules::subtract(&[t], &self.bits);
        let mut v = std::mem::take(&mut self.unspecified);
        v.extend(open);
        self.unspecified = granules::merge(v);
    }

    /// Whether `got` (set granules as read from an implementation) is what
    /// this bitmap predicts: equal outside the unspecified granules.
    pub fn matches(&self, got: &[(u64, u64)]) -> bool {
        granules::subtract(got, &self.unspecified) == self.bits
    }

    /// The contract's `content_sha256` of the predicted bits on a disk of
    /// `size` bytes; `None` while some granules are unspecified.
    pub fn content_sha256(&self, size: u64) -> Option<String> {
        self.unspecified
            .is_empty()
            .then(|| granules::content_sha256(&self.bits, granules::nbits(size, self.gbits)))
    }

    /// QEMU's `x-debug-block-dirty-bitmap-sha256` of the predicted bits
    /// (see [`granules::qemu_debug_sha256`]); `None` while some granules
    /// are unspecified.
    pub fn qemu_debug_sha256(&self, size: u64) -> Option<String> {
        self.unspecified
            .is_empty()
            .then(|| granules::qemu_debug_sha256(&self.bits, granules::nbits(size, self.gbits)))
    }

    /// The virtual byte ranges the predicted bits mark dirty.
    pub fn dirty_ranges(&self, size: u64) -> Ranges {
        granules::to_bytes(&self.bits, self.gbits, size)
    }
}

/// One operation on a running image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    Write {
        offset: u64,
        len: u64,
    },
    WriteZeroes {
        offset: u64,
        len: u64,
    },
    Discard {
        offset: u64,
        len: u64,
    },
    Add {
        name: String,
        gbits: u8,
        persistent: bool,
        disabled: bool,
    },
    Remove {
        name: String,
    },
    Clear {
        name: String,
    },
    Enable {
        name: String,
    },
    Disable {
        name: String,
    },
    Merge {
        target: String,
        sources: Vec<String>,
    },
    Resize {
        size: u64,
    },
    /// Guest writes of `(offset, len)` all in flight together.
    Writes {
        writes: Vec<(u64, u64)>,
    },
    /// An add with no granularity given: the implementation's default
    /// ([`Disk::default_gbits`]).
    AddDefault {
        name: String,
        persistent: bool,
        disabled: bool,
    },
    /// Bitmap operations (add, remove, clear, enable, disable, merge) done
    /// all together or not at all.
    Transaction {
        actions: Vec<Op>,
    },
    /// The node inactivated (persistent bitmaps stored in the image and
    /// dropped from the running node) or activated again (loaded back).
    SetActive {
        active: bool,
    },
    /// An NBD export holding bitmap `name` (a backup client's view), kept
    /// until [`Op::Unexport`], a restart or a crash.
    Export {
        name: String,
    },
    /// The export of bitmap `name` removed.
    Unexport {
        name: String,
    },
    /// The node reopened read-only or read-write (QMP `blockdev-reopen`):
    /// going read-only stores the persistent bitmaps in the image, going
    /// read-write marks them `in_use` there again ([`super::reopen`]).
    Reopen {
        read_only: bool,
    },
}

/// The pattern of the operations only a running node carries out, the
/// ones [`Disk::expect`] and [`Disk::apply`] (in `node.rs`) handle before
/// the first kinds: an add with the default granularity, concurrent
/// writes, transactions, (in)activation, exports and reopens. One list for
/// every match that sets them apart (the model here, the offline runner
/// that skips them), so that a new one cannot be missed in one of them.
#[macro_export]
macro_rules! node_only_op {
    () => {
        $crate::semantics::Op::AddDefault { .. }
            | $crate::semantics::Op::Writes { .. }
            | $crate::semantics::Op::Transaction { .. }
            | $crate::semantics::Op::SetActive { .. }
            | $crate::semantics::Op::Export { .. }
            | $crate::semantics::Op::Unexport { .. }
            | $crate::semantics::Op::Reopen { .. }
    };
}

impl Op {
    /// A bitmap `name` added with granularity `2^gbits`: persistent (kept in
    /// the image) or not, enabled unless `disabled`.
    pub fn add(name: &str, gbits: u8, persistent: bool, disabled: bool) -> Op {
        Op::Add {
            name: name.into(),
            gbits,
            persistent,
            disabled,
        }
    }
}

/// What the model requires of an implementation given an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// It must succeed and have the effect [`Disk::apply`] gives.
    Succeed,
    /// It must be refused, leaving everything unchanged.
    Refuse(String),
    /// Either is allowed (an implementation limit); if it succeeds, the
    /// effect is [`Disk::apply`]'s.
    Either(String),
}

/// Granularities QEMU accepts for a new bitmap: 512 bytes to 2 GiB (the
/// spec allows 2^0..2^63; anything else is a limit, not a rule).
pub const QEMU_GBITS: std::ops::RangeInclusive<u8> = 9..=31;

/// What the node under test does with a guest's discard request (QEMU's
/// `discard` block option).
///
/// The spec binds a writer of an `auto` bitmap to set the bits of every
/// part of the virtual disk it writes to. The reading chosen here: a
/// discard the node carries out (`unmap`) is such a write, because what
/// the guest reads afterwards may differ (a discarded qcow2 cluster reads
/// as zeros) and a backup must not depend on whether the driver happened
/// to free the cluster, so every granule the request touches must be set.
/// A discard the node drops (`ignore`, QEMU's default) changes nothing,
/// so no bit is required; setting them is allowed, since extra dirty
/// granules only make an incremental backup larger, never wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscardMode {
    /// Discards are dropped: the touched granules are left open.
    Ignore,
    /// Discards are carried out: the touched granules must be set.
    #[default]
    Unmap,
}

/// QEMU's limit on the number of bitmaps in one image (qcow2.rst's note on
/// `nb_bitmaps`); the spec itself sets none, so more is a limit.
pub const MAX_BITMAPS: usize = 65_535;

/// QEMU's limit on the size of the bitmap directory in bytes (the same
/// note: 1024 bytes per entry on average for the largest count).
pub const MAX_DIRECTORY_BYTES: u64 = 1024 * 65_535;

/// The bitmaps of an open image and its virtual size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub size: u64,
    /// The image's header version: a version 2 header has no
    /// `autoclear_features`, so it cannot carry a consistent bitmaps
    /// extension and no persistent bitmap can be stored in it.
    pub version: u32,
    /// What the node does with discards ([`DiscardMode`]).
    pub discard: DiscardMode,
    pub bitmaps: BTreeMap<String, Bitmap>,
    /// Names of the bitmaps the image held when it was opened and that
    /// have not been removed since.
    pub on_image: BTreeSet<String>,
    /// Names the image may still hold `in_use` after a crash though the
    /// node no longer loads them from it: loaded bitmaps removed since the
    /// image was opened, and persistent bitmaps an activation may have
    /// written ([`Disk::apply`] of `SetActive`).
    pub removed: BTreeSet<String>,
    /// log2 of the image's cluster size (QEMU's default granularity
    /// follows it).
    pub cluster_bits: u8,
    /// Whether the node is active; an inactive node's persistent bitmaps
    /// live in the image only ([`Disk::stored`]).
    pub active: bool,
    /// The persistent bitmaps an inactivation stored in the image, loaded
    /// back by the next activation.
    pub stored: BTreeMap<String, Bitmap>,
    /// Bitmaps an NBD export holds (in use: an implementation may refuse
    /// to change or drop them).
    pub exported: BTreeSet<String>,
    /// Whether the node was opened read-only ([`super::readonly`]).
    pub read_only: bool,
    /// The persistent bitmaps a reopen to read-only stored in the image
    /// (`None`: the node was not reopened read-only): the file holds them
    /// until the node is reopened read-write ([`super::reopen`]).
    pub frozen: Option<BTreeMap<String, Bitmap>>,
}

impl Default for Disk {
    fn default() -> Disk {
        Disk {
            size: 0,
            version: 3,
            discard: DiscardMode::default(),
            bitmaps: BTreeMap::new(),
            on_image: BTreeSet::new(),
            removed: BTreeSet::new(),
            cluster_bits: 16,
            active: true,
            stored: BTreeMap::new(),
            exported: BTreeSet::new(),
            read_only: false,
            frozen: None,
        }
    }
}

impl Disk {
    /// A disk of `size` bytes with no bitmaps.
    pub fn new(size: u64) -> Disk {
        Disk {
            size,
            ..Disk::default()
        }
    }

    /// A disk opened from an image: `(name, bitmap)` as read from it
    /// (each [`Bitmap::loaded`]).
    pub fn opened(size: u64, bitmaps: impl IntoIterator<Item = (String, Bitmap)>) -> Disk {
        let bitmaps: BTreeMap<String, Bitmap> = bitmaps.into_iter().collect();
        Disk {
            size,
            on_image: bitmaps.keys().cloned().collect(),
            bitmaps,
            ..Disk::default()
        }
    }

    /// For tests: a 1 MiB disk opened with one bitmap `name` loaded from
    /// the image (granularity 64 KiB, `auto`, granule 0 set), `in_use` or
    /// not.
    #[cfg(test)]
    pub(crate) fn one_loaded(name: &str, in_use: bool) -> Disk {
        Disk::opened(
            1 << 20,
            [(
                name.to_string(),
                Bitmap::loaded(16, true, in_use, vec![(0, 1)]),
            )],
        )
    }

    /// The same disk with header version `version`.
    pub fn with_version(self, version: u32) -> Disk {
        Disk { version, ..self }
    }

    /// The same disk on an image of clusters of `2^cluster_bits` bytes.
    pub fn with_cluster_bits(self, cluster_bits: u8) -> Disk {
        Disk {
            cluster_bits,
            ..self
        }
    }

    /// The same disk on a node whose discard option is `discard`.
    pub fn with_discard(self, discard: DiscardMode) -> Disk {
        Disk { discard, ..self }
    }

    /// Why a persistent add of a bitmap named `name` may be refused as
    /// past QEMU's limits on the directory: the number of bitmaps or the
    /// directory's size (`None`: within them).
    fn past_directory_limits(&self, name: &str) -> Option<String> {
        let persistent = self.bitmaps.iter().filter(|(_, b)| b.persistent);
        let count = persistent.clone().count() + 1;
        let bytes: u64 =
            persistent.map(|(n, _)| entry_bytes(n.len())).sum::<u64>() + entry_bytes(name.len());
        if count > MAX_BITMAPS {
            Some(format!(
                "{count} persistent bitmaps are past QEMU's limit of {MAX_BITMAPS}"
            ))
        } else if bytes > MAX_DIRECTORY_BYTES {
            Some(format!(
                "a bitmap directory of {bytes} bytes is past QEMU's limit of {MAX_DIRECTORY_BYTES}"
            ))
        } else {
            None
        }
    }

    /// Why an operation on bitmap `name` must be refused: it does not
    /// exist (`None`: it may go on).
    pub(super) fn missing(&self, name: &str) -> Option<String> {
        (!self.bitmaps.contains_key(name)).then(|| format!("no bitmap named {name:?}"))
    }

    /// As [`Disk::missing`], and also when the bitmap is inconsistent
    /// (loaded `in_use`), which the spec says must not be used.
    pub(super) fn unusable(&self, name: &str) -> Option<String> {
        self.missing(name).or_else(|| {
            self.bitmaps[name]
                .inconsistent
                .then(|| format!("bitmap {name:?} is in_use (inconsistent) and must not be used"))
        })
    }

    fn range_ok(&self, offset: u64, len: u64) -> Expect {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Expect::Succeed,
            _ => Expect::Refuse(format!(
                "{offset}+{len} lies past the end of the disk ({})",
                self.size
            )),
        }
    }

    /// What an operation of the first kinds (guest I/O, one bitmap
    /// operation, resize) requires of an active node with nothing
    /// exported; [`Disk::expect`] adds the node's state.
    pub(super) fn expect_base(&self, op: &Op) -> Expect {
        let check = |refusal: Option<String>| refusal.map_or(Expect::Succeed, Expect::Refuse);
        match op {
            Op::Write { offset, len }
            | Op::WriteZeroes { offset, len }
            | Op::Discard { offset, len } => self.range_ok(*offset, *len),
            Op::Add {
                name,
                gbits,
                persistent,
                ..
            } => {
                if self.bitmaps.contains_key(name) {
                    Expect::Refuse(format!("a bitmap named {name:?} exists"))
                } else if *persistent && self.version < 3 {
                    Expect::Refuse(format!(
                        "a version {} image has no autoclear_features field, so it cannot store a persistent bitmap",
                        self.version
                    ))
                } else if name.is_empty() {
                    Expect::Refuse("a bitmap name must not be empty".into())
                } else if *gbits > 63 {
                    Expect::Refuse(format!("granularity 2^{gbits} is past the format's 2^63"))
                } else if !QEMU_GBITS.contains(gbits) || name.len() > 1023 {
                    Expect::Either(format!("granularity 2^{gbits} or a {}-byte name is past QEMU's limits", name.len()))
                } else if let Some(why) = persistent
                    .then(|| self.past_directory_limits(name))
                    .flatten()
                {
                    Expect::Either(why)
                } else {
                    Expect::Succeed
                }
            }
            Op::Remove { name } => check(self.missing(name)),
            Op::Clear { name } | Op::Enable { name } | Op::Disable { name } => {
                check(self.unusable(name))
            }
            Op::Merge { target, sources } => {
                for n in std::iter::once(target).chain(sources) {
                    if let Some(e) = self.unusable(n) {
                        return Expect::Refuse(e);
                    }
                }
                if sources.is_empty() {
                    // QEMU's bitmaps.rst: a merge takes one or more
                    // sources. Refusing none is right; merging nothing
                    // changes nothing, which is as good.
                    return Expect::Either("a merge without sources may be refused".into());
                }
                Expect::Succeed
            }
            Op::Resize { size } => Expect::Either(format!(
                "resizing to {size} bytes with bitmaps may be refused (the spec does not require it)"
            )),
            crate::node_only_op!() => self.expect(op),
        }
    }

    /// Carries out an operation of the first kinds (see
    /// [`Disk::expect_base`]); [`Disk::apply`] is the entry point.
    pub(super) fn apply_base(&mut self, op: &Op) {
        let size = self.size;
        match op {
            Op::Write { offset, len } | Op::WriteZeroes { offset, len } => {
                for b in self.bitmaps.values_mut() {
                    b.record_write(*offset, *len, granules::nbits(size, b.gbits));
                }
            }
            Op::Discard { offset, len } => {
                for b in self.bitmaps.values_mut() {
                    let n = granules::nbits(size, b.gbits);
                    match self.discard {
                        DiscardMode::Unmap => b.record_write(*offset, *len, n),
                        DiscardMode::Ignore => b.may_record_write(*offset, *len, n),
                    }
                }
            }
            Op::Add {
                name,
                gbits,
                persistent,
                disabled,
            } => {
                self.bitmaps
                    .insert(name.clone(), Bitmap::new(*gbits, !disabled, *persistent));
            }
            Op::Remove { name } => {
                self.exported.remove(name);
                if let Some(b) = self.bitmaps.remove(name) {
                    if b.origin == Origin::Loaded && self.on_image.remove(name) {
                        self.removed.insert(name.clone());
                    }
                }
            }
            Op::Clear { name } => {
                if let Some(b) = self.bitmaps.get_mut(name) {
                    b.bits.clear();
                    b.unspecified.clear();
                }
            }
            Op::Enable { name } | Op::Disable { name } => {
                if let Some(b) = self.bitmaps.get_mut(name) {
                    b.enabled = matches!(op, Op::Enable { .. });
                }
            }
            Op::Merge { target, sources } => self.merge(target, sources),
            Op::Resize { size: new } => self.resize(*new),
            crate::node_only_op!() => self.apply(op),
        }
    }

    /// Target gains the union of the sources, each source's bits (and its
    /// unspecified granules) rounded out to the target's granularity.
    fn merge(&mut self, target: &str, sources: &[String]) {
        let Some(tg) = self.bitmaps.get(target).map(|b| b.gbits) else {
            return;
        };
        let mut bits = Vec::new();
        let mut open = Vec::new();
        for s in sources {
            if let Some(b) = self.bitmaps.get(s) {
                bits.extend(granules::regranulate(&b.bits, b.gbits, tg, self.size));
                open.extend(granules::regranulate(
                    &b.unspecified,
                    b.gbits,
                    tg,
                    self.size,
                ));
            }
        }
        if let Some(t) = self.bitmaps.get_mut(target) {
            bits.extend(std::mem::take(&mut t.bits));
            t.bits = granules::merge(bits);
            open.extend(std::mem::take(&mut t.unspecified));
            t.unspecified = granules::subtract(&granules::merge(open), &t.bits);
        }
    }

    /// A resize: bits inside both sizes are kept, bits past a smaller end
    /// dropped, and the granules a grow adds are unspecified (the spec
    /// says nothing about them).
    fn resize(&mut self, new: u64) {
        let old = self.size;
        for b in self.bitmaps.values_mut() {
            let (n_old, n_new) = (granules::nbits(old, b.gbits), granules::nbits(new, b.gbits));
            b.bits = granules::clip(&b.bits, n_new);
            let mut open = granules::clip(&b.unspecified, n_new);
            if n_new > n_old && !b.inconsistent {
                open.push((n_old, n_new));
            }
            b.unspecified = granules::merge(open);
        }
        self.size = new;
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
