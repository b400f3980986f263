//! Coverage feedback for the image campaign (`campaign --coverage-guided`):
//! the arcs of QEMU's bitmap code that the programs of a case ran, read
//! from the `.gcda` counter files a gcov build of QEMU writes
//! (`scripts/build-qemu.sh VERSION --coverage`, `--impl qemu@VERSION-coverage`).
//!
//! Every program the campaign starts writes its counters beneath one
//! directory (`GCOV_PREFIX`, the build's absolute paths below it), where
//! gcov's runtime adds them to what is already there. After each case the
//! [`Tracker`] reads the counter files of the bitmap sources
//! ([`WATCHED`]) and counts the arcs that are non-zero for the first time:
//! a case that ran an arc (a branch taken, a block entered) no earlier
//! case ran reached new code. Reading the counters directly is the
//! cheapest way: no `gcov` or `gcovr` process per case, no notes files,
//! a few kilobytes read. Lines are not computed here (that needs the
//! notes files; `scripts/qemu-coverage.sh` does it once at the end from
//! the same directory); an arc is finer than a line, so a new line is
//! always a new arc.
//!
//! The `.gcda` layout read (GCC's `gcov-io.h`, version 12): 32-bit
//! little-endian words; the magic `gcda`, the version, a stamp (and, from
//! GCC 12, a checksum); then records of a tag and a length in bytes. A
//! function record (tag `0x01000000`) names the function by its ident; the
//! arc counters record after it (tag `0x01a10000`) holds one 64-bit
//! counter per instrumented arc, low word first, or, with a negative
//! length, says that its `-length / 8` counters are all zero.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The counter files of QEMU's bitmap code, by the object name meson
/// gives them (`libblock.a.p/block_qcow2-bitmap.c.gcda`, ...).
pub const WATCHED: [&str; 4] = [
    "block_qcow2-bitmap.c.gcda",
    "block_dirty-bitmap.c.gcda",
    "block_monitor_bitmap-qmp-cmds.c.gcda",
    "block_qcow2.c.gcda",
];

const MAGIC: u32 = 0x6763_6461;
const TAG_FUNCTION: u32 = 0x0100_0000;
const TAG_ARCS: u32 = 0x01a1_0000;
const TAG_OBJECT_SUMMARY: u32 = 0xa100_0000;

/// Why a counter file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GcdaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a gcda file (magic {magic:#010x} at offset 0)")]
    Magic { path: PathBuf, magic: u32 },
    #[error("{path}: record at offset {offset} claims {len} bytes past the end of the file")]
    Truncated {
        path: PathBuf,
        offset: usize,
        len: u64,
    },
}

/// One arc: the function's ident and the counter's index in it.
pub type Arc = (u32, u32);

/// The arcs of one counter file: every instrumented one, and those run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Arcs {
    pub total: u64,
    pub run: Vec<Arc>,
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// Reads the arc counters of `bytes` (the contents of the file `path`,
/// named in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Arcs, GcdaError> {
    let magic = word(bytes, 0).unwrap_or(0);
    if magic != MAGIC {
        return Err(GcdaError::Magic {
            path: path.to_owned(),
            magic,
        });
    }
    // Magic, version, stamp; GCC 12 adds a checksum: the records start
    // where a known tag does.
    let mut at = 12;
    if !matches!(word(bytes, at), Some(TAG_FUNCTION | TAG_OBJECT_SUMMARY)) {
        at += 4;
    }
    let mut arcs = Arcs::default();
    let mut function = 0u32;
    while let (Some(tag), Some(len)) = (word(bytes, at), word(bytes, at + 4)) {
        let body = at + 8;
        let signed = len as i32;
        let bytes_here = if tag == TAG_ARCS && signed < 0 {
            // All zero: counters without data.
            arcs.total += u64::from(signed.unsigned_abs()) / 8;
            0
        } else {
            len as usize
        };
        if body + bytes_here > bytes.len() {
            return Err(GcdaError::Truncated {
                path: path.to_owned(),
                offset: at,
                len: u64::from(len),
            });
        }
        match tag {
            TAG_FUNCTION if len >= 4 => function = word(bytes, body).unwrap_or(0),
            TAG_ARCS if signed >= 0 => {
                for i in 0..bytes_here / 8 {
                    let lo = word(bytes, body + 8 * i).unwrap_or(0);
                    let hi = word(bytes, body + 8 * i + 4).unwrap_or(0);
                    arcs.total += 1;
                    if lo != 0 || hi != 0 {
                        arcs.run.push((function, i as u32));
                    }
                }
            }
            _ => {}
        }
        at = body + bytes_here;
    }
    Ok(arcs)
}

/// The union of the arcs run so far beneath one `GCOV_PREFIX` directory.
#[derive(Debug)]
pub struct Tracker {
    prefix: PathBuf,
    /// Where each watched file lies beneath the prefix, once found.
    files: Vec<Option<PathBuf>>,
    seen: Vec<HashSet<Arc>>,
    totals: Vec<u64>,
}

impl Tracker {
    /// A tracker of the counters programs write beneath `prefix`.
    pub fn new(prefix: &Path) -> Tracker {
        Tracker {
            prefix: prefix.to_owned(),
            files: vec![None; WATCHED.len()],
            seen: vec![HashSet::new(); WATCHED.len()],
            totals: vec![0; WATCHED.len()],
        }
    }

    /// The directory programs write their counters beneath.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    fn locate(&mut self) {
        if self.files.iter().all(Option::is_some) {
            return;
        }
        let mut dirs = vec![self.prefix.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                // Symbolic links are not followed: only what gcov made.
                match entry.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(path),
                    Ok(t) if t.is_file() => {
                        let name = entry.file_name();
                        if let Some(i) = WATCHED.iter().position(|w| name == **w) {
                            self.files[i].get_or_insert(path);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Reads the counters again: the number of arcs run for the first
    /// time since the last call.
    pub fn poll(&mut self) -> Result<u64, GcdaError> {
        self.locate();
        let mut new = 0;
        for (i, f) in self.files.iter().enumerate() {
            let Some(path) = f else { continue };
            let bytes = std::fs::read(path).map_err(|source| GcdaError::Io {
                path: path.clone(),
                source,
            })?;
            let arcs = parse(path, &bytes)?;
            self.totals[i] = arcs.total;
            for a in arcs.run {
                if self.seen[i].insert(a) {
                    new += 1;
                }
            }
        }
        Ok(new)
    }

    /// Per watched file: its name, the arcs run so far and the arcs it has.
    pub fn summary(&self) -> Vec<(&'static str, u64, u64)> {
        WATCHED
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, self.seen[i].len() as u64, self.totals[i]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn reads_functions_and_their_counters() {
        let b = words(&[
            MAGIC,
            0x4232_322a,
            1,
            2, // header with checksum
            TAG_OBJECT_SUMMARY,
            8,
            1,
            0, // summary
            TAG_FUNCTION,
            12,
            77,
            0,
            0, // function 77
            TAG_ARCS,
            (-16i32) as u32, // two zero counters
            TAG_FUNCTION,
            12,
            78,
            0,
            0, // function 78
            TAG_ARCS,
            24,
            0,
            0,
            5,
            0,
            0,
            1, // 0, 5, 2^32
        ]);
        let a = parse(Path::new("x.gcda"), &b).unwrap();
        assert_eq!(a.total, 5);
        assert_eq!(a.run, vec![(78, 1), (78, 2)]);
        // Without the checksum word (GCC before 12).
        let mut old = words(&[MAGIC, 0x4131_312a, 1]);
        old.extend(words(&[TAG_FUNCTION, 12, 9, 0, 0, TAG_ARCS, 8, 3, 0]));
        assert_eq!(parse(Path::new("o.gcda"), &old).unwrap().run, vec![(9, 0)]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_offset() {
        assert!(matches!(
            parse(Path::new("x"), b"nope"),
            Err(GcdaError::Magic { .. })
        ));
        let b = words(&[MAGIC, 0, 1, 2, TAG_FUNCTION, 400, 1]);
        let e = parse(Path::new("x"), &b).unwrap_err().to_string();
        assert!(e.contains("offset 16"), "{e}");
    }
}
