//! Thin wrappers around QEMU's real command-line tools (`qemu-img`,
//! `qemu-io`, `qemu-nbd`) for this crate's integration tests, running
//! them on the runner's own process runner (`conform::runner::process`).
//!
//! Every wrapper runs the actual program with a time limit and captures its
//! output. A missing tool is an error that names the tool and how to point
//! at it (an environment variable such as `QEMU_IMG_PROG`), never a silent
//! skip. A failed command's error carries the full command line and the
//! program's standard error. The JSON types and tool discovery are the
//! adapter's (`conform::runner::adapters::qemu`).

#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use conform::runner::process::{self, Background, Limits};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

pub use conform::runner::adapters::qemu::json::{CheckInfo, ImageInfo, MapExtent};
pub use conform::runner::adapters::qemu::Tool;
pub use conform::runner::ranges::merge_ranges;

/// The time limit for one tool invocation unless a caller chooses another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `qemu-nbd` may take to start listening.
const NBD_START_TIMEOUT: Duration = Duration::from_secs(20);

/// A command for `tool args..` in its own process group, as the runner
/// builds them (no memory limit).
fn tool_command<I, S>(tool: Tool, args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = tool.locate()?;
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let limits = Limits {
        timeout: DEFAULT_TIMEOUT,
        memory_bytes: None,
    };
    Ok(process::command(program.as_os_str(), &args, &limits))
}

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, quoted for a shell (for messages).
    pub command_line: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// Fails, naming the command, its status and its stderr, unless the
    /// exit status is one of `codes`.
    pub fn expect_codes(self, codes: &[i32]) -> Result<Output> {
        match self.status.code() {
            Some(c) if codes.contains(&c) => Ok(self),
            _ => Err(anyhow!("{}", self.failure_message())),
        }
    }

    /// Fails unless the command exited with status 0.
    pub fn expect_success(self) -> Result<Output> {
        self.expect_codes(&[0])
    }

    /// A description of how the command ended, for error messages.
    pub fn failure_message(&self) -> String {
        format!(
            "command failed ({}): {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            describe_status(self.status),
            self.command_line,
            self.stderr.trim_end(),
            self.stdout.trim_end()
        )
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// The exit status a finished run reports (exit code or signal).
fn exit_status(p: &process::Proc) -> Result<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    match (p.status, p.signal) {
        (Some(c), _) => Ok(ExitStatus::from_raw((c & 0xff) << 8)),
        (None, Some(s)) => Ok(ExitStatus::from_raw(s & 0x7f)),
        (None, None) => bail!("{} ended without an exit status", p.command),
    }
}

/// Runs `cmd` to completion (stdin closed), capturing stdout and stderr;
/// kills it and fails if it runs longer than `timeout`. Returns the output
/// whatever the exit status: see [`Output::expect_success`].
pub fn run_unchecked(cmd: Command, timeout: Duration) -> Result<Output> {
    let p = process::run(cmd, timeout)?;
    if p.timed_out {
        bail!(
            "command timed out after {:?}: {}\n--- stderr ---\n{}",
            timeout,
            p.command,
            p.stderr.trim_end()
        );
    }
    Ok(Output {
        status: exit_status(&p)?,
        elapsed: Duration::from_millis(p.duration_ms),
        command_line: p.command,
        stdout: p.stdout,
        stderr: p.stderr,
    })
}

/// Runs `cmd` and fails unless it exits with status 0.
pub fn run(cmd: Command, timeout: Duration) -> Result<Output> {
    run_unchecked(cmd, timeout)?.expect_success()
}

/// Runs `tool` with `args` under [`DEFAULT_TIMEOUT`]; fails unless it exits
/// with status 0.
pub fn run_tool<I, S>(tool: Tool, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(tool_command(tool, args)?, DEFAULT_TIMEOUT)
}

/// Runs `tool` with `args` under [`DEFAULT_TIMEOUT`], whatever its exit
/// status.
pub fn run_tool_unchecked<I, S>(tool: Tool, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_unchecked(tool_command(tool, args)?, DEFAULT_TIMEOUT)
}

// ---------------------------------------------------------------------------
// qemu-img create / convert / snapshot / amend

/// Options of `qemu-img create -f qcow2`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// `cluster_size` in bytes.
    pub cluster_size: Option<u64>,
    /// `compat`: "0.10" (version 2) or "1.1" (version 3).
    pub compat: Option<String>,
    /// `extended_l2`.
    pub extended_l2: Option<bool>,
    /// Further `key=value` options, passed as they are.
    pub extra: Vec<String>,
}

impl CreateOpts {
    pub fn cluster_size(cluster_size: u64) -> CreateOpts {
        CreateOpts {
            cluster_size: Some(cluster_size),
            ..CreateOpts::default()
        }
    }

    /// The comma-separated `-o` value, or `None` when there is nothing to set.
    pub fn to_option_string(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(cs) = self.cluster_size {
            parts.push(format!("cluster_size={cs}"));
        }
        if let Some(c) = &self.compat {
            parts.push(format!("compat={c}"));
        }
        if let Some(e) = self.extended_l2 {
            parts.push(format!("extended_l2={}", if e { "on" } else { "off" }));
        }
        parts.extend(self.extra.iter().cloned());
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// `qemu-img create -f qcow2 [-o OPTS] PATH SIZE` (size in bytes).
pub fn create(path: &Path, size: u64, opts: &CreateOpts) -> Result<()> {
    let mut args: Vec<OsString> = vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into()];
    if let Some(o) = opts.to_option_string() {
        args.push("-o".into());
        args.push(o.into());
    }
    args.push(path.into());
    args.push(size.to_string().into());
    run_tool(Tool::Img, args).map(drop)
}

/// Options of `qemu-img convert -O qcow2`.
#[derive(Debug, Clone, Default)]
pub struct ConvertOpts {
    /// Source format (`-f`); probed when `None`.
    pub source_format: Option<String>,
    /// `-c`: compress the output.
    pub compress: bool,
    /// `--bitmaps`: copy the persistent bitmaps.
    pub bitmaps: bool,
    /// `-o` creation options of the output.
    pub create: CreateOpts,
}

/// `qemu-img convert [-f FMT] -O qcow2 [-c] [--bitmaps] [-o ..] SRC DST`.
pub fn convert(src: &Path, dst: &Path, opts: &ConvertOpts) -> Result<()> {
    let mut args: Vec<OsString> = vec!["convert".into()];
    if let Some(f) = &opts.source_format {
        args.push("-f".into());
        args.push(f.into());
    }
    args.push("-O".into());
    args.push("qcow2".into());
    if opts.compress {
        args.push("-c".into());
    }
    if opts.bitmaps {
        args.push("--bitmaps".into());
    }
    if let Some(o) = opts.create.to_option_string() {
        args.push("-o".into());
        args.push(o.into());
    }
    args.push(src.into());
    args.push(dst.into());
    run_tool(Tool::Img, args).map(drop)
}

/// `qemu-img convert -f qcow2 -O qcow2 --bitmaps SRC DST`.
pub fn convert_with_bitmaps(src: &Path, dst: &Path) -> Result<()> {
    convert(
        src,
        dst,
        &ConvertOpts {
            source_format: Some("qcow2".into()),
            bitmaps: true,
            ..ConvertOpts::default()
        },
    )
}

/// The arguments `VERB -f qcow2 EXTRA.. PATH` of a `qemu-img` command on
/// one qcow2 image.
fn img_args<'a>(verb: &'a str, extra: &'a [&'a str], path: &'a Path) -> Vec<&'a OsStr> {
    let mut args: Vec<&OsStr> = vec![verb.as_ref(), "-f".as_ref(), "qcow2".as_ref()];
    args.extend(extra.iter().map(OsStr::new));
    args.push(path.as_os_str());
    args
}

/// The JSON a finished command printed, as `T`.
fn parse_json<T: serde::de::DeserializeOwned>(out: &Output) -> Result<T> {
    serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "cannot parse the JSON of: {}\n{}",
            out.command_line, out.stdout
        )
    })
}

/// `qemu-img snapshot -f qcow2 -c NAME PATH` (an internal snapshot).
pub fn snapshot_create(path: &Path, name: &str) -> Result<()> {
    run_tool(Tool::Img, img_args("snapshot", &["-c", name], path)).map(drop)
}

/// `qemu-img amend -f qcow2 -o OPTIONS PATH`, whatever its exit status.
pub fn amend_unchecked(path: &Path, options: &str) -> Result<Output> {
    run_tool_unchecked(Tool::Img, img_args("amend", &["-o", options], path))
}

// ---------------------------------------------------------------------------
// qemu-img info / check

/// `qemu-img info -f qcow2 --output=json PATH`.
pub fn info_json(path: &Path) -> Result<ImageInfo> {
    let out = run_tool(Tool::Img, img_args("info", &["--output=json"], path))?;
    parse_json(&out)
}

/// `qemu-img check -f qcow2 --output=json PATH` (read-only: no repair).
/// Exit statuses 0 (clean), 2 (corruptions) and 3 (leaks) all yield a
/// result; anything else is an error.
pub fn check_json(path: &Path) -> Result<CheckInfo> {
    let out = run_tool_unchecked(Tool::Img, img_args("check", &["--output=json"], path))?
        .expect_codes(&[0, 2, 3])?;
    let mut info: CheckInfo = parse_json(&out)?;
    info.exit_code = out.status.code().unwrap_or(-1);
    Ok(info)
}

// ---------------------------------------------------------------------------
// qemu-img bitmap

/// One `qemu-img bitmap` operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitmapOp {
    /// `--add [-g GRANULARITY] [--disable]`.
    Add {
        granularity: Option<u64>,
        disabled: bool,
    },
    /// `--remove`.
    Remove,
    /// `--clear`.
    Clear,
    /// `--enable`.
    Enable,
    /// `--disable`.
    Disable,
    /// `--merge SOURCE_BITMAP [-b SOURCE_IMAGE -F qcow2]`: ORs the source
    /// bitmap (of this image, or of `source_image`) into the target.
    Merge {
        source: String,
        source_image: Option<PathBuf>,
    },
}

impl BitmapOp {
    /// An enabled bitmap of the given granularity (QEMU's default if `None`).
    pub fn add(granularity: Option<u64>) -> BitmapOp {
        BitmapOp::Add {
            granularity,
            disabled: false,
        }
    }

    /// Merges the bitmap `source` of the same image.
    pub fn merge(source: &str) -> BitmapOp {
        BitmapOp::Merge {
            source: source.into(),
            source_image: None,
        }
    }

    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        match self {
            BitmapOp::Add {
                granularity,
                disabled,
            } => {
                a.push("--add".into());
                if let Some(g) = granularity {
                    a.push("-g".into());
                    a.push(g.to_string().into());
                }
                if *disabled {
                    a.push("--disable".into());
                }
            }
            BitmapOp::Remove => a.push("--remove".into()),
            BitmapOp::Clear => a.push("--clear".into()),
            BitmapOp::Enable => a.push("--enable".into()),
            BitmapOp::Disable => a.push("--disable".into()),
            BitmapOp::Merge {
                source,
                source_image,
            } => {
                a.push("--merge".into());
                a.push(source.into());
                if let Some(img) = source_image {
                    a.push("-b".into());
                    a.push(img.into());
                    a.push("-F".into());
                    a.push("qcow2".into());
                }
            }
        }
        a
    }
}

/// `qemu-img bitmap -f qcow2 OP.. PATH NAME`, whatever its exit status.
pub fn bitmap_unchecked(path: &Path, name: &str, op: &BitmapOp) -> Result<Output> {
    let mut args: Vec<OsString> = vec!["bitmap".into(), "-f".into(), "qcow2".into()];
    args.extend(op.args());
    args.push(path.into());
    args.push(name.into());
    run_tool_unchecked(Tool::Img, args)
}

/// `qemu-img bitmap -f qcow2 OP.. PATH NAME`; fails unless it succeeds.
pub fn bitmap(path: &Path, name: &str, op: &BitmapOp) -> Result<()> {
    bitmap_unchecked(path, name, op)?.expect_success().map(drop)
}

// ---------------------------------------------------------------------------
// qemu-io

/// `qemu-io -f qcow2 -c CMD.. PATH`, whatever its exit status.
pub fn qemu_io_unchecked<S: AsRef<str>>(path: &Path, cmds: &[S]) -> Result<Output> {
    let mut args: Vec<OsString> = vec!["-f".into(), "qcow2".into()];
    for c in cmds {
        args.push("-c".into());
        args.push(c.as_ref().into());
    }
    args.push(path.into());
    run_tool_unchecked(Tool::Io, args)
}

/// `qemu-io -f qcow2 -c CMD.. PATH` (e.g. `write -P 0xab 1000 5000`);
/// fails on a non-zero exit or when a command reports failure.
pub fn qemu_io<S: AsRef<str>>(path: &Path, cmds: &[S]) -> Result<Output> {
    let out = qemu_io_unchecked(path, cmds)?.expect_success()?;
    // Guard against a command error that did not reach the exit status.
    if out.stdout.lines().any(|l| l.contains(" failed: ")) {
        bail!("{}", out.failure_message());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// qemu-nbd: a bitmap's dirty ranges as QEMU itself reports them

/// A running `qemu-nbd` serving one image read-only on a Unix socket. Drop
/// kills the server (its process group) and removes its directory.
pub struct NbdServer {
    // Dropped first: the server ends before its directory goes.
    server: Background,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl NbdServer {
    /// `qemu-nbd -r -t -k SOCK [-B BITMAP] -f qcow2 IMAGE`; returns once the
    /// socket accepts connections.
    pub fn start(image: &Path, bitmap: Option<&str>) -> Result<NbdServer> {
        let dir = tempfile::Builder::new()
            .prefix("qcow2-conform-nbd")
            .tempdir()
            .context("cannot create a directory for the NBD socket")?;
        let socket = dir.path().join("nbd.sock");
        let log = dir.path().join("qemu-nbd.log");
        let mut args: Vec<&OsStr> = vec!["-r".as_ref(), "-t".as_ref(), "-k".as_ref()];
        args.push(socket.as_os_str());
        if let Some(b) = bitmap {
            args.push("-B".as_ref());
            args.push(b.as_ref());
        }
        args.extend(["-f".as_ref(), "qcow2".as_ref(), image.as_os_str()]);
        let cmd = tool_command(Tool::Nbd, args)?;
        let server = Background::spawn(cmd, &log).context("cannot start qemu-nbd")?;
        let mut server = NbdServer {
            server,
            dir,
            socket,
        };
        server.wait_until_listening()?;
        Ok(server)
    }

    fn log(&self) -> String {
        self.server.log()
    }

    fn wait_until_listening(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.server.try_wait() {
                bail!(
                    "qemu-nbd exited before listening ({}): {}\n--- output ---\n{}",
                    describe_status(status),
                    self.server.command,
                    self.log().trim_end()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if start.elapsed() > NBD_START_TIMEOUT {
                bail!(
                    "qemu-nbd did not listen within {:?}: {}\n--- output ---\n{}",
                    NBD_START_TIMEOUT,
                    self.server.command,
                    self.log().trim_end()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Adds the server's own output to a client's error, saying whether
    /// the server has exited.
    pub fn explain(&mut self, client_error: anyhow::Error) -> anyhow::Error {
        thread::sleep(Duration::from_millis(20));
        let state = match self.server.try_wait() {
            Some(status) => format!("qemu-nbd exited ({})", describe_status(status)),
            None => "qemu-nbd is still running".to_string(),
        };
        client_error.context(format!(
            "{state}: {}\n--- qemu-nbd output ---\n{}",
            self.server.command,
            self.log().trim_end()
        ))
    }

    /// The Unix socket the server listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `--image-opts` string of a client of this server; with
    /// `dirty_bitmap`, block status reports that bitmap (see
    /// [`nbd_dirty_ranges`]).
    pub fn image_opts(&self, dirty_bitmap: Option<&str>) -> String {
        // QEMU's option syntax escapes a comma inside a value by doubling it.
        let esc = |v: &str| v.replace(',', ",,");
        let mut s = format!(
            "driver=nbd,server.type=unix,server.path={}",
            esc(&self.socket.to_string_lossy())
        );
        if let Some(b) = dirty_bitmap {
            s.push_str(",x-dirty-bitmap=qemu:dirty-bitmap:");
            s.push_str(&esc(b));
        }
        s
    }
}

/// `qemu-img map --output=json --image-opts OPTS`.
pub fn map_image_opts(opts: &str) -> Result<Vec<MapExtent>> {
    let out = run_tool(Tool::Img, ["map", "--output=json", "--image-opts", opts])?;
    parse_json(&out)
}

/// The virtual byte ranges (half-open, merged) that QEMU says the
/// persistent bitmap `bitmap` of the qcow2 image at `image` marks dirty.
///
/// QEMU exports the bitmap over NBD (`qemu-nbd -B`) as the metadata
/// context `qemu:dirty-bitmap:NAME`, and `qemu-img map` reads it through the
/// NBD client's experimental `x-dirty-bitmap` option (QAPI `block-core`),
/// which reports that context in place of allocation status: a dirty area
/// comes out as `"data": false`, a clean one as `"data": true`.
pub fn nbd_dirty_ranges(image: &Path, bitmap: &str) -> Result<Vec<(u64, u64)>> {
    let mut server = NbdServer::start(image, Some(bitmap))?;
    let extents = match map_image_opts(&server.image_opts(Some(bitmap))) {
        Ok(e) => e,
        // qemu-nbd may listen before it has checked the export (a missing
        // or unusable bitmap), then exit: report its own error first.
        Err(e) => return Err(server.explain(e)),
    };
    drop(server);
    Ok(merge_ranges(
        extents
            .into_iter()
            .filter(|e| !e.data)
            .map(|e| (e.start, e.start + e.length))
            .collect(),
    ))
}

#[test]
fn option_strings() {
    let o = CreateOpts {
        cluster_size: Some(512),
        compat: Some("0.10".into()),
        extended_l2: Some(true),
        extra: vec!["lazy_refcounts=on".into()],
    };
    assert_eq!(
        o.to_option_string().unwrap(),
        "cluster_size=512,compat=0.10,extended_l2=on,lazy_refcounts=on"
    );
    assert_eq!(CreateOpts::default().to_option_string(), None);
}
