//! Minimal encoders for compressed guest clusters: raw deflate (RFC 1951)
//! and zstd frames (RFC 8878), each either stored (a stream a little longer
//! than the data) or as runs of repeated bytes (a stream much shorter than
//! the data, as real compressors make of the generator's pattern-filled
//! clusters).
//!
//! Written here rather than taken from a compression library because a
//! compressor under the fuzzer's comparison tracing costs more than all the
//! rest of an exec; these only copy bytes or count runs.

/// Maximal runs of equal bytes: `(byte, length)`. Compares eight bytes at
/// a time where it can (every comparison is traced under the fuzzer).
fn runs(data: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&b) = data.get(at) {
        let word = [b; 8];
        let mut end = at + 1;
        while data.get(end..end + 8) == Some(&word[..]) {
            end += 8;
        }
        while data.get(end) == Some(&b) {
            end += 1;
        }
        out.push((b, end - at));
        at = end;
    }
    out
}

/// Raw deflate of stored blocks (RFC 1951, 3.2.4): per block of at most
/// 65535 bytes a header byte (BFINAL in bit 0, BTYPE 00), LEN and its
/// one's complement NLEN as little-endian u16, then the bytes.
pub fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / 0xffff + 1));
    let mut blocks = data.chunks(0xffff).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(b) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = b.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Bits packed from the least significant bit of each byte up.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    /// `n` bits of `v`, least significant first (header fields, extra bits).
    fn put(&mut self, v: u32, n: u32) {
        for i in 0..n {
            self.acc |= ((v >> i) & 1) << self.n;
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    /// A Huffman code of `n` bits, most significant bit first.
    fn code(&mut self, c: u32, n: u32) {
        for i in (0..n).rev() {
            self.put((c >> i) & 1, 1);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Symbol `s` of the fixed literal/length code (RFC 1951, 3.2.6).
fn fixed(bits: &mut Bits, s: u32) {
    match s {
        0..=143 => bits.code(0x30 + s, 8),
        144..=255 => bits.code(0x190 + s - 144, 9),
        256..=279 => bits.code(s - 256, 7),
        _ => bits.code(0xc0 + s - 280, 8),
    }
}

/// Raw deflate, one block with the fixed Huffman codes: each run of equal
/// bytes is its first byte as a literal, then copies at distance 1 of
/// length 258 (symbol 285) or 3 to 10 (symbols 257 to 264, no extra bits),
/// and literals for what is left.
pub fn deflate_runs(data: &[u8]) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE 01: fixed codes
    for (b, n) in runs(data) {
        fixed(&mut bits, u32::from(b));
        let mut left = n - 1;
        while left > 0 {
            let len = if left >= 258 { 258 } else { left.min(10) };
            if len < 3 {
                fixed(&mut bits, u32::from(b));
                left -= 1;
                continue;
            }
            fixed(&mut bits, if len == 258 { 285 } else { 254 + len as u32 });
            bits.code(0, 5); // distance code 0: distance 1
            left -= len;
        }
    }
    fixed(&mut bits, 256); // end of block
    bits.finish()
}

/// Largest block a zstd frame may hold (RFC 8878, 3.1.1.2.4).
const ZSTD_BLOCK_MAX: usize = 128 << 10;

/// A zstd frame holding `data`: magic, a single-segment frame header with
/// a 4-byte content size and no checksum, then blocks whose 3-byte
/// little-endian header holds Last_Block (bit 0), Block_Type (bits 1-2: 0
/// raw, 1 RLE) and Block_Size (bits 3-23). With `rle`, every run of equal
/// bytes is an RLE block (one byte repeated Block_Size times); otherwise
/// the bytes are raw blocks.
pub fn zstd(data: &[u8], rle: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(if rle { 64 } else { data.len() + 16 });
    out.extend_from_slice(&0xfd2f_b528u32.to_le_bytes());
    // Frame_Content_Size_flag 2 (4 bytes), Single_Segment_flag.
    out.push(2 << 6 | 1 << 5);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let mut blocks: Vec<(u32, &[u8], usize)> = Vec::new();
    if rle {
        let mut at = 0;
        for (_, n) in runs(data) {
            let mut left = n;
            while left > 0 {
                let k = left.min(ZSTD_BLOCK_MAX);
                blocks.push((1, &data[at..at + 1], k));
                at += k;
                left -= k;
            }
        }
    } else {
        for b in data.chunks(ZSTD_BLOCK_MAX) {
            blocks.push((0, b, b.len()));
        }
    }
    if blocks.is_empty() {
        blocks.push((0, &[], 0));
    }
    let last = blocks.len() - 1;
    for (i, (kind, body, size)) in blocks.into_iter().enumerate() {
        let header = u32::from(i == last) | kind << 1 | (size as u32) << 3;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(packed: &[u8]) -> Vec<u8> {
        miniz_oxide::inflate::decompress_to_vec(packed).expect("inflates")
    }

    fn unzstd(packed: &[u8]) -> Vec<u8> {
        let mut d = ruzstd::decoding::StreamingDecoder::new(packed).expect("zstd frame");
        let mut out = Vec::new();
        d.read_to_end(&mut out).expect("zstd decodes");
        out
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut v = vec![Vec::new(), vec![7], vec![0; 3], vec![9; 70_000]];
        for n in [1usize, 2, 3, 4, 10, 11, 12, 257, 258, 259, 260, 261, 600] {
            let mut d = vec![0u8; 5];
            d.extend(std::iter::repeat_n(200u8, n));
            d.extend(std::iter::repeat_n(143u8, n + 1));
            d.extend(std::iter::repeat_n(144u8, 2));
            v.push(d);
        }
        v.push((0..=255u8).cycle().take(140_000).collect());
        v
    }

    #[test]
    fn deflate_streams_inflate_to_their_data() {
        for d in samples() {
            assert_eq!(inflate(&deflate_stored(&d)), d, "stored, {} bytes", d.len());
            assert_eq!(inflate(&deflate_runs(&d)), d, "runs, {} bytes", d.len());
        }
        assert!(deflate_runs(&[5; 4096]).len() < 64);
    }

    #[test]
    fn zstd_frames_decode_to_their_data() {
        for d in samples() {
            assert_eq!(unzstd(&zstd(&d, false)), d, "raw, {} bytes", d.len());
            assert_eq!(unzstd(&zstd(&d, true)), d, "rle, {} bytes", d.len());
        }
        assert!(zstd(&[5; 4096], true).len() < 32);
    }
}
