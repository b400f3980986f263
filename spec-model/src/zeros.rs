//! Finding non-zero bytes in large, mostly zero buffers (refcount blocks,
//! bitmap data clusters) quickly: 64 bytes are OR-ed together at a time,
//! which the compiler turns into a few vector instructions without a loop
//! (and so, in fuzzing builds, without a coverage hook per byte).

/// Bytes tested together.
const CHUNK: usize = 64;

/// OR of all bytes of one chunk.
fn or_all(chunk: &[u8; CHUNK]) -> u8 {
    chunk.iter().fold(0, |acc, &b| acc | b)
}

/// The index of the first non-zero byte of `bytes`, if any.
pub(crate) fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    // In dense data the answer is usually in the first word.
    if let Some(k) = bytes.get(..8).and_then(first_nonzero_in_words) {
        return Some(k);
    }
    let mut chunks = bytes.chunks_exact(CHUNK);
    let mut p = 0;
    for c in chunks.by_ref() {
        if <&[u8; CHUNK]>::try_from(c).map_or(true, |a| or_all(a) != 0) {
            return first_nonzero_in_words(c).map(|k| p + k);
        }
        p += CHUNK;
    }
    first_nonzero_in_words(chunks.remainder()).map(|k| p + k)
}

/// [`first_nonzero`] a word at a time, for short slices.
fn first_nonzero_in_words(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut p = 0;
    for w in words.by_ref() {
        let v = <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes);
        if v != 0 {
            // Little-endian: the first byte is the lowest.
            return Some(p + (v.trailing_zeros() / 8) as usize);
        }
        p += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b != 0)
        .map(|k| p + k)
}

/// True when every byte of a short `entry` (a table entry of 8 or 16
/// bytes) is zero, tested a word at a time. (Not
/// `first_nonzero_in_words(entry).is_none()`: that also locates the byte,
/// and made check_bytes 4 % slower under ASan.)
fn entry_is_zero(entry: &[u8]) -> bool {
    let mut words = entry.chunks_exact(8);
    words
        .by_ref()
        .all(|w| <[u8; 8]>::try_from(w).is_ok_and(|a| u64::from_ne_bytes(a) == 0))
        && words.remainder().iter().all(|&b| b == 0)
}

/// The entries of a table of `width`-byte entries that are not all zero,
/// with their indexes, in order (a trailing partial entry is ignored, as
/// by `chunks_exact`). Runs of zero entries are skipped with
/// [`first_nonzero`]; a non-zero entry right after the previous one is
/// found without searching, so dense tables cost no more than a plain loop.
pub(crate) fn nonzero_table_entries(
    bytes: &[u8],
    width: usize,
) -> impl Iterator<Item = (usize, &[u8])> {
    let width = width.max(1);
    let mut next = 0usize;
    std::iter::from_fn(move || loop {
        let entry = bytes.get(next * width..(next + 1) * width)?;
        if !entry_is_zero(entry) {
            next += 1;
            return Some((next - 1, entry));
        }
        let from = (next + 1) * width;
        let k = first_nonzero(bytes.get(from..)?)?;
        next = (from + k) / width;
    })
}

#[cfg(test)]
mod tests {
    use super::{first_nonzero, nonzero_table_entries};

    #[test]
    fn nonzero_table_entries_match_a_plain_scan() {
        for width in [1usize, 8, 16] {
            for len in [0usize, 7, 8, 16, 24, 200, 4096, 4100] {
                let mut b = vec![0u8; len];
                for at in [
                    0usize, 1, 15, 16, 17, 63, 64, 65, 130, 131, 2000, 4095, 4099,
                ] {
                    if at < len {
                        b[at] = 0x40;
                    }
                }
                let want: Vec<(usize, &[u8])> = b
                    .chunks_exact(width)
                    .enumerate()
                    .filter(|(_, c)| c.iter().any(|&x| x != 0))
                    .collect();
                let got: Vec<(usize, &[u8])> = nonzero_table_entries(&b, width).collect();
                assert_eq!(got, want, "width {width}, len {len}");
            }
        }
    }

    #[test]
    fn finds_the_first_non_zero_byte_anywhere() {
        for len in [0usize, 1, 63, 64, 65, 4095, 4096, 4097, 9000] {
            let zeros = vec![0u8; len];
            assert_eq!(first_nonzero(&zeros), None, "len {len}");
            for at in [0, 1, 63, 64, 4095, 4096, 8191, 8999] {
                if at >= len {
                    continue;
                }
                let mut b = zeros.clone();
                b[at] = 0x80;
                if at + 1 < len {
                    b[len - 1] = 1;
                }
                assert_eq!(first_nonzero(&b), Some(at), "len {len}, at {at}");
            }
        }
    }
}
