//! Header extensions (spec "Header extensions").

use crate::context::Ctx;
use crate::fields::{extension as f, Field};
use crate::io::CheckError;
use crate::rules::Rule;
use serde::Serialize;
use std::io::{Read, Seek};

/// One header extension as found in the file.
#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    /// File offset of the extension's type field.
    pub offset: u64,
    #[serde(rename = "type")]
    pub ext_type: u32,
    pub type_name: &'static str,
    pub length: u32,
    /// The extension's data (length bytes).
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl Extension {
    /// File offset of the data.
    pub fn data_offset(&self) -> u64 {
        self.offset + f::PREFIX_LENGTH as u64
    }

    /// Reads a field of the data (missing bytes read as zero).
    pub fn get(&self, field: Field) -> u64 {
        field.get(&self.data)
    }
}

const KNOWN: [u32; 5] = [
    f::BACKING_FORMAT,
    f::FEATURE_NAME_TABLE,
    f::BITMAPS,
    f::ENCRYPTION,
    f::EXTERNAL_DATA_FILE,
];

impl<R: Read + Seek> Ctx<R> {
    /// Reads the extension list, reporting `ext.*` rules. Extensions past
    /// a broken one are not read.
    pub fn parse_extensions(&mut self) -> Result<Vec<Extension>, CheckError> {
        let mut out: Vec<Extension> = Vec::new();
        let limit = self.h.cluster_size().min(self.img.len());
        let mut pos = self.h.extensions_start();
        let limit_name = self.limit_name(limit);
        while pos < self.h.cluster_size() {
            let prefix_end = pos + f::PREFIX_LENGTH as u64;
            if prefix_end > limit {
                self.findings.add_with(
                    Rule::ExtBounds,
                    pos,
                    msg!(
                        "extension header at {pos:#x} runs past {} at {limit:#x}",
                        limit_name
                    ),
                );
                break;
            }
            let prefix = self
                .img
                .read_checked(pos, f::PREFIX_LENGTH as u64)?
                .unwrap_or_default();
            let ext_type = f::TYPE.get(&prefix) as u32;
            let length = f::LENGTH.get(&prefix) as u32;
            if ext_type == f::END {
                break;
            }
            let padded = u64::from(length).div_ceil(8) * 8;
            if prefix_end + padded > limit {
                self.findings.add_with(
                    Rule::ExtBounds,
                    pos,
                    msg!(
                        "extension {ext_type:#010x} ({}) of length {length} at {pos:#x} runs past {} at {limit:#x}",
                        f::type_name(ext_type),
                        limit_name
                    ),
                );
                break;
            }
            let mut data = self
                .img
                .read_checked(prefix_end, padded)?
                .unwrap_or_default();
            let string_ext = matches!(ext_type, f::BACKING_FORMAT | f::EXTERNAL_DATA_FILE);
            if !string_ext && data[length as usize..].iter().any(|&b| b != 0) {
                self.findings.add_with(
                    Rule::ExtPadding,
                    prefix_end + u64::from(length),
                    msg!("padding after extension {ext_type:#010x} is not zero (the spec does not say it must be)"),
                );
            }
            data.truncate(length as usize);
            if KNOWN.contains(&ext_type) && out.iter().any(|e| e.ext_type == ext_type) {
                self.findings.add_with(
                    Rule::ExtDuplicate,
                    pos,
                    msg!(
                        "extension {ext_type:#010x} ({}) appears a second time",
                        f::type_name(ext_type)
                    ),
                );
            }
            out.push(Extension {
                offset: pos,
                ext_type,
                type_name: f::type_name(ext_type),
                length,
                data,
            });
            pos = prefix_end + padded;
        }
        Ok(out)
    }

    fn limit_name(&self, limit: u64) -> &'static str {
        if limit == self.h.cluster_size() {
            "the end of the first cluster"
        } else {
            "the end of the file"
        }
    }
}
