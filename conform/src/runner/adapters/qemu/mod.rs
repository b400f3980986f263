//! QEMU's own tools as an implementation under test.
//!
//! - opened, bitmap listing and flags: `qemu-img info --output=json`;
//! - integrity facts: `qemu-img check --output=json` (read-only);
//! - using a bitmap = exporting it: `qemu-nbd -r -B NAME`, whose dirty
//!   ranges the runner reads over NBD with its own client (the
//!   `qemu:dirty-bitmap:NAME` context, one connection per bitmap); should
//!   that fail, `qemu-img map` reads them through its `x-dirty-bitmap`
//!   option (a dirty area reads as `"data": false`), so that a refusal is
//!   in QEMU's words;
//! - writes: `qemu-io -c 'write -P 0xa5 OFFSET LEN'` (see `runner::judge::write_check`);
//! - with `--bitmap-ops`: `qemu-img bitmap`, `measure`, `convert --bitmaps` and
//!   `resize` on a copy, each result read by the model (see [`ops`]).
//!
//! Every invocation names the image's whole graph ([`pin`]: its file,
//! backing chain and data file), so QEMU opens no file the image names by
//! itself; an image naming a file the graph may not follow is not given
//! to QEMU at all ([`Observation::not_started`]).
//!
//! Beside the adapter: [`tools`] finds the programs and builds argument
//! lists, [`pin`] the graph, [`json`] holds the JSON they print, [`ops`]
//! the bitmap-operations sequence, [`measure`] its `qemu-img measure`
//! judgement.

pub mod decrypt;
pub mod json;
pub mod measure;
pub mod ops;
pub mod pin;
pub mod tools;

pub use tools::{Tool, Toolset};

/// The incompatible feature bits QEMU supports: every bit the spec
/// defines (dirty, corrupt, external data file, compression type,
/// extended L2; QEMU 7.2 and 10 open each), for the offline and the live
/// adapter alike.
pub const INCOMPATIBLE_SUPPORTED: u64 = 0x1f;

use crate::runner::adapter::{Adapter, Capabilities, Identity, WriteRun};
use crate::runner::adapters::qemu_live::nbd::NbdClient;
use crate::runner::checks::OpsCheck;
use crate::runner::observation::{IntegrityCheck, Observation, ObservedBitmap, ObservedFlags};
use crate::runner::process::{self, Background, Limits, Proc};
use crate::runner::ranges::{digest_of_ranges, merge_ranges};
use anyhow::Result;
use json::{CheckInfo, ImageInfo, MapExtent};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tools::{failure, os, qemu_io_write};

/// The QEMU adapter: one [`Toolset`] (`qemu-img`, `qemu-io`, `qemu-nbd`)
/// under a name (`qemu`, `qemu@7.2`, `qemu@DIR`).
pub struct QemuAdapter {
    name: String,
    tools: Toolset,
    /// Run the bitmap-operations check (`--bitmap-ops`).
    bitmap_ops: bool,
}

impl QemuAdapter {
    /// The machine's tools (`QEMU_IMG_PROG` etc. or `PATH`), named `qemu`;
    /// a missing one is an error.
    pub fn new() -> Result<QemuAdapter> {
        Ok(QemuAdapter::with_tools("qemu", Toolset::from_path()?))
    }

    /// The adapter for `qemu@WHERE`: `WHERE` is a directory (it holds a
    /// `/`: an installation prefix, [`Toolset::from_prefix`]) or a
    /// version that `scripts/setup.sh` unpacked or `scripts/build-qemu.sh`
    /// built into the cache
    /// ([`crate::runner::adapters::cache::qemu_prefix`]: `qemu@7.2`,
    /// `qemu@10.2`, `qemu@10.2-asan`).
    pub fn at(place: &str) -> Result<QemuAdapter> {
        let dir = if place.contains('/') {
            PathBuf::from(place)
        } else {
            crate::runner::adapters::cache::qemu_prefix(place)
        };
        let tools = Toolset::from_prefix(&dir).map_err(|e| {
            e.context(format!(
                "qemu@{place}: no QEMU at {} (scripts/setup.sh unpacks QEMU 7.2; \
                 scripts/build-qemu.sh VERSION [--asan|--coverage] builds one from Debian's source)",
                dir.display()
            ))
        })?;
        Ok(QemuAdapter::with_tools(format!("qemu@{place}"), tools))
    }

    /// An adapter named `name` over `tools`.
    pub fn with_tools(name: impl Into<String>, tools: Toolset) -> QemuAdapter {
        QemuAdapter {
            name: name.into(),
            tools,
            bitmap_ops: false,
        }
    }

    /// The tools this adapter runs.
    pub fn tools(&self) -> &Toolset {
        &self.tools
    }

    /// Also runs the bitmap-operations check on valid images
    /// ([`ops`]).
    pub fn with_bitmap_ops(mut self, on: bool) -> QemuAdapter {
        self.bitmap_ops = on;
        self
    }

    fn run(&self, program: &Path, args: &[OsString], limits: &Limits) -> std::io::Result<Proc> {
        self.run_in(program, args, limits, None)
    }

    /// [`Self::run`] in directory `dir` (else the case's).
    fn run_in(
        &self,
        program: &Path,
        args: &[OsString],
        limits: &Limits,
        dir: Option<&Path>,
    ) -> std::io::Result<Proc> {
        let pinned = tools::pinned(args).map_err(std::io::Error::other)?;
        let mut cmd = self.tools.command(program, &pinned.args, limits);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let mut p = process::run(cmd, limits.timeout)?;
        pinned.unpin(&mut p);
        Ok(p)
    }
}

/// One bitmap's dirty ranges as QEMU exported them, or why it did not.
type BitmapRead = Result<Vec<(u64, u64)>, BitmapReadError>;

/// Why QEMU did not hand out a bitmap's dirty ranges (the message goes to
/// [`ObservedBitmap::error`]).
#[derive(Debug, thiserror::Error)]
pub enum BitmapReadError {
    /// `qemu-img map` did not start.
    #[error("{0}")]
    Start(#[from] std::io::Error),
    /// A program failed: its first error line, or how it ended.
    #[error("{0}")]
    Failed(String),
    #[error("cannot parse qemu-img map's JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("qemu-nbd refused to export the bitmap")]
    Refused,
    #[error("not read (an earlier read failed)")]
    NotRead,
    /// A read failed and the server had ended too: how it ended.
    #[error("{read}; {server}")]
    ServerEnded {
        read: Box<BitmapReadError>,
        server: String,
    },
}

impl Adapter for QemuAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_metadata: true,
            read_bitmap_contents: true,
            read_guest_data: true,
            write_guest_data: true,
            bitmap_operations: true,
            incompatible_features_supported: Some(INCOMPATIBLE_SUPPORTED),
            uses_secret: true,
        }
    }

    fn identity(&self) -> Identity {
        self.tools.identity()
    }

    fn observe(&self, image: &Path, limits: &Limits) -> Observation {
        let start = Instant::now();
        let mut obs = Observation::default();
        self.observe_into(image, limits, &mut obs);
        obs.duration_ms = start.elapsed().as_millis() as u64;
        obs
    }

    fn checks_bitmap_ops(&self) -> bool {
        self.bitmap_ops
    }

    fn bitmap_ops(&self, image: &Path, work: &Path, limits: &Limits) -> Option<OpsCheck> {
        Some(ops::run_qemu(&self.tools, image, work, limits))
    }

    fn written_data(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let _ = offset;
        Some(vec![WRITE_PATTERN; usize::try_from(len).ok()?])
    }

    fn write(&self, image: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        let args = qemu_io_write(image, WRITE_PATTERN, offset, len);
        match self.run(&self.tools.io, &args, limits) {
            Err(e) => WriteRun {
                error: Some(e.to_string()),
                ..WriteRun::default()
            },
            Ok(p) => {
                // qemu-io may report a failed command with exit status 0.
                let error = failure(&p, &["failed", "error"]);
                WriteRun {
                    ok: error.is_none(),
                    error,
                    commands: vec![p.command.clone()],
                    process: Some(p),
                    ..WriteRun::default()
                }
            }
        }
    }
}

/// The byte the write check has `qemu-io` write.
const WRITE_PATTERN: u8 = 0xa5;

impl QemuAdapter {
    fn observe_into(&self, image: &Path, limits: &Limits, obs: &mut Observation) {
        // 0. the graph QEMU will be given: an image naming a file it may
        // not follow is not given to QEMU at all.
        if let Err(e) = pin::graph(image) {
            obs.not_started = Some(e.to_string());
            return;
        }
        // 1. info: does QEMU open the image, which bitmaps does it list?
        let info_args = [
            os("info"),
            os("-f"),
            os("qcow2"),
            os("--output=json"),
            os(image),
        ];
        let info = match self.run(&self.tools.img, &info_args, limits) {
            Err(e) => {
                obs.protocol_error = Some(e.to_string());
                return;
            }
            Ok(p) => {
                obs.record(&p);
                if p.success() {
                    match serde_json::from_str::<ImageInfo>(&p.stdout) {
                        Ok(i) => Some(i),
                        Err(e) => {
                            obs.protocol_error =
                                Some(format!("cannot parse qemu-img info's JSON: {e}"));
                            None
                        }
                    }
                } else {
                    obs.error = p.first_error_line().or_else(|| Some(p.describe_end()));
                    None
                }
            }
        };
        if obs.timed_out || obs.signal.is_some() {
            return;
        }
        // Warnings QEMU prints while opening (e.g. ignoring an inconsistent
        // extension) are worth keeping.
        if info.is_some() && !obs.stderr_excerpt.is_empty() {
            obs.notes.push(format!(
                "qemu-img info warned: {}",
                obs.stderr_excerpt.lines().next().unwrap_or_default()
            ));
        }

        // 2. check: QEMU's own integrity verdict (never repairs).
        let check_args = [
            os("check"),
            os("-f"),
            os("qcow2"),
            os("--output=json"),
            os(image),
        ];
        match self.run(&self.tools.img, &check_args, limits) {
            Err(e) => obs.notes.push(format!("qemu-img check did not start: {e}")),
            Ok(p) => {
                obs.record(&p);
                obs.integrity = Some(integrity(&p));
            }
        }
        if obs.timed_out || obs.signal.is_some() {
            return;
        }

        let Some(info) = info else { return };
        obs.opened = true;
        obs.virtual_size = Some(info.virtual_size);
        let qemu_img = |args: &[OsString]| self.run(&self.tools.img, args, limits);
        obs.guest = decrypt::guest_with_key(qemu_img, image, obs);
        obs.bitmaps = info
            .bitmaps()
            .iter()
            .map(|b| ObservedBitmap {
                name: b.name.clone(),
                granularity_bits: b.granularity_bits(),
                flags: ObservedFlags {
                    in_use: b.in_use(),
                    auto: b.auto(),
                },
                ..ObservedBitmap::default()
            })
            .collect();
        if obs.bitmaps.is_empty() {
            return;
        }

        // 3. use every listed bitmap: export it, read its dirty ranges.
        let names: Vec<String> = obs.bitmaps.iter().map(|b| b.name.clone()).collect();
        let work = image.parent().unwrap_or(Path::new("."));
        let all = self.export(image, work, &names, info.virtual_size, limits, obs);
        let results = match all {
            Some(r) => r,
            None => {
                // QEMU refused the export as a whole: find out which bitmaps
                // it refuses, one server each.
                let mut per = Vec::new();
                for name in &names {
                    if obs.timed_out || obs.signal.is_some() {
                        break;
                    }
                    let r = self.export(
                        image,
                        work,
                        std::slice::from_ref(name),
                        info.virtual_size,
                        limits,
                        obs,
                    );
                    per.push(
                        r.and_then(|mut v| v.pop())
                            .unwrap_or(Err(BitmapReadError::Refused)),
                    );
                }
                per
            }
        };
        for (b, r) in obs.bitmaps.iter_mut().zip(results) {
            match r {
                Ok(ranges) => {
                    b.usable = true;
                    if let Some(gb) = b.granularity_bits {
                        let (sha, bits) = digest_of_ranges(&ranges, info.virtual_size, gb);
                        b.content_sha256 = Some(sha);
                        b.set_bits = Some(bits);
                    }
                    b.dirty_ranges = Some(ranges);
                }
                Err(e) => {
                    b.usable = false;
                    b.error = Some(e.to_string());
                }
            }
        }
    }

    /// Exports `names` from one `qemu-nbd` and reads each one's dirty
    /// ranges. `None` when the server refused (the whole set); otherwise
    /// one result per name.
    fn export(
        &self,
        image: &Path,
        work: &Path,
        names: &[String],
        virtual_size: u64,
        limits: &Limits,
        obs: &mut Observation,
    ) -> Option<Vec<BitmapRead>> {
        let _ = virtual_size;
        let n = obs.commands.len();
        // The server and the clients run in `work` and name the socket
        // through their working directory (qemu-nbd wants an absolute
        // path); the runner reaches it through an open handle of `work`:
        // no path of it depends on how long TMPDIR is (a Unix socket's
        // path must fit in 108 bytes).
        let name = format!("nbd{n}.sock");
        let socket = format!("/proc/self/cwd/{name}");
        let log = work.join(format!("nbd{n}.log"));
        let handle = match std::fs::File::open(work) {
            Ok(h) => h,
            Err(e) => {
                obs.notes
                    .push(format!("cannot open {}: {e}", work.display()));
                return None;
            }
        };
        let reach = crate::runner::process::temp_dirs::short_path(&handle, &name);
        let mut args = vec![os("-r"), os("-t"), os("-k"), os(&socket)];
        for name in names {
            args.push(os("-B"));
            args.push(os(name));
        }
        args.extend([os("-f"), os("qcow2"), os(image)]);
        let pinned = match tools::pinned(&args) {
            Ok(p) => p,
            Err(e) => {
                obs.notes.push(format!("qemu-nbd not started: {e}"));
                return None;
            }
        };
        let mut cmd = self.tools.command(&self.tools.nbd, &pinned.args, limits);
        cmd.current_dir(work);
        let mut server = match Background::spawn(cmd, &log) {
            Ok(s) => s,
            Err(e) => {
                obs.notes.push(format!("qemu-nbd did not start: {e}"));
                return None;
            }
        };
        obs.commands.push(format!("{} &", server.command));
        // Wait until it listens, exits, or runs out of time.
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        let listening = loop {
            if server.try_wait().is_some() {
                break false;
            }
            if std::os::unix::net::UnixStream::connect(&reach).is_ok() {
                break true;
            }
            if start.elapsed() > limits.timeout {
                break false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        };
        if !listening {
            let mut p = server.stop(true);
            pinned.unpin(&mut p);
            obs.absorb(&p);
            obs.commands.push("wait $!".into());
            let why = p
                .first_error_line()
                .unwrap_or_else(|| format!("qemu-nbd ended: {}", p.describe_end()));
            if names.len() == 1 {
                return Some(vec![Err(BitmapReadError::Failed(why))]);
            }
            return None;
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let esc = |v: &str| v.replace(',', ",,");
            let opts = format!(
                "driver=nbd,server.type=unix,server.path={},x-dirty-bitmap=qemu:dirty-bitmap:{}",
                esc(&socket),
                esc(name)
            );
            let map_args = [os("map"), os("--output=json"), os("--image-opts"), os(opts)];
            if let Some(ranges) = read_over_nbd(&reach, name, limits) {
                let map = process::shown_command_line(
                    self.tools.img.as_os_str(),
                    &map_args,
                    limits,
                    work,
                );
                obs.commands.push(format!(
                    "{map}  # read by the runner's own NBD client: the same dirty ranges"
                ));
                out.push(Ok(ranges));
                continue;
            }
            let p = match self.run_in(&self.tools.img, &map_args, limits, Some(work)) {
                Ok(p) => p,
                Err(e) => {
                    out.push(Err(e.into()));
                    continue;
                }
            };
            obs.record(&p);
            if p.timed_out || p.signal.is_some() {
                out.push(Err(BitmapReadError::Failed(p.describe_end())));
                break;
            }
            if !p.success() {
                out.push(Err(BitmapReadError::Failed(
                    p.first_error_line().unwrap_or_else(|| p.describe_end()),
                )));
                continue;
            }
            match serde_json::from_str::<Vec<MapExtent>>(&p.stdout) {
                Ok(extents) => out.push(Ok(merge_ranges(
                    extents
                        .into_iter()
                        .filter(|e| !e.data)
                        .map(|e| (e.start, e.start + e.length))
                        .collect(),
                ))),
                Err(e) => out.push(Err(BitmapReadError::Json(e))),
            }
        }
        // The server must still be alive: if it died, its end (a signal?)
        // belongs to the observation.
        let alive = server.try_wait().is_none();
        let mut p = server.stop(false);
        pinned.unpin(&mut p);
        obs.commands.push("kill $!".into());
        if !alive {
            obs.absorb(&p);
            if names.len() > 1 && out.iter().any(|r| r.is_err()) {
                return None;
            }
            let why = p
                .first_error_line()
                .unwrap_or_else(|| format!("qemu-nbd ended: {}", p.describe_end()));
            for r in &mut out {
                if let Err(e) = r {
                    let read = std::mem::replace(e, BitmapReadError::NotRead);
                    *e = BitmapReadError::ServerEnded {
                        read: Box::new(read),
                        server: why.clone(),
                    };
                }
            }
        }
        while out.len() < names.len() {
            out.push(Err(BitmapReadError::NotRead));
        }
        Some(out)
    }
}

/// The most dirty ranges of one bitmap the runner's NBD client collects
/// before it leaves the bitmap to `qemu-img map`: fewer than that
/// program's JSON (two extents a range, 116-134 bytes each) can print
/// within the runner's output cap ([`process::STDOUT_CAP`], 16 MiB, about
/// 62,000 ranges), so that past it the bitmap meets the cap as it always
/// did.
const NBD_MOST_RANGES: usize = 50_000;

/// The dirty ranges of bitmap `name` as the `qemu-nbd` listening at
/// `socket` exports them (the `qemu:dirty-bitmap:NAME` context, an
/// extent with flag bit 0 dirty), read with the runner's own NBD client
/// ([`NbdClient`]): one connection instead of one `qemu-img map` process
/// per bitmap, which made an image with 1000 bitmaps take 1000 process
/// starts. `qemu-img map` with `x-dirty-bitmap` reads the same context
/// and reports its dirty extents as `"data": false`, so both give the
/// same ranges. `None` on any failure, past the time limit or past
/// [`NBD_MOST_RANGES`]: the caller then asks `qemu-img map`, so that what
/// QEMU says about a bitmap it will not hand out is QEMU's own message,
/// and a bitmap too fragmented for a report meets the same output cap
/// and time limit as before.
fn read_over_nbd(socket: &Path, name: &str, limits: &Limits) -> Option<Vec<(u64, u64)>> {
    let context = format!("qemu:dirty-bitmap:{name}");
    let deadline = Instant::now() + limits.timeout;
    let mut client = NbdClient::connect(socket, "", Some(&context), limits.timeout).ok()?;
    let ranges = client
        .dirty_extents_within(Some(deadline), NBD_MOST_RANGES)
        .ok()?;
    client.disconnect();
    Some(ranges)
}

/// `qemu-img check`'s facts from its run.
fn integrity(p: &Proc) -> IntegrityCheck {
    match p.status {
        Some(0 | 2 | 3) => match serde_json::from_str::<CheckInfo>(&p.stdout) {
            Ok(c) => IntegrityCheck {
                ran: true,
                corruptions: c.corruptions,
                leaks: c.leaks,
                check_errors: c.check_errors,
                error: None,
            },
            Err(e) => IntegrityCheck {
                error: Some(format!("cannot parse qemu-img check's JSON: {e}")),
                ..IntegrityCheck::default()
            },
        },
        _ => IntegrityCheck {
            error: p.first_error_line().or_else(|| Some(p.describe_end())),
            ..IntegrityCheck::default()
        },
    }
}
