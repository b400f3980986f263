//! Caps on what a program's answer may list, applied while the answer is
//! parsed (so an answer over a cap costs no more memory than the cap):
//! [`bitmaps`] refuses a list of more than [`MAX_BITMAPS`] bitmaps, the
//! most an image can hold (the spec's bitmaps extension: `nb_bitmaps` at
//! most 65535). Together with the output cap ([`crate::runner::process::output`]) this
//! keeps every observation, and so every report, bounded per case.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// The most bitmaps an answer may list.
pub const MAX_BITMAPS: usize = 65535;

/// A list of at most [`MAX_BITMAPS`] items (`#[serde(deserialize_with)]`).
pub fn bitmaps<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(AtMost {
        max: MAX_BITMAPS,
        what: "bitmaps (the most an image can hold)",
        item: PhantomData,
    })
}

struct AtMost<T> {
    max: usize,
    what: &'static str,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for AtMost<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(x) = seq.next_element()? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(format!(
                    "the answer lists more than {} {}",
                    self.max, self.what
                )));
            }
            out.push(x);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct Reply {
        #[serde(default, deserialize_with = "super::bitmaps")]
        bitmaps: Vec<u8>,
    }

    #[test]
    fn more_bitmaps_than_an_image_holds_is_refused() {
        let ok = format!("{{\"bitmaps\": [{}]}}", vec!["1"; 65535].join(","));
        assert_eq!(
            serde_json::from_str::<Reply>(&ok).unwrap().bitmaps.len(),
            65535
        );
        let over = format!("{{\"bitmaps\": [{}]}}", vec!["1"; 65536].join(","));
        let e = serde_json::from_str::<Reply>(&over)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 65535 bitmaps"), "{e}");
        assert!(serde_json::from_str::<Reply>("{}")
            .unwrap()
            .bitmaps
            .is_empty());
    }
}
