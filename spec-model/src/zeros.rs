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
    let mut chunks = bytes.chunks_exact(CHUNK);
    let mut p = 0;
    for c in chunks.by_ref() {
        if <&[u8; CHUNK]>::try_from(c).map_or(true, |a| or_all(a) != 0) {
            return c.iter().position(|&b| b != 0).map(|k| p + k);
        }
        p += CHUNK;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b != 0)
        .map(|k| p + k)
}
#[cfg(test)]
mod tests {
    use super::first_nonzero;

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
