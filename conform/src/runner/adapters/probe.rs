//! Adapters for qcow2 implementations that do not know the bitmaps
//! extension: the crates `imago`, `qcow2-rs` and `qcow2`, and libqcow
//! (Debian's `python3-libqcow`). One file each holds the code that drives
//! the implementation ([`super::imago`], [`super::qcow2_rs`],
//! [`super::qcow2_crate`], [`super::libqcow`]); this file holds what they
//! share.
//!
//! The implementation never runs inside the runner: the adapter starts
//! `qcow2-conform adapter-probe --impl NAME --image IMAGE [--write OFF LEN]`
//! (a hidden subcommand) through [`crate::runner::process`], so that a
//! panic, an abort, a segfault or a hang costs one case, not the run. The
//! probe process prints one JSON object ([`ProbeReport`]) on stdout.
//!
//! What the probe checks:
//! - **observe**: does the implementation open the image; what does it read
//!   of the virtual disk at the sample ranges of [`sample_ranges`] (first
//!   and last 64 KiB, the first 4 KiB of every allocated cluster up to
//!   [`MAX_CLUSTER_SAMPLES`], and [`RANDOM_SAMPLES`] ranges from a fixed
//!   seed), compared byte for byte with [`spec_model::Model::read_guest`];
//!   and does it report the virtual size of the header;
//! - **write** (`--write OFF LEN`): the implementation opens the image
//!   writable, writes [`pattern_byte`] at `OFF..OFF+LEN` and closes it; then
//!   the model must read the pattern back there and unchanged data at every
//!   sample range outside it. The runner's write check
//!   ([`crate::runner::writes`]) then asks the model whether the image
//!   still conforms, and whether autoclear bit 0 was cleared or the
//!   bitmaps were maintained.

use crate::runner::adapter::{Adapter, Capabilities, WriteRun};
use crate::runner::observation::{GuestCheck, Observation};
use crate::runner::process::{self, Limits, Proc};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use spec_model::Model;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// At most this many allocated clusters are sampled (evenly spread).
pub const MAX_CLUSTER_SAMPLES: usize = 512;
/// Bytes read at the start of each sampled allocated cluster.
pub const CLUSTER_SAMPLE_BYTES: u64 = 4096;
/// Bytes read at each end of the disk.
pub const EDGE_SAMPLE_BYTES: u64 = 64 * 1024;
/// Ranges at pseudo-random offsets and lengths (fixed seed).
pub const RANDOM_SAMPLES: usize = 16;
/// At most this many L2 tables are read to find allocated clusters.
const MAX_L2_TABLES: usize = 256;
/// Mismatch and error descriptions kept per observation.
const MAX_DESCRIBED: usize = 8;

/// The bitmaps-unaware implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// The `imago` crate, version 0.2.6, feature `sync`.
    Imago,
    /// The `qcow2-rs` crate, version 0.1.6.
    Qcow2Rs,
    /// The `qcow2` crate, version 0.1.2 (read-only).
    Qcow2,
    /// libqcow through Debian's `python3-libqcow` (read-only).
    Libqcow,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 4] = [
        ProbeKind::Imago,
        ProbeKind::Qcow2Rs,
        ProbeKind::Qcow2,
        ProbeKind::Libqcow,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Imago => "imago",
            ProbeKind::Qcow2Rs => "qcow2-rs",
            ProbeKind::Qcow2 => "qcow2",
            ProbeKind::Libqcow => "libqcow",
        }
    }

    pub fn from_name(s: &str) -> Option<ProbeKind> {
        ProbeKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the implementation can write guest data.
    pub fn can_write(self) -> bool {
        matches!(self, ProbeKind::Imago | ProbeKind::Qcow2Rs)
    }

    /// Opens `image` through the implementation.
    fn open(self, image: &Path, writable: bool) -> Result<Box<dyn GuestDisk>, String> {
        match self {
            ProbeKind::Imago => super::imago::open(image, writable),
            ProbeKind::Qcow2Rs => super::qcow2_rs::open(image, writable),
            ProbeKind::Qcow2 => super::qcow2_crate::open(image, writable),
            ProbeKind::Libqcow => super::libqcow::open(image, writable),
        }
    }
}

/// An image opened by an implementation, as a virtual disk.
pub trait GuestDisk {
    /// The virtual size the implementation reports.
    fn size(&self) -> u64;
    /// Fills `buf` from virtual offset `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
    /// Writes `data` at virtual offset `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let _ = (offset, data);
        Err("this implementation cannot write".into())
    }
    /// Flushes and closes the image.
    fn close(self: Box<Self>) -> Result<(), String> {
        Ok(())
    }
    /// If the implementation's helper process died of a signal, which.
    fn helper_signal(&self) -> Option<i32> {
        None
    }
}

/// What a write through the implementation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Opened writable, wrote and closed without an error.
    pub ok: bool,
    pub error: Option<String>,
    /// Data the model reads wrongly afterwards.
    pub problems: Vec<String>,
}

/// The probe process's answer (one JSON object on stdout).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeReport {
    pub implementation: String,
    pub opened: bool,
    pub error: Option<String>,
    /// A panic in the implementation's code, with its location.
    pub panic: Option<String>,
    /// The implementation's helper process died of this signal.
    pub signal: Option<i32>,
    pub guest: Option<GuestCheck>,
    pub write: Option<WriteOutcome>,
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------
// Sampling.

/// A deterministic pseudo-random sequence (splitmix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn read_be_u64s(file: &File, offset: u64, count: u64, file_len: u64) -> Option<Vec<u64>> {
    let bytes = count.checked_mul(8)?;
    if offset.checked_add(bytes)? > file_len || bytes > 64 << 20 {
        return None;
    }
    let mut buf = vec![0u8; bytes as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(
        buf.chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// Virtual offsets of the clusters the active L1/L2 tables map (data, zero
/// or compressed entries), in order; reads at most [`MAX_L2_TABLES`]
/// tables and never past the file.
pub fn allocated_clusters(file: &File, h: &spec_model::header::Header) -> Vec<u64> {
    let mut out = Vec::new();
    let Ok(meta) = file.metadata() else {
        return out;
    };
    let file_len = meta.len();
    if !(9..=21).contains(&h.cluster_bits) {
        return out;
    }
    let cs = h.cluster_size();
    let l2_entries = h.l2_entries();
    let entry_size = h.l2_entry_size();
    let l1_needed = h.l1_entries_needed(h.size).min(u128::from(h.l1_size)) as u64;
    let Some(l1) = read_be_u64s(file, h.l1_table_offset, l1_needed, file_len) else {
        return out;
    };
    let mut tables = 0;
    for (i, e) in l1.iter().enumerate() {
        let l2_off = e & 0x00ff_ffff_ffff_fe00;
        if l2_off == 0 {
            continue;
        }
        tables += 1;
        if tables > MAX_L2_TABLES {
            break;
        }
        let Some(l2) = read_be_u64s(file, l2_off, l2_entries * (entry_size / 8), file_len) else {
            continue;
        };
        for (j, entry) in l2.iter().step_by((entry_size / 8) as usize).enumerate() {
            let ext_bitmap = if entry_size == 16 {
                l2.get(j * 2 + 1).copied().unwrap_or(0)
            } else {
                0
            };
            if *entry == 0 && ext_bitmap == 0 {
                continue;
            }
            let virt = (i as u64 * l2_entries + j as u64) * cs;
            if virt >= h.size {
                break;
            }
            out.push(virt);
        }
    }
    out
}

/// The sample ranges (offset, length) for a disk: first and last
/// [`EDGE_SAMPLE_BYTES`], the start of every allocated cluster (at most
/// [`MAX_CLUSTER_SAMPLES`], evenly spread), [`RANDOM_SAMPLES`] ranges at
/// pseudo-random unaligned offsets of 1 to 8192 bytes (seeded by the size),
/// all clipped to the disk, sorted, duplicates removed.
pub fn sample_ranges(size: u64, cluster_size: u64, allocated: &[u64]) -> Vec<(u64, u64)> {
    let mut r = Vec::new();
    if size == 0 {
        return r;
    }
    let clip = |o: u64, l: u64| (o, l.min(size - o));
    r.push(clip(0, EDGE_SAMPLE_BYTES));
    let tail = size.saturating_sub(EDGE_SAMPLE_BYTES);
    r.push(clip(tail, EDGE_SAMPLE_BYTES));
    let n = allocated.len();
    let step = n.div_ceil(MAX_CLUSTER_SAMPLES).max(1);
    for &c in allocated.iter().step_by(step) {
        if c < size {
            r.push(clip(c, CLUSTER_SAMPLE_BYTES.min(cluster_size)));
        }
    }
    let mut rng = SplitMix(0x5143_4f57_3262_6d70 ^ size);
    for _ in 0..RANDOM_SAMPLES {
        let o = rng.next() % size;
        let l = 1 + rng.next() % 8192;
        r.push(clip(o, l));
    }
    r.retain(|(_, l)| *l > 0);
    r.sort_unstable();
    r.dedup();
    r
}

/// The byte the probe writes at virtual offset `o` (varies with the
/// offset, so that misplaced data shows).
pub fn pattern_byte(o: u64) -> u8 {
    (o as u8) ^ ((o >> 9) as u8).wrapping_mul(29) ^ 0xa5
}

fn pattern(offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len).map(pattern_byte).collect()
}

/// Where two buffers first differ, how many bytes differ, and a message.
fn describe_difference(offset: u64, got: &[u8], want: &[u8], who: &str) -> Option<String> {
    let first = got.iter().zip(want).position(|(a, b)| a != b)?;
    let count = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let end = (first + 8).min(got.len());
    Some(format!(
        "guest data at virtual offset {} ({:#x}) differs: {who} read {} where the model reads {} ({count} of the {} bytes of range {:#x}+{:#x} differ)",
        offset + first as u64,
        offset + first as u64,
        hex::encode(&got[first..end]),
        hex::encode(&want[first..end]),
        got.len(),
        offset,
        got.len()
    ))
}

/// The model's view of an image: header, sample ranges and their data
/// (`None` where the model cannot read, with why).
struct Expectation {
    size: Option<u64>,
    ranges: Vec<(u64, u64)>,
    data: Vec<Result<Vec<u8>, String>>,
    notes: Vec<String>,
}

fn expectation(image: &Path) -> Expectation {
    let mut e = Expectation {
        size: None,
        ranges: Vec::new(),
        data: Vec::new(),
        notes: Vec::new(),
    };
    let opened = File::open(image).map_err(|e| e.to_string()).and_then(|f| {
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        Model::open(f)
            .map(|m| (m, f2))
            .map_err(|e| format!("model: {e}"))
    });
    let (mut model, file) = match opened {
        Ok(x) => x,
        Err(err) => {
            e.notes.push(format!("no guest data compared: {err}"));
            return e;
        }
    };
    let Some(h) = model.analysis().header.clone() else {
        e.notes
            .push("no guest data compared: the model finds no qcow2 header".into());
        return e;
    };
    e.size = Some(h.size);
    let allocated = allocated_clusters(&file, &h);
    e.ranges = sample_ranges(h.size, h.cluster_size(), &allocated);
    for &(o, l) in &e.ranges {
        let mut buf = vec![0u8; l as usize];
        e.data.push(
            model
                .read_guest(o, &mut buf)
                .map(|()| buf)
                .map_err(|err| err.to_string()),
        );
    }
    e
}

// ---------------------------------------------------------------------
// The probe process.

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Runs `f`, turning a panic into `Err` with its message and location.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let recorded = PANIC_MESSAGE.lock().ok().and_then(|mut m| m.take());
        recorded.unwrap_or_else(|| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic with a non-string payload".into())
        })
    })
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_else(|| "non-string payload".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!("panicked{at}: {msg}");
        eprintln!("{line}");
        if let Ok(mut m) = PANIC_MESSAGE.lock() {
            *m = Some(line);
        }
    }));
}

/// What `qcow2-conform adapter-probe` does: probe `image` with `kind`,
/// reading (and, with `write`, writing) through the implementation.
pub fn probe(kind: ProbeKind, image: &Path, write: Option<(u64, u64)>) -> ProbeReport {
    install_panic_hook();
    let mut report = ProbeReport {
        implementation: kind.name().to_owned(),
        ..ProbeReport::default()
    };
    let expect = expectation(image);
    report.notes.extend(expect.notes.iter().cloned());
    match write {
        None => observe_guest(kind, image, &expect, &mut report),
        Some((offset, len)) => write_guest(kind, image, &expect, offset, len, &mut report),
    }
    report
}

fn open_guarded(
    kind: ProbeKind,
    image: &Path,
    writable: bool,
    report: &mut ProbeReport,
) -> Option<Box<dyn GuestDisk>> {
    match guarded(|| kind.open(image, writable)) {
        Err(p) => {
            report.panic = Some(p);
            None
        }
        Ok(Err(e)) => {
            report.error = Some(e);
            None
        }
        Ok(Ok(d)) => {
            report.opened = true;
            Some(d)
        }
    }
}

fn observe_guest(kind: ProbeKind, image: &Path, expect: &Expectation, report: &mut ProbeReport) {
    let Some(mut disk) = open_guarded(kind, image, false, report) else {
        return;
    };
    let mut g = GuestCheck {
        size_header: expect.size,
        ranges: expect.ranges.len(),
        ..GuestCheck::default()
    };
    match guarded(|| disk.size()) {
        Ok(s) => g.size_reported = Some(s),
        Err(p) => {
            report.panic = Some(p);
            report.guest = Some(g);
            return;
        }
    }
    for (&(o, l), want) in expect.ranges.iter().zip(&expect.data) {
        let want = match want {
            Ok(w) => w,
            Err(e) => {
                if g.not_compared.len() < MAX_DESCRIBED {
                    g.not_compared.push(format!("{o:#x}+{l:#x}: {e}"));
                }
                continue;
            }
        };
        let mut got = vec![0u8; l as usize];
        match guarded(|| disk.read(o, &mut got)) {
            Err(p) => {
                report.panic = Some(p);
                break;
            }
            Ok(Err(e)) => {
                g.read_error_count += 1;
                if g.read_errors.len() < MAX_DESCRIBED {
                    g.read_errors.push(format!(
                        "cannot read {l} bytes at virtual offset {o} ({o:#x}), which the model reads: {e}"
                    ));
                }
                if let Some(sig) = disk.helper_signal() {
                    report.signal = Some(sig);
                    break;
                }
            }
            Ok(Ok(())) => {
                g.ranges_compared += 1;
                g.bytes_compared += l;
                if let Some(d) = describe_difference(o, &got, want, kind.name()) {
                    g.mismatch_count += 1;
                    if g.mismatches.len() < MAX_DESCRIBED {
                        g.mismatches.push(d);
                    }
                }
            }
        }
    }
    report.signal = report.signal.or(disk.helper_signal());
    report.guest = Some(g);
    if report.panic.is_none() {
        match guarded(|| disk.close()) {
            Err(p) => report.panic = Some(p),
            Ok(Err(e)) => report.notes.push(format!("closing failed: {e}")),
            Ok(Ok(())) => {}
        }
    }
}

fn write_guest(
    kind: ProbeKind,
    image: &Path,
    expect: &Expectation,
    offset: u64,
    len: u64,
    report: &mut ProbeReport,
) {
    let mut w = WriteOutcome::default();
    let data = pattern(offset, len);
    if let Some(mut disk) = open_guarded(kind, image, true, report) {
        let step = match guarded(|| disk.write(offset, &data)) {
            Err(p) => Err(Some(p)),
            Ok(Err(e)) => {
                w.error = Some(format!("write: {e}"));
                Err(None)
            }
            Ok(Ok(())) => Ok(()),
        };
        match step {
            Err(Some(p)) => report.panic = Some(p),
            Err(None) => {
                // Refused: still close, so that whatever it did reaches the file.
                let _ = guarded(|| disk.close());
            }
            Ok(()) => match guarded(|| disk.close()) {
                Err(p) => report.panic = Some(p),
                Ok(Err(e)) => w.error = Some(format!("flush/close: {e}")),
                Ok(Ok(())) => w.ok = true,
            },
        }
    } else {
        w.error = report.error.clone();
    }
    if report.panic.is_none() && w.ok {
        w.problems = read_back(image, expect, offset, len, kind.name());
    }
    report.write = Some(w);
}

/// After a write of the pattern at `offset..offset+len`: the model must read
/// the pattern there, and unchanged data at every sample range outside it.
fn read_back(image: &Path, expect: &Expectation, offset: u64, len: u64, who: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut model = match File::open(image)
        .map_err(|e| e.to_string())
        .and_then(|f| Model::open(f).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            return vec![format!(
                "the model cannot open the image after the write: {e}"
            )]
        }
    };
    let mut got = vec![0u8; len as usize];
    match model.read_guest(offset, &mut got) {
        Err(e) => problems.push(format!("the model cannot read the written range back: {e}")),
        Ok(()) => {
            if let Some(d) = describe_difference(offset, &got, &pattern(offset, len), "the model") {
                problems.push(format!(
                    "the data {who} wrote did not land: {}",
                    d.replace("the model reads", "the pattern is")
                ));
            }
        }
    }
    let end = offset + len;
    for (&(o, l), before) in expect.ranges.iter().zip(&expect.data) {
        let Ok(before) = before else { continue };
        let mut now = vec![0u8; l as usize];
        if model.read_guest(o, &mut now).is_err() {
            problems.push(format!(
                "the model can no longer read {l} bytes at virtual offset {o} after the write"
            ));
            continue;
        }
        // Only the part outside the written range must be unchanged.
        let mut want = before.clone();
        for (i, b) in want.iter_mut().enumerate() {
            let v = o + i as u64;
            if v >= offset && v < end {
                *b = pattern_byte(v);
            }
        }
        if let Some(d) = describe_difference(o, &now, &want, "the model now") {
            problems.push(format!(
                "the write changed data outside {offset}..{end}: {}",
                d.replace("where the model reads", "where it read before")
            ));
            if problems.len() >= MAX_DESCRIBED {
                break;
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------
// The adapter (runner side).

/// A bitmaps-unaware implementation, driven through the probe process.
pub struct ProbeAdapter {
    kind: ProbeKind,
    exe: PathBuf,
}

/// The `qcow2-conform` binary that runs the probe: `QCOW2_CONFORM_BIN`, or
/// the running executable.
fn probe_exe() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("QCOW2_CONFORM_BIN") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().context("cannot find the qcow2-conform executable for the probe")
}

impl ProbeAdapter {
    /// The adapter for `kind`; fails when the implementation is not
    /// installed (libqcow's Python bindings).
    pub fn new(kind: ProbeKind) -> Result<ProbeAdapter> {
        if kind == ProbeKind::Libqcow {
            super::libqcow::ensure_installed()?;
        }
        let exe = probe_exe()?;
        if !exe.exists() {
            bail!("the probe executable {} does not exist", exe.display());
        }
        Ok(ProbeAdapter { kind, exe })
    }

    fn run(
        &self,
        image: &Path,
        write: Option<(u64, u64)>,
        limits: &Limits,
    ) -> Result<Proc, String> {
        let mut args: Vec<OsString> = vec![
            "adapter-probe".into(),
            "--impl".into(),
            self.kind.name().into(),
            "--image".into(),
            image.into(),
        ];
        if let Some((o, l)) = write {
            args.extend(["--write".into(), o.to_string().into(), l.to_string().into()]);
        }
        let cmd = process::command(self.exe.as_os_str(), &args, limits);
        let mut p = process::run(cmd, limits.timeout).map_err(|e| e.to_string())?;
        // Reproduction commands name the tool, not the build path.
        let exe = crate::runner::text::command_line(&std::process::Command::new(&self.exe));
        if let Some(rest) = p.command.strip_prefix(&exe) {
            p.command = format!("qcow2-conform{rest}");
        }
        Ok(p)
    }
}

/// The probe's JSON answer (the last non-empty line of stdout).
fn parse_report(p: &Proc) -> Result<ProbeReport, String> {
    let line = p
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        format!(
            "the probe printed no report ({e}; {}); stdout began {:?}",
            p.describe_end(),
            p.stdout.chars().take(200).collect::<String>()
        )
    })
}

impl Adapter for ProbeAdapter {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_guest_data: true,
            write_guest_data: self.kind.can_write(),
            ..Capabilities::default()
        }
    }

    fn observe(&self, image: &Path, limits: &Limits) -> Observation {
        let start = Instant::now();
        let mut obs = Observation {
            bitmaps_unaware: true,
            ..Observation::default()
        };
        let p = match self.run(image, None, limits) {
            Ok(p) => p,
            Err(e) => {
                obs.protocol_error = Some(e);
                return obs;
            }
        };
        obs.record(&p);
        obs.duration_ms = start.elapsed().as_millis() as u64;
        if p.timed_out || p.signal.is_some() {
            return obs;
        }
        match parse_report(&p) {
            Err(e) => obs.protocol_error = Some(e),
            Ok(r) => {
                obs.opened = r.opened;
                obs.error = r.error;
                if obs.signal.is_none() {
                    obs.signal = r.signal;
                }
                obs.guest = r.guest;
                obs.notes.extend(r.notes);
            }
        }
        obs
    }

    fn write(&self, image: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        let p = match self.run(image, Some((offset, len)), limits) {
            Ok(p) => p,
            Err(e) => {
                return WriteRun {
                    error: Some(e),
                    ..WriteRun::default()
                }
            }
        };
        let mut run = WriteRun {
            commands: vec![p.command.clone()],
            ..WriteRun::default()
        };
        if p.timed_out || p.signal.is_some() {
            run.error = Some(p.describe_end());
        } else {
            match parse_report(&p) {
                Err(e) => run.error = Some(e),
                Ok(r) => {
                    if let Some(w) = r.write {
                        run.ok = w.ok;
                        run.error = w.error;
                        run.problems.extend(w.problems);
                    }
                }
            }
        }
        run.process = Some(p);
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        assert!(sample_ranges(0, 65536, &[]).is_empty());
        let r = sample_ranges(1000, 65536, &[0]);
        assert!(r.iter().all(|(o, l)| o + l <= 1000 && *l > 0));
        assert!(r.contains(&(0, 1000)));
        let alloc: Vec<u64> = (0..5000).map(|i| i * 65536).collect();
        let r = sample_ranges(5000 * 65536, 65536, &alloc);
        assert!(r.len() <= 2 + MAX_CLUSTER_SAMPLES + RANDOM_SAMPLES);
        assert_eq!(r, sample_ranges(5000 * 65536, 65536, &alloc));
    }

    #[test]
    fn differences() {
        assert_eq!(describe_difference(0, b"abc", b"abc", "x"), None);
        let d = describe_difference(4096, b"abd", b"abc", "x").unwrap();
        assert!(d.contains("offset 4098 (0x1002)"), "{d}");
        assert!(d.contains("1 of the 3 bytes"), "{d}");
    }
}
