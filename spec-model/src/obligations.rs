//! The obligations catalogue: what the spec (QEMU's
//! `docs/interop/qcow2.rst`) says an *implementation* must do, beside the
//! rule catalogue ([`crate::rules`]), which says what an *image* must be.
//!
//! Each obligation has a stable ID (`open.unknown-incompatible`), the
//! section of the spec it comes from, the sentence in the project's own
//! words, whom it binds ([`Binds`]: a reader or a writer; one that reads
//! bitmap metadata or one that does not; one that holds the key of an
//! encrypted image or one that does not), how a run observes it
//! ([`Observed`]), and, where the project's digest (`shared/spec/DIGEST.md`)
//! or the suite's semantic model asks more than the spec's words, a note
//! saying so ([`Obligation::stricter`]). IDs are a public contract like
//! rule IDs: add freely, never rename.

use serde::Serialize;

/// The part an implementation plays with an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Opens an image and reads from it (every implementation).
    Reader,
    /// Writes guest data or metadata into an image.
    Writer,
}

/// Whether an obligation binds implementations that read bitmap metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Awareness {
    /// Every implementation.
    Any,
    /// Only those that read the bitmaps extension (bitmaps-aware).
    Aware,
    /// Only those that do not (bitmaps-unaware).
    Unaware,
}

/// Whether an obligation binds implementations that hold the key of an
/// encrypted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    /// Whether or not the image is encrypted, with or without its key.
    Any,
    /// Only for an encrypted image whose key the implementation is given.
    With,
    /// Only for an encrypted image whose key it is not given (or whose
    /// encryption it does not support).
    Without,
}

/// Whom an obligation binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Binds {
    pub role: Role,
    pub bitmaps: Awareness,
    pub key: Key,
}

/// How a run observes whether an obligation is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observed {
    /// Whether it opens the image (or refuses, and with what message).
    Open,
    /// The guest data it reads, compared with the model's.
    GuestRead,
    /// The bitmaps it lists: names, granularity, flags, contents, use.
    BitmapListing,
    /// The write check: guest data written into a copy, the copy read by
    /// the model afterwards.
    WriteCheck,
    /// The bitmap-operations check (add, remove, clear, merge, ...).
    BitmapOps,
    /// A live sequence (writes, close, crash, reopen) against a running
    /// implementation.
    LiveSequence,
}

/// The kind of an implementation, as far as obligations care: whether it
/// writes, whether it reads bitmap metadata, and whether it holds the key
/// of the image at hand (`None`: the image is not encrypted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Kind {
    pub writer: bool,
    pub bitmaps_aware: bool,
    pub holds_key: Option<bool>,
}

impl Binds {
    /// Whether the obligation binds an implementation of kind `k`.
    pub fn binds(self, k: Kind) -> bool {
        let role = match self.role {
            Role::Reader => true,
            Role::Writer => k.writer,
        };
        let bitmaps = match self.bitmaps {
            Awareness::Any => true,
            Awareness::Aware => k.bitmaps_aware,
            Awareness::Unaware => !k.bitmaps_aware,
        };
        let key = match self.key {
            Key::Any => true,
            Key::With => k.holds_key == Some(true),
            Key::Without => k.holds_key == Some(false),
        };
        role && bitmaps && key
    }

    /// The binding in words (`writer, bitmaps-unaware, any key`).
    pub fn describe(self) -> String {
        let role = match self.role {
            Role::Reader => "reader",
            Role::Writer => "writer",
        };
        let bitmaps = match self.bitmaps {
            Awareness::Any => "any",
            Awareness::Aware => "bitmaps-aware",
            Awareness::Unaware => "bitmaps-unaware",
        };
        let key = match self.key {
            Key::Any => "any",
            Key::With => "with the key",
            Key::Without => "without the key",
        };
        format!("{role}, {bitmaps}, {key}")
    }
}

/// Declares the obligations catalogue: an enum with one variant per
/// obligation, each with its stable ID, binding (role, bitmaps awareness,
/// key), how it is observed, the spec section, the sentence in the
/// project's words, and the note where the suite asks more than the spec
/// (empty when it does not).
macro_rules! obligation_catalogue {
    (
        $(#[doc = $enum_doc:expr])*
        pub enum $name:ident;
        $(
            $(#[doc = $doc:expr])*
            $variant:ident = $id:literal [$role:ident, $aware:ident, $key:ident] [$($obs:ident),+]
                $section:literal $sentence:literal $stricter:literal;
        )*
    ) => {
        $crate::rules::catalogue_enum! {
            $(#[doc = $enum_doc])*
            pub enum $name;
            $( $(#[doc = $doc])* $variant = $id; )*
        }

        impl $name {
            /// Whom it binds.
            pub fn binds(self) -> Binds {
                match self { $($name::$variant => Binds {
                    role: Role::$role,
                    bitmaps: Awareness::$aware,
                    key: Key::$key,
                },)* }
            }

            /// How a run observes it.
            pub fn observed(self) -> &'static [Observed] {
                match self { $($name::$variant => &[$(Observed::$obs),+],)* }
            }

            /// The section of the spec it comes from.
            pub fn section(self) -> &'static str {
                match self { $($name::$variant => $section,)* }
            }

            /// What the implementation must do, in one sentence.
            pub fn sentence(self) -> &'static str {
                match self { $($name::$variant => $sentence,)* }
            }

            /// Where the suite asks more than the spec's words, why.
            pub fn stricter(self) -> Option<&'static str> {
                match self { $($name::$variant => Some($stricter).filter(|s: &&str| !s.is_empty()),)* }
            }
        }
    };
}

obligation_catalogue! {
    /// An obligation of the catalogue. Each variant's documentation cites
    /// the section of `docs/interop/qcow2.rst` it comes from.
    pub enum Obligation;
    /// Spec "Header", `incompatible_features` (bytes 72-79): an unknown bit forbids opening.
    OpenUnknownIncompatible = "open.unknown-incompatible" [Reader, Any, Any] [Open, GuestRead]
        "Header" "refuse to open an image that sets an incompatible feature bit the implementation does not know" "";
    /// Spec "Header" and its notes on QEMU's limits: a conforming image is opened, unless a documented limit is involved.
    OpenConforming = "open.conforming" [Reader, Any, Any] [Open]
        "Header" "open a conforming image whose features it supports, unless a limit the spec documents applies (a limit on bitmaps excuses only an implementation that reads bitmaps)"
        "the spec does not oblige an implementation to open every conforming image; the suite charges an unexplained refusal as strict";
    /// Spec "Header", `autoclear_features` (bytes 88-95): unknown auto-clear bits are cleared before a write.
    WriteClearUnknownAutoclear = "write.clear-unknown-autoclear" [Writer, Any, Any] [WriteCheck]
        "Header" "before writing to an image, clear every auto-clear bit it does not know: bits 2-63 for everyone, and bit 0 (the bitmaps extension) for a writer that does not maintain bitmaps" "";
    /// Spec "Host cluster management" (and the rules of every structure): a write leaves the image well-formed.
    WriteLeavesValid = "write.leaves-valid" [Writer, Any, Any] [WriteCheck]
        "Host cluster management" "leave an image it wrote as well-formed as it found it: every cluster in use keeps a refcount that accounts for it, and no structure is broken by the write" "";
    /// Spec "Data encryption": the payload is decrypted on every read.
    CryptDecryptOnRead = "crypt.decrypt-on-read" [Reader, Any, With] [GuestRead]
        "Data encryption" "with the key of an encrypted image, return guest data decrypted, never the stored ciphertext" "";
    /// Spec "Data encryption": the payload is encrypted on every write.
    CryptNoPlaintext = "crypt.no-plaintext" [Writer, Any, With] [WriteCheck]
        "Data encryption" "with the key of an encrypted image, encrypt every guest write: no plaintext payload lands in the file" "";
    /// Spec "Data encryption": a reader that cannot decrypt has no payload to return.
    CryptRefuseWithoutKey = "crypt.refuse-without-key" [Reader, Any, Without] [Open, GuestRead]
        "Data encryption" "without the key (or without support for the crypt method), refuse to read or write the payload rather than pass ciphertext off as guest data"
        "the spec says the payload must be decrypted on every read; it does not name the refusal, which is the only way to meet that without the key";
    /// Spec "Additional fields" rule 2 and "Bitmap directory", `extra_data_compatible`: what is not understood is kept;
    /// "Header extensions": unknown extensions may be ignored, and the space after them is kept free so that
    /// a writer can add extensions "without harming data of compatible features that it doesn't support".
    KeepUnknownAsIs = "keep.unknown-as-is" [Writer, Any, Any] [WriteCheck]
        "Additional fields (version 3 and higher); Header extensions; Bitmap directory" "keep what it does not understand as it is when it rewrites the image: unknown additional header fields, header extensions of an unknown type, and a bitmap's unknown extra data (with or without extra_data_compatible)"
        "for header extensions of an unknown type only: the spec says such an extension can be safely ignored and gives the reason the space after the extensions must stay free (a writer must be able to add extensions without harming data of features it does not support), but it never says in as many words that a writer rewriting the header keeps them; the suite holds writers to it";
    /// Spec "Header", `size` (bytes 24-31): the virtual disk has exactly that many bytes.
    GuestVirtualSize = "guest.virtual-size" [Reader, Any, Any] [GuestRead, Open]
        "Header" "present a virtual disk of exactly `size` bytes, any number of bytes, readable to its last byte, and do not change `size` unless asked to resize" "";
    /// Spec "Cluster mapping": guest data is what the L1 and L2 tables map, through backing files and zero flags.
    GuestReadAsMapped = "guest.read-as-mapped" [Reader, Any, Any] [GuestRead]
        "Cluster mapping" "read every guest cluster as its L2 entry says: standard, compressed, all-zero, or unallocated (from the backing file, else zeros)" "";
    /// Spec "Cluster mapping", the last paragraph: reads past a short backing file are zeros.
    GuestShortBackingZeros = "guest.short-backing-zeros" [Reader, Any, Any] [GuestRead]
        "Cluster mapping" "read zeros for unallocated ranges that a backing file shorter than the image does not cover; the disk keeps its own size" "";
    /// Spec "Bitmaps extension" and "Header", autoclear bit 0: an extension without the bit is inconsistent.
    BitmapsIgnoreInconsistent = "bitmaps.ignore-inconsistent" [Reader, Aware, Any] [BitmapListing]
        "Header; Bitmaps extension" "treat the bitmaps extension as inconsistent when autoclear bit 0 is clear (always in a version 2 image): use none of its bitmaps" "";
    /// Spec "Bitmap directory", flag `in_use`: the bitmap may be outdated.
    BitmapsNeverUseInUse = "bitmaps.never-use-in-use" [Reader, Aware, Any] [BitmapListing]
        "Bitmap directory" "do not use the contents of a bitmap whose in_use flag is set"
        "the spec says only that an in_use bitmap may be inconsistent or outdated; the digest makes that a must-not-use";
    /// Spec "Bitmap directory", flag `extra_data_compatible`: unknown extra data without the flag forbids use.
    BitmapsNeverUseIncompatibleExtraData = "bitmaps.never-use-incompatible-extra-data" [Reader, Aware, Any] [BitmapListing]
        "Bitmap directory" "do not use a bitmap with extra data it does not know unless extra_data_compatible is set" "";
    /// Spec "Bitmap directory" / "Bitmap table" / "Bitmap data": a bitmap whose own structures break a must has no defined contents.
    BitmapsNeverUseInvalid = "bitmaps.never-use-invalid" [Reader, Aware, Any] [BitmapListing]
        "Bitmaps extension; Bitmap directory; Bitmap table; Bitmap data" "do not use a bitmap of an invalid bitmaps extension, nor one whose directory entry, table or data breaks a rule of its section"
        "the spec defines the structures but not what a reader does with a broken one; the digest makes every bitmap of an invalid extension unusable";
    /// Spec "Bitmap directory": name, granularity and flags as stored.
    BitmapsListAsStored = "bitmaps.list-as-stored" [Reader, Aware, Any] [BitmapListing]
        "Bitmap directory" "list each bitmap under its whole name (all name_size bytes), with its stored granularity and flags, and only bitmaps the directory has" "";
    /// Spec "Bitmap table" / "Bitmap data": the bits are those the table and data clusters give.
    BitmapsReadContents = "bitmaps.read-contents" [Reader, Aware, Any] [BitmapListing]
        "Bitmap table; Bitmap data" "read a usable bitmap's bits as its table gives them: data clusters bit by bit (least significant first), all-zeros and all-ones entries expanded" "";
    /// Spec "Bitmap directory" and the notes on QEMU's limits: a conforming bitmap is usable.
    BitmapsUseConforming = "bitmaps.use-conforming" [Reader, Aware, Any] [BitmapListing]
        "Bitmap directory" "use a conforming bitmap, unless a limit the spec documents (granularity outside 9-31, a name over 1023 bytes, more than 65535 bitmaps) applies"
        "the spec does not oblige an implementation to use every conforming bitmap; the suite charges an unexplained refusal as strict";
    /// Spec "Bitmap directory", flag `auto`, and "Dirty tracking bitmaps": writes are recorded.
    BitmapsMarkWritten = "bitmaps.mark-written" [Writer, Aware, Any] [WriteCheck, LiveSequence]
        "Bitmap directory; Dirty tracking bitmaps" "set the bits of every auto bitmap for the granules it writes, and change no disabled bitmap (or clear autoclear bit 0 and give the bitmaps up)" "";
    /// Spec "Dirty tracking bitmaps": a bitmap not synced to the file is marked.
    BitmapsMarkInUse = "bitmaps.mark-in-use" [Writer, Aware, Any] [LiveSequence]
        "Dirty tracking bitmaps" "set in_use in the file while a bitmap it tracks in memory differs from the stored one"
        "the spec says in_use should be set while the bitmap is not synced; the suite holds a writer to it";
    /// Spec "Dirty tracking bitmaps": a clean close leaves the stored bitmap synced.
    BitmapsStoreOnClose = "bitmaps.store-on-close" [Writer, Aware, Any] [LiveSequence]
        "Dirty tracking bitmaps" "on a clean close, store every tracked bitmap's bits and clear its in_use flag"
        "the spec only requires in_use while a bitmap is unsynced; the semantic model expects a clean close to store the bitmap, as QEMU does";
    /// The suite's semantic model of bitmap operations (the spec defines none).
    BitmapsOpsAsModelled = "bitmaps.ops-as-modelled" [Writer, Aware, Any] [BitmapOps, LiveSequence]
        "Bitmaps; Dirty tracking bitmaps" "add, remove, clear, enable, disable and merge bitmaps as the semantic model says, leaving the image conforming"
        "the spec defines the stored format, not the operations; the expected bits come from the suite's semantic model";
}

/// One catalogue row, for `qcow2-conform obligations --json`.
#[derive(Debug, Serialize)]
pub struct ObligationInfo {
    pub id: &'static str,
    pub binds: Binds,
    pub observed: &'static [Observed],
    pub section: &'static str,
    pub sentence: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stricter: Option<&'static str>,
}

/// The whole catalogue in a serialisable form.
pub fn catalogue() -> Vec<ObligationInfo> {
    Obligation::ALL
        .iter()
        .map(|o| ObligationInfo {
            id: o.id(),
            binds: o.binds(),
            observed: o.observed(),
            section: o.section(),
            sentence: o.sentence(),
            stricter: o.stricter(),
        })
        .collect()
}

/// The obligations that bind an implementation of kind `k`.
pub fn binding(k: Kind) -> impl Iterator<Item = Obligation> {
    Obligation::ALL
        .iter()
        .copied()
        .filter(move |o| o.binds().binds(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_dotted() {
        let mut ids: Vec<&str> = Obligation::ALL.iter().map(|o| o.id()).collect();
        assert!(ids.iter().all(|i| i.contains('.') && !i.contains(' ')));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Obligation::ALL.len());
        for o in Obligation::ALL {
            assert_eq!(Obligation::from_id(o.id()), Some(*o));
        }
    }

    #[test]
    fn bindings() {
        let unaware_writer = Kind {
            writer: true,
            bitmaps_aware: false,
            holds_key: None,
        };
        let b: Vec<Obligation> = binding(unaware_writer).collect();
        assert!(b.contains(&Obligation::WriteClearUnknownAutoclear));
        assert!(!b.contains(&Obligation::BitmapsNeverUseInUse));
        assert!(!b.contains(&Obligation::CryptRefuseWithoutKey));
        let keyless_reader = Kind {
            writer: false,
            bitmaps_aware: false,
            holds_key: Some(false),
        };
        let b: Vec<Obligation> = binding(keyless_reader).collect();
        assert!(b.contains(&Obligation::CryptRefuseWithoutKey));
        assert!(!b.contains(&Obligation::WriteLeavesValid));
        assert!(!b.contains(&Obligation::CryptDecryptOnRead));
    }
}
