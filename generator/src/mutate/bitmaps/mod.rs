//! Mutations that break the bitmaps extension (spec "Bitmaps extension",
//! "Bitmap directory", "Bitmap table", "Bitmap data"; rules `bitmaps.*`),
//! one module per structure, and the apply steps they share.

pub(super) mod dir;
pub(super) mod ext;
pub(super) mod table;

use super::{Skip, Target};
use rand::Rng;
use spec_model::fields::Field;

/// The directory entry offset of a random bitmap.
pub(super) fn pick_entry(t: &mut Target) -> Result<u64, Skip> {
    let n = t.layout.bitmaps.len();
    if n == 0 {
        return Err("no bitmap");
    }
    let i = t.rng.gen_range(0..n);
    Ok(t.layout.bitmaps[i].entry_offset)
}

/// Writes `v` to field `f` of a random bitmap's directory entry.
pub(super) fn put_in_entry(t: &mut Target, f: Field, v: u64) -> Result<(), Skip> {
    let at = pick_entry(t)?;
    t.put(at, f, v);
    Ok(())
}
