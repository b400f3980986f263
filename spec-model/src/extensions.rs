//! Header extensions (spec "Header extensions").

use crate::context::Ctx;
use crate::fields::{extension as ext, Field};
use crate::finding::Findings;
use crate::io::{CheckError, Image};
use crate::rules::{Catalogued, Rule};
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
        self.offset + ext::PREFIX_LENGTH as u64
    }

    /// Reads a field of the data (missing bytes read as zero).
    pub fn get(&self, field: Field) -> u64 {
        field.get(&self.data)
    }
}

const KNOWN: [u32; 5] = [
    ext::BACKING_FORMAT,
    ext::FEATURE_NAME_TABLE,
    ext::BITMAPS,
    ext::ENCRYPTION,
    ext::EXTERNAL_DATA_FILE,
];

/// Where a walk of the extension area stopped: the extension at `offset`
/// (its prefix, or with `ext` = (type, length) its padded data) runs past
/// `limit`, the end of the first cluster or of the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Overrun {
    pub offset: u64,
    pub ext: Option<(u32, u32)>,
    pub limit: u64,
}

/// Walks the header extensions from `start` up to the type-0 end marker,
/// the end of the first cluster (`cluster_size`) or of the file, whichever
/// comes first. Extensions past one that overruns are not read. `padding`
/// sees each extension with the padding bytes after its data (and their
/// file offset). The final spec's reader and the drafts' share this walk;
/// each reports the overrun and repeats in its own words.
pub(crate) fn walk<R: Read + Seek>(
    img: &mut Image<R>,
    start: u64,
    cluster_size: u64,
    mut padding: impl FnMut(&Extension, u64, &[u8]),
) -> Result<(Vec<Extension>, Option<Overrun>), CheckError> {
    let mut list: Vec<Extension> = Vec::new();
    let limit = cluster_size.min(img.len());
    let mut pos = start;
    while pos < cluster_size {
        let prefix_end = pos + ext::PREFIX_LENGTH as u64;
        let overrun = |ext| Overrun {
            offset: pos,
            ext,
            limit,
        };
        if prefix_end > limit {
            return Ok((list, Some(overrun(None))));
        }
        let prefix = img
            .read_checked(pos, ext::PREFIX_LENGTH as u64)?
            .unwrap_or_default();
        let ext_type = ext::TYPE.get(&prefix) as u32;
        let length = ext::LENGTH.get(&prefix) as u32;
        if ext_type == ext::END {
            break;
        }
        let padded = u64::from(length).div_ceil(8) * 8;
        if prefix_end + padded > limit {
            return Ok((list, Some(overrun(Some((ext_type, length))))));
        }
        let mut data = img.read_checked(prefix_end, padded)?.unwrap_or_default();
        let mut x = Extension {
            offset: pos,
            ext_type,
            type_name: ext::type_name(ext_type),
            length,
            data: Vec::new(),
        };
        padding(
            &x,
            prefix_end + u64::from(length),
            data.get(length as usize..).unwrap_or_default(),
        );
        data.truncate(length as usize);
        x.data = data;
        list.push(x);
        pos = prefix_end + padded;
    }
    Ok((list, None))
}

/// The extensions of `list` whose type appeared before them (only the
/// types the final spec defines when `known_only`).
pub(crate) fn repeats(list: &[Extension], known_only: bool) -> impl Iterator<Item = &Extension> {
    list.iter().enumerate().filter_map(move |(i, x)| {
        let counted = !known_only || KNOWN.contains(&x.ext_type);
        (counted && list[..i].iter().any(|e| e.ext_type == x.ext_type)).then_some(x)
    })
}

/// Reports each extension of a type the final spec defines that appeared
/// before it, as `rule`: "extension T (name) appears {how}".
pub(crate) fn report_repeats<K: Catalogued>(
    findings: &mut Findings<K>,
    list: &[Extension],
    rule: K,
    how: &str,
) {
    for x in repeats(list, true) {
        let ext_type = x.ext_type;
        findings.add_with(
            rule,
            x.offset,
            msg!("extension {ext_type:#010x} ({}) appears {how}", x.type_name),
        );
    }
}

impl<R: Read + Seek> Ctx<R> {
    /// Reads the extension list, reporting `ext.*` rules. Extensions past
    /// a broken one are not read.
    pub fn parse_extensions(&mut self) -> Result<Vec<Extension>, CheckError> {
        let findings = &mut self.findings;
        let (list, overrun) = walk(
            &mut self.img,
            self.h.extensions_start(),
            self.h.cluster_size(),
            |x, at, padding| {
                let string_ext =
                    matches!(x.ext_type, ext::BACKING_FORMAT | ext::EXTERNAL_DATA_FILE);
                if !string_ext && padding.iter().any(|&b| b != 0) {
                    let ext_type = x.ext_type;
                    findings.add_with(
                        Rule::ExtPadding,
                        at,
                        msg!("padding after extension {ext_type:#010x} is not zero (the spec does not say it must be)"),
                    );
                }
            },
        )?;
        report_repeats(
            &mut self.findings,
            &list,
            Rule::ExtDuplicate,
            "a second time",
        );
        if let Some(Overrun {
            offset: pos,
            ext,
            limit,
        }) = overrun
        {
            let limit_name = self.limit_name(limit);
            match ext {
                None => self.findings.add_with(
                    Rule::ExtBounds,
                    pos,
                    msg!("extension header at {pos:#x} runs past {limit_name} at {limit:#x}"),
                ),
                Some((ext_type, length)) => self.findings.add_with(
                    Rule::ExtBounds,
                    pos,
                    msg!(
                        "extension {ext_type:#010x} ({}) of length {length} at {pos:#x} runs past {limit_name} at {limit:#x}",
                        ext::type_name(ext_type)
                    ),
                ),
            }
        }
        Ok(list)
    }

    fn limit_name(&self, limit: u64) -> &'static str {
        if limit == self.h.cluster_size() {
            "the end of the first cluster"
        } else {
            "the end of the file"
        }
    }
}
