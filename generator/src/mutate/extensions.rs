//! Mutations that break the header extension area (spec "Header
//! extensions"; rules `ext.*`): bounds, duplicates and padding.

use super::prep::unknown_ext;
use super::{mutation, Mutation};
use rand::Rng;
use spec_model::fields::extension as ext;
use spec_model::Rule;
use spec_model::Severity::{Error, Unspecified};

/// This section of the catalogue, in the catalogue's order.
pub(super) static MUTATIONS: &[Mutation] = &[
    mutation(
        "ext.bounds/past-first-cluster",
        Rule::ExtBounds,
        Error,
        "the last (unknown) extension's length grown so that its data runs past \
         the first cluster",
        |s, u| {
            let n = u.int_in_range(1..=24)?;
            unknown_ext(s, n);
            Ok(())
        },
        |t| {
            let at = t.last_extension()?;
            let data = at + ext::PREFIX_LENGTH as u64;
            let len = t.cluster_size() - data + t.rng.gen_range(1..=64);
            t.put(at, ext::LENGTH, len);
            Ok(())
        },
    ),
    mutation(
        "ext.duplicate/backing-format-twice",
        Rule::ExtDuplicate,
        Error,
        "an unknown extension retyped as a second backing file format name",
        |s, u| {
            s.backing_format = Some("raw".into());
            let n = u.int_in_range(1..=16)?;
            unknown_ext(s, n);
            Ok(())
        },
        |t| {
            let at = t.last_extension()?;
            t.put(at, ext::TYPE, u64::from(ext::BACKING_FORMAT));
            Ok(())
        },
    ),
    mutation(
        "ext.padding/non-zero",
        Rule::ExtPadding,
        Unspecified,
        "one padding byte after an unknown extension's data non-zero",
        |s, u| {
            let n = 8 * u.int_in_range(0..=2)? + u.int_in_range(1..=7)?;
            unknown_ext(s, n);
            Ok(())
        },
        |t| {
            let at = t.last_extension()?;
            let len = t.get(at, ext::LENGTH);
            if len.is_multiple_of(8) {
                return Err("the last extension has no padding");
            }
            let data = at + ext::PREFIX_LENGTH as u64;
            let k = data + t.rng.gen_range(len..len.div_ceil(8) * 8);
            if k >= t.file_len() {
                return Err("the padding lies past the end of the file");
            }
            t.bytes[k as usize] = t.rng.gen_range(1..=255);
            Ok(())
        },
    ),
];
