//! A program's standard output and error, read while it runs and kept
//! within fixed caps, so that no program can make the runner's memory
//! grow with what it prints:
//!
//! - standard output (the protocol answer) is kept up to [`STDOUT_CAP`]
//!   bytes; one byte more and the reader reports an overflow (the runner
//!   then ends the program and the case is a `crash`: "protocol answer
//!   larger than N bytes"), and reads on without keeping anything, so the
//!   program never blocks on a full pipe;
//! - standard error is kept as an excerpt of at most [`STDERR_KEEP`]
//!   bytes: its first half and its last half, with a line saying how much
//!   was left out between them. More is never a crash.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The most standard output the runner keeps (16 MiB).
pub const STDOUT_CAP: usize = 16 << 20;

/// The most standard error the runner keeps (64 KiB: the first and the
/// last 32 KiB).
pub const STDERR_KEEP: usize = 64 << 10;

/// What was kept of one stream.
#[derive(Debug, Default)]
struct Kept {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    /// Bytes read and not kept.
    dropped: u64,
    overflowed: bool,
}

/// What a reader kept, as text.
#[derive(Debug, Default)]
pub struct Taken {
    pub text: String,
    /// Standard output passed [`STDOUT_CAP`].
    pub overflowed: bool,
}

/// A thread reading one stream.
pub struct Reader {
    kept: Arc<Mutex<Kept>>,
    done: mpsc::Receiver<()>,
}

impl Reader {
    /// What was kept, once the stream ended or after `wait` (a process
    /// that escaped containment may hold the pipe open: the thread is
    /// then left to finish on its own).
    pub fn finish(self, wait: Duration) -> Taken {
        let _ = self.done.recv_timeout(wait);
        let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let k = std::mem::take(&mut *k);
        let mut text = String::from_utf8_lossy(&k.head).into_owned();
        if k.dropped > 0 && !k.overflowed {
            text.push_str(&format!("\n[... {} bytes left out ...]\n", k.dropped));
        }
        let (a, b) = k.tail.as_slices();
        text.push_str(&String::from_utf8_lossy(&[a, b].concat()));
        Taken {
            text,
            overflowed: k.overflowed,
        }
    }
}

/// Reads standard output, keeping [`STDOUT_CAP`] bytes; `on_overflow` is
/// called once when the program prints more.
pub fn read_stdout<R: Read + Send + 'static>(
    pipe: Option<R>,
    on_overflow: impl FnOnce() + Send + 'static,
) -> Reader {
    let mut on_overflow = Some(on_overflow);
    spawn(pipe, move |k: &mut Kept, chunk: &[u8]| {
        let room = STDOUT_CAP.saturating_sub(k.head.len());
        k.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        if chunk.len() > room {
            k.dropped += (chunk.len() - room) as u64;
            if !k.overflowed {
                k.overflowed = true;
                if let Some(f) = on_overflow.take() {
                    f();
                }
            }
        }
    })
}

/// Reads standard error, keeping its first and last `STDERR_KEEP / 2`
/// bytes.
pub fn read_stderr<R: Read + Send + 'static>(pipe: Option<R>) -> Reader {
    const HALF: usize = STDERR_KEEP / 2;
    spawn(pipe, |k: &mut Kept, mut chunk: &[u8]| {
        let room = HALF.saturating_sub(k.head.len());
        let n = room.min(chunk.len());
        k.head.extend_from_slice(&chunk[..n]);
        chunk = &chunk[n..];
        if chunk.len() >= HALF {
            k.dropped += (k.tail.len() + chunk.len() - HALF) as u64;
            k.tail.clear();
            chunk = &chunk[chunk.len() - HALF..];
        }
        let over = (k.tail.len() + chunk.len()).saturating_sub(HALF);
        k.dropped += over as u64;
        k.tail.drain(..over);
        k.tail.extend(chunk);
    })
}

fn spawn<R: Read + Send + 'static>(
    pipe: Option<R>,
    mut keep: impl FnMut(&mut Kept, &[u8]) + Send + 'static,
) -> Reader {
    let kept = Arc::new(Mutex::new(Kept::default()));
    let (tx, done) = mpsc::channel();
    let shared = Arc::clone(&kept);
    thread::spawn(move || {
        if let Some(mut p) = pipe {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match p.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut k = shared.lock().unwrap_or_else(|e| e.into_inner());
                        keep(&mut k, &buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let _ = tx.send(());
    });
    Reader { kept, done }
}

#[cfg(test)]
mod tests {
    use crate::runner::process::output::*;

    #[test]
    fn stderr_keeps_its_head_and_tail() {
        let mut text = vec![b'a'; STDERR_KEEP / 2];
        text.extend(vec![b'b'; 100_000]);
        text.extend(b"last line".iter());
        let t = read_stderr(Some(std::io::Cursor::new(text))).finish(Duration::from_secs(5));
        assert!(t.text.starts_with("aaaa"));
        assert!(t.text.ends_with("bbbblast line"));
        assert!(
            t.text.contains("[... 67241 bytes left out ...]"),
            "{}",
            &t.text[32760..32820]
        );
        assert!(t.text.len() < STDERR_KEEP + 100);
        assert!(!t.overflowed);
    }

    #[test]
    fn stdout_past_the_cap_overflows_once() {
        let (tx, rx) = mpsc::channel();
        let big = std::io::Cursor::new(vec![b'x'; STDOUT_CAP + 10]);
        let t = read_stdout(Some(big), move || tx.send(()).unwrap()).finish(Duration::from_secs(5));
        assert!(t.overflowed);
        assert_eq!(t.text.len(), STDOUT_CAP);
        assert_eq!(rx.try_iter().count(), 1);
        let small = std::io::Cursor::new(b"{}".to_vec());
        let t = read_stdout(Some(small), || panic!("no overflow")).finish(Duration::from_secs(5));
        assert_eq!((t.text.as_str(), t.overflowed), ("{}", false));
    }
}
