//! The JSON that QEMU's tools print: `qemu-img info`, `qemu-img check`
//! and `qemu-img map` (`--output=json`), the fields this project uses.

use serde::Deserialize;

/// What `qemu-img info --output=json` says about an image (the fields this
/// project uses).
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    pub format: String,
    #[serde(rename = "cluster-size")]
    pub cluster_size: Option<u64>,
    #[serde(rename = "dirty-flag", default)]
    pub dirty_flag: bool,
    #[serde(rename = "format-specific")]
    pub format_specific: Option<FormatSpecific>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
}

impl ImageInfo {
    /// The persistent bitmaps, in the order QEMU lists them (empty when
    /// there are none).
    pub fn bitmaps(&self) -> &[BitmapInfo] {
        self.format_specific
            .as_ref()
            .and_then(|f| f.data.bitmaps.as_deref())
            .unwrap_or(&[])
    }

    /// The qcow2 `compat` level ("0.10" or "1.1").
    pub fn compat(&self) -> Option<&str> {
        self.format_specific.as_ref()?.data.compat.as_deref()
    }
}

/// `format-specific` of `qemu-img info`.
#[derive(Debug, Clone, Deserialize)]
pub struct FormatSpecific {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Qcow2Specific,
}

/// `format-specific.data` for qcow2.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Qcow2Specific {
    pub compat: Option<String>,
    pub bitmaps: Option<Vec<BitmapInfo>>,
    pub corrupt: Option<bool>,
    #[serde(rename = "extended-l2")]
    pub extended_l2: Option<bool>,
    #[serde(rename = "refcount-bits")]
    pub refcount_bits: Option<u32>,
    #[serde(rename = "compression-type")]
    pub compression_type: Option<String>,
}

/// One persistent bitmap as `qemu-img info` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BitmapInfo {
    pub name: String,
    /// Bytes per bit.
    pub granularity: u64,
    /// "in-use", "auto" (QEMU's names for the on-disk flags).
    pub flags: Vec<String>,
}

impl BitmapInfo {
    pub fn in_use(&self) -> bool {
        self.flags.iter().any(|f| f == "in-use")
    }

    /// Enabled: records writes.
    pub fn auto(&self) -> bool {
        self.flags.iter().any(|f| f == "auto")
    }

    /// log2 of the granularity, if it is a power of two.
    pub fn granularity_bits(&self) -> Option<u8> {
        self.granularity
            .is_power_of_two()
            .then(|| self.granularity.trailing_zeros() as u8)
    }
}

/// One internal snapshot as `qemu-img info` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    #[serde(rename = "vm-state-size", default)]
    pub vm_state_size: u64,
}

/// What `qemu-img check --output=json` says.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckInfo {
    #[serde(rename = "check-errors", default)]
    pub check_errors: u64,
    #[serde(default)]
    pub corruptions: u64,
    #[serde(default)]
    pub leaks: u64,
    #[serde(rename = "corruptions-fixed", default)]
    pub corruptions_fixed: u64,
    #[serde(rename = "leaks-fixed", default)]
    pub leaks_fixed: u64,
    #[serde(rename = "image-end-offset")]
    pub image_end_offset: Option<u64>,
    #[serde(rename = "total-clusters")]
    pub total_clusters: Option<u64>,
    #[serde(rename = "allocated-clusters")]
    pub allocated_clusters: Option<u64>,
    /// qemu-img check's exit status: 0 clean, 2 corruptions, 3 leaks only.
    #[serde(skip)]
    pub exit_code: i32,
}

impl CheckInfo {
    /// No errors, corruptions or leaks.
    pub fn is_clean(&self) -> bool {
        self.check_errors == 0 && self.corruptions == 0 && self.leaks == 0
    }
}

/// One extent of `qemu-img map --output=json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MapExtent {
    pub start: u64,
    pub length: u64,
    pub data: bool,
    #[serde(default)]
    pub zero: bool,
    #[serde(default)]
    pub present: bool,
    pub offset: Option<u64>,
}
