//! Revisions of the bitmaps format: the shipped one and the historical
//! drafts of `shared/seeds/` (the generator issue adds the drafts).

use serde::Serialize;

/// A revision of the format that images may be read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Revision {
    /// The format QEMU ships (`docs/interop/qcow2.rst`).
    Final,
}

impl Revision {
    pub const ALL: &'static [Revision] = &[Revision::Final];

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::Final => "final",
        }
    }
}

impl std::str::FromStr for Revision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Revision::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Revision::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown revision {s:?}; known: {}", known.join(", "))
            })
    }
}
