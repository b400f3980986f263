//! A small NBD client (the protocol of the NBD project's `proto.md`):
//! fixed-newstyle handshake over a Unix socket, structured replies, one
//! metadata context (`qemu:dirty-bitmap:NAME`, whose extents with bit 0
//! set are dirty), and the commands a backup reader and a guest need:
//! block status, read, write, write-zeroes, trim, disconnect. Written
//! here rather than borrowed from QEMU's tools so that QEMU's server is
//! judged by a client that is not QEMU.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY: u32 = 0x6744_6698;
const STRUCTURED_REPLY: u32 = 0x668e_33ef;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;

const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERROR_BIT: u32 = 1 << 31;
const INFO_EXPORT: u16 = 0;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;
const CMD_BLOCK_STATUS: u16 = 7;

const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

/// The largest request the client sends (QEMU's limit is 32 MiB).
const MAX_REQUEST: u64 = 1 << 24;

/// Why an NBD exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("NBD socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("NBD protocol: {0}")]
    Protocol(String),
    #[error("NBD server refused option {option}: {message}")]
    OptionRefused { option: u32, message: String },
    #[error("NBD server refused the metadata context {0:?}")]
    NoContext(String),
    #[error("NBD command failed with error {errno}: {message}")]
    Command { errno: u32, message: String },
}

/// One negotiated connection to an export.
pub struct NbdClient {
    sock: UnixStream,
    /// Export size in bytes.
    pub size: u64,
    /// The ID the server gave the requested metadata context.
    context: Option<u32>,
    cookie: u64,
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

fn proto(m: impl Into<String>) -> NbdError {
    NbdError::Protocol(m.into())
}

impl NbdClient {
    /// Connects to export `name` at `socket`; with `context`, also asks
    /// for that metadata context (refused: [`NbdError::NoContext`]).
    pub fn connect(
        socket: &Path,
        name: &str,
        context: Option<&str>,
        timeout: Duration,
    ) -> Result<NbdClient, NbdError> {
        let sock = UnixStream::connect(socket)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let mut c = NbdClient {
            sock,
            size: 0,
            context: None,
            cookie: 0,
        };
        c.handshake(name, context)?;
        Ok(c)
    }

    fn read_n(&mut self, n: usize) -> Result<Vec<u8>, NbdError> {
        let mut b = vec![0u8; n];
        self.sock.read_exact(&mut b)?;
        Ok(b)
    }

    fn send_option(&mut self, option: u32, data: &[u8]) -> Result<(), NbdError> {
        let mut m = Vec::with_capacity(16 + data.len());
        m.extend(IHAVEOPT.to_be_bytes());
        m.extend(option.to_be_bytes());
        m.extend((data.len() as u32).to_be_bytes());
        m.extend(data);
        self.sock.write_all(&m)?;
        Ok(())
    }

    /// One option reply: (type, data).
    fn option_reply(&mut self, option: u32) -> Result<(u32, Vec<u8>), NbdError> {
        let h = self.read_n(20)?;
        if be_u64(&h) != REPLY_MAGIC || be_u32(&h[8..]) != option {
            return Err(proto("bad option reply header"));
        }
        let (kind, len) = (be_u32(&h[12..]), be_u32(&h[16..]));
        if len > 1 << 20 {
            return Err(proto("option reply too long"));
        }
        let data = self.read_n(len as usize)?;
        if kind & REP_ERROR_BIT != 0 {
            return Err(NbdError::OptionRefused {
                option,
                message: String::from_utf8_lossy(&data).into_owned(),
            });
        }
        Ok((kind, data))
    }

    fn handshake(&mut self, name: &str, context: Option<&str>) -> Result<(), NbdError> {
        let h = self.read_n(18)?;
        if be_u64(&h) != NBDMAGIC || be_u64(&h[8..]) != IHAVEOPT {
            return Err(proto("not a fixed-newstyle NBD server"));
        }
        let flags = be_u16(&h[16..]);
        if flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(proto("server lacks fixed newstyle"));
        }
        let client = u32::from(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
        self.sock.write_all(&client.to_be_bytes())?;

        self.send_option(OPT_STRUCTURED_REPLY, &[])?;
        let (kind, _) = self.option_reply(OPT_STRUCTURED_REPLY)?;
        if kind != REP_ACK {
            return Err(proto("structured replies not acknowledged"));
        }
        let name_bytes = name.as_bytes();
        if let Some(ctx) = context {
            let mut d = Vec::new();
            d.extend((name_bytes.len() as u32).to_be_bytes());
            d.extend(name_bytes);
            d.extend(1u32.to_be_bytes());
            d.extend((ctx.len() as u32).to_be_bytes());
            d.extend(ctx.as_bytes());
            self.send_option(OPT_SET_META_CONTEXT, &d)?;
            loop {
                let (kind, data) = self.option_reply(OPT_SET_META_CONTEXT)?;
                match kind {
                    REP_META_CONTEXT if data.len() >= 4 => {
                        if &data[4..] == ctx.as_bytes() {
                            self.context = Some(be_u32(&data));
                        }
                    }
                    REP_ACK => break,
                    _ => return Err(proto("unexpected reply to SET_META_CONTEXT")),
                }
            }
            if self.context.is_none() {
                return Err(NbdError::NoContext(ctx.to_owned()));
            }
        }
        let mut d = Vec::new();
        d.extend((name_bytes.len() as u32).to_be_bytes());
        d.extend(name_bytes);
        d.extend(0u16.to_be_bytes());
        self.send_option(OPT_GO, &d)?;
        let mut got_size = false;
        loop {
            let (kind, data) = self.option_reply(OPT_GO)?;
            match kind {
                REP_INFO if data.len() >= 12 && be_u16(&data) == INFO_EXPORT => {
                    self.size = be_u64(&data[2..]);
                    got_size = true;
                }
                REP_INFO => {}
                REP_ACK => break,
                _ => return Err(proto("unexpected reply to GO")),
            }
        }
        if !got_size {
            return Err(proto("GO gave no export size"));
        }
        Ok(())
    }

    fn request(&mut self, kind: u16, offset: u64, len: u32, data: &[u8]) -> Result<u64, NbdError> {
        self.cookie += 1;
        let mut m = Vec::with_capacity(28 + data.len());
        m.extend(REQUEST_MAGIC.to_be_bytes());
        m.extend(0u16.to_be_bytes());
        m.extend(kind.to_be_bytes());
        m.extend(self.cookie.to_be_bytes());
        m.extend(offset.to_be_bytes());
        m.extend(len.to_be_bytes());
        m.extend(data);
        self.sock.write_all(&m)?;
        Ok(self.cookie)
    }

    /// Reads the reply chunks of request `cookie`, handing each payload
    /// chunk (type, payload) to `chunk`.
    fn replies(
        &mut self,
        cookie: u64,
        chunk: impl FnMut(u16, &[u8]) -> Result<(), NbdError>,
    ) -> Result<(), NbdError> {
        self.replies_of(|c| c == cookie, chunk).map(|_| ())
    }

    /// As [`NbdClient::replies`] for the first request whose cookie
    /// `accept` takes (requests in flight together may be answered in
    /// any order): that cookie.
    fn replies_of(
        &mut self,
        accept: impl Fn(u64) -> bool,
        mut chunk: impl FnMut(u16, &[u8]) -> Result<(), NbdError>,
    ) -> Result<u64, NbdError> {
        loop {
            let magic = be_u32(&self.read_n(4)?);
            match magic {
                SIMPLE_REPLY => {
                    let h = self.read_n(12)?;
                    let errno = be_u32(&h);
                    let cookie = be_u64(&h[4..]);
                    if !accept(cookie) {
                        return Err(proto("reply for another request"));
                    }
                    if errno != 0 {
                        return Err(NbdError::Command {
                            errno,
                            message: String::new(),
                        });
                    }
                    return Ok(cookie);
                }
                STRUCTURED_REPLY => {
                    let h = self.read_n(16)?;
                    let (flags, kind) = (be_u16(&h), be_u16(&h[2..]));
                    let cookie = be_u64(&h[4..]);
                    if !accept(cookie) {
                        return Err(proto("reply for another request"));
                    }
                    let len = be_u32(&h[12..]);
                    if u64::from(len) > MAX_REQUEST + 64 {
                        return Err(proto("reply chunk too long"));
                    }
                    let payload = self.read_n(len as usize)?;
                    if kind & REPLY_TYPE_ERROR_BIT != 0 {
                        let errno = if payload.len() >= 4 {
                            be_u32(&payload)
                        } else {
                            0
                        };
                        let mlen = if payload.len() >= 6 {
                            be_u16(&payload[4..]) as usize
                        } else {
                            0
                        };
                        let message = payload
                            .get(6..6 + mlen)
                            .map(|m| String::from_utf8_lossy(m).into_owned())
                            .unwrap_or_default();
                        return Err(NbdError::Command { errno, message });
                    }
                    if kind != REPLY_TYPE_NONE {
                        chunk(kind, &payload)?;
                    }
                    if flags & REPLY_FLAG_DONE != 0 {
                        return Ok(cookie);
                    }
                }
                _ => return Err(proto(format!("bad reply magic {magic:#x}"))),
            }
        }
    }

    /// The extents of the negotiated metadata context over the whole
    /// export whose flags have bit 0 set (for `qemu:dirty-bitmap:NAME`:
    /// the dirty byte ranges), merged.
    pub fn dirty_extents(&mut self) -> Result<Vec<(u64, u64)>, NbdError> {
        self.dirty_extents_within(None, usize::MAX)
    }

    /// [`NbdClient::dirty_extents`], given up (a protocol error) once
    /// `deadline` has passed or there are more than `most` ranges.
    pub fn dirty_extents_within(
        &mut self,
        deadline: Option<std::time::Instant>,
        most: usize,
    ) -> Result<Vec<(u64, u64)>, NbdError> {
        let Some(ctx) = self.context else {
            return Err(NbdError::NoContext(String::new()));
        };
        let size = self.size;
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let len = (size - pos).min(u64::from(u32::MAX) & !511) as u32;
            let cookie = self.request(CMD_BLOCK_STATUS, pos, len, &[])?;
            let mut next = pos;
            self.replies(cookie, |kind, p| {
                if kind != REPLY_TYPE_BLOCK_STATUS || p.len() < 4 || be_u32(p) != ctx {
                    return Ok(());
                }
                for d in p[4..].chunks_exact(8) {
                    let (l, flags) = (u64::from(be_u32(d)), be_u32(&d[4..]));
                    let end = (next + l).min(size);
                    if flags & 1 != 0 && next < end {
                        match out.last_mut() {
                            Some(last) if last.1 == next => last.1 = end,
                            _ => out.push((next, end)),
                        }
                    }
                    next = end;
                }
                Ok(())
            })?;
            if next <= pos {
                return Err(proto("block status made no progress"));
            }
            if out.len() > most {
                return Err(proto(format!("more than {most} dirty ranges")));
            }
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                return Err(proto("block status took longer than allowed"));
            }
            pos = next;
        }
        Ok(out)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        for (i, piece) in data.chunks(MAX_REQUEST as usize).enumerate() {
            let at = offset + (i as u64) * MAX_REQUEST;
            let cookie = self.request(CMD_WRITE, at, piece.len() as u32, piece)?;
            self.replies(cookie, |_, _| Ok(()))?;
        }
        Ok(())
    }

    /// Writes every `(offset, data)` with all the requests in flight
    /// together (sent before any reply is read), replies taken in the
    /// order the server sends them. An error leaves replies unread: the
    /// connection must then be dropped.
    pub fn write_concurrently(&mut self, writes: &[(u64, Vec<u8>)]) -> Result<(), NbdError> {
        let mut pending = std::collections::BTreeSet::new();
        for (offset, data) in writes {
            for (i, piece) in data.chunks(MAX_REQUEST as usize).enumerate() {
                let at = offset + (i as u64) * MAX_REQUEST;
                pending.insert(self.request(CMD_WRITE, at, piece.len() as u32, piece)?);
            }
        }
        while !pending.is_empty() {
            let done = self.replies_of(|c| pending.contains(&c), |_, _| Ok(()))?;
            pending.remove(&done);
        }
        Ok(())
    }

    /// Write-zeroes (`zero = true`) or trim (discard) of `[offset,
    /// offset+len)`.
    pub fn zero_or_trim(&mut self, offset: u64, len: u64, zero: bool) -> Result<(), NbdError> {
        let kind = if zero { CMD_WRITE_ZEROES } else { CMD_TRIM };
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (end - pos).min(MAX_REQUEST);
            let cookie = self.request(kind, pos, n as u32, &[])?;
            self.replies(cookie, |_, _| Ok(()))?;
            pos += n;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, NbdError> {
        let mut buf = vec![0u8; len as usize];
        let cookie = self.request(CMD_READ, offset, len, &[])?;
        self.replies(cookie, |kind, p| {
            let at = be_u64(p)
                .checked_sub(offset)
                .ok_or_else(|| proto("read chunk before the request"))?
                as usize;
            match kind {
                REPLY_TYPE_OFFSET_DATA => {
                    let d = &p[8..];
                    buf.get_mut(at..at + d.len())
                        .ok_or_else(|| proto("read chunk past the request"))?
                        .copy_from_slice(d);
                }
                REPLY_TYPE_OFFSET_HOLE if p.len() >= 12 => {
                    let n = be_u32(&p[8..]) as usize;
                    buf.get_mut(at..at + n)
                        .ok_or_else(|| proto("hole past the request"))?
                        .fill(0);
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(buf)
    }

    /// Flushes written data.
    pub fn flush(&mut self) -> Result<(), NbdError> {
        let cookie = self.request(CMD_FLUSH, 0, 0, &[])?;
        self.replies(cookie, |_, _| Ok(()))
    }

    /// Ends the session politely.
    pub fn disconnect(mut self) {
        let _ = self.request(CMD_DISC, 0, 0, &[]);
    }
}
