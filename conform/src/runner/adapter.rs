//! The interface every implementation under test offers the runner: the
//! [`Adapter`] trait, what an adapter can do ([`Capabilities`]) and what a
//! write through it did ([`WriteRun`]). The implementations themselves are
//! in [`super::adapters`].

use super::checks::OpsCheck;
use super::observation::Observation;
use super::process::{Limits, Proc};
use serde::Serialize;
use std::path::Path;

/// What an adapter can do with an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Open an image and list its bitmaps (names, granularity, flags).
    pub read_metadata: bool,
    /// Read a bitmap's contents.
    pub read_bitmap_contents: bool,
    /// Read guest data.
    pub read_guest_data: bool,
    /// Write guest data (enables the write check, see [`crate::runner::judge::write_check`]).
    pub write_guest_data: bool,
    /// Add, remove, clear, enable, disable or merge bitmaps.
    pub bitmap_operations: bool,
    /// The incompatible feature bits (header `incompatible_features`) it
    /// supports, when known from evidence; a refusal of an image that sets
    /// any other bit is one the spec requires. `None`: unknown (the judge
    /// then reads the refusal's message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incompatible_features_supported: Option<u64>,
    /// It is given the passphrase of an encrypted case (`case_env`): QEMU
    /// turns it into a secret object, an exec program gets it in its
    /// environment. An implementation that is not holds no key: the judge
    /// holds it to `crypt.refuse-without-key` on encrypted images.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uses_secret: bool,
}

/// What an implementation is, as exactly as it can be told: for reports
/// and for keying expectations (`qemu-img --version`, a crate's version,
/// an exec adapter's own `name`/`version` from its capabilities answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Identity {
    /// The product's own name, when it differs from the adapter's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The exact version (`10.0.2`, `0.2.6`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The full version text (`qemu-img version 10.0.2 (Debian ...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a write through an adapter did.
#[derive(Debug, Clone, Default)]
pub struct WriteRun {
    /// The program reported success.
    pub ok: bool,
    pub error: Option<String>,
    /// The program that wrote (for crash, timeout and sanitizer checks).
    pub process: Option<Proc>,
    /// Commands that reproduce the write (`$WORK` handled by the runner).
    pub commands: Vec<String>,
    /// What the adapter itself found wrong with the result (e.g. the model
    /// does not read the written data back); each makes the case
    /// `corrupting`.
    pub problems: Vec<String>,
}

/// One implementation under test.
pub trait Adapter: Send + Sync {
    /// The implementation's name in reports (`qemu`, `exec:...`).
    fn name(&self) -> &str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Its product name and exact version, where known (asked once per run).
    fn identity(&self) -> Identity {
        Identity::default()
    }

    /// Opens `image_copy` (a private copy the adapter may modify) and
    /// reports what the implementation saw. Never fails: a program that
    /// cannot start, crashes or hangs is part of the observation.
    fn observe(&self, image_copy: &Path, limits: &Limits) -> Observation;

    /// Writes `len` bytes of guest data at virtual offset `offset` of
    /// `image_copy`. Only called when [`Capabilities::write_guest_data`].
    fn write(&self, image_copy: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        let _ = (image_copy, offset, len, limits);
        WriteRun {
            error: Some(format!("{} cannot write", self.name())),
            ..WriteRun::default()
        }
    }

    /// The guest bytes [`Adapter::write`] puts at `offset..offset+len`,
    /// when the adapter knows them (the write check looks for them in an
    /// encrypted image written with the key: `crypt.no-plaintext`).
    fn written_data(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let _ = (offset, len);
        None
    }

    /// Whether [`Adapter::bitmap_ops`] runs (QEMU with `--bitmap-ops`).
    fn checks_bitmap_ops(&self) -> bool {
        false
    }

    /// The bitmap-operations check (QEMU's:
    /// [`super::adapters::qemu::ops`]) on `image_copy`, a private copy of a
    /// valid image; `work` is scratch space. Only called when
    /// [`Adapter::checks_bitmap_ops`].
    fn bitmap_ops(&self, image_copy: &Path, work: &Path, limits: &Limits) -> Option<OpsCheck> {
        let _ = (image_copy, work, limits);
        None
    }
}
