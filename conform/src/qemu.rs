//! Thin wrappers around QEMU's real command-line tools (`qemu-img`,
//! `qemu-io`, `qemu-nbd`), for integration tests and the conformance
//! runner.
//!
//! Every wrapper runs the actual program with a time limit and captures its
//! output. A missing tool is an error that names the tool and how to point
//! at it (an environment variable such as `QEMU_IMG_PROG`), never a silent
//! skip. A failed command's error carries the full command line and the
//! program's standard error.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The time limit for one tool invocation unless a caller chooses another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `qemu-nbd` may take to start listening.
const NBD_START_TIMEOUT: Duration = Duration::from_secs(20);

/// One of QEMU's command-line tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Img,
    Io,
    Nbd,
}

impl Tool {
    /// The program's file name.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Img => "qemu-img",
            Tool::Io => "qemu-io",
            Tool::Nbd => "qemu-nbd",
        }
    }

    /// The environment variable that overrides where the tool is (the
    /// names QEMU's own iotests use).
    pub fn env_var(self) -> &'static str {
        match self {
            Tool::Img => "QEMU_IMG_PROG",
            Tool::Io => "QEMU_IO_PROG",
            Tool::Nbd => "QEMU_NBD_PROG",
        }
    }

    /// Finds the tool: the environment override if set, else the first
    /// executable of that name on `PATH`.
    pub fn locate(self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(self.env_var()).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            if is_executable(&p) {
                return Ok(p);
            }
            bail!(
                "{} is set to {}, which is not an executable file",
                self.env_var(),
                p.display()
            );
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(self.program());
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        bail!(
            "QEMU tool `{}` not found on PATH ({}); install QEMU's tools \
             (e.g. the Debian package qemu-utils) or set {} to its path",
            self.program(),
            path.to_string_lossy(),
            self.env_var()
        )
    }

    /// A command for the tool, located as by [`Tool::locate`].
    pub fn command(self) -> Result<Command> {
        Ok(Command::new(self.locate()?))
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
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

/// Quotes a command line for display (and for pasting into a shell).
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:+@%".contains(&b));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion (stdin closed), capturing stdout and stderr;
/// kills it and fails if it runs longer than `timeout`. Returns the output
/// whatever the exit status: see [`Output::expect_success`].
pub fn run_unchecked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = command_line(cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start: {line}"))?;
    let out_reader = drain(child.stdout.take());
    let err_reader = drain(child.stderr.take());
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot wait for: {line}"))?
        {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            bail!(
                "command timed out after {:?}: {line}\n--- stderr ---\n{}",
                timeout,
                stderr.trim_end()
            );
        }
        thread::sleep(Duration::from_millis(2));
    };
    Ok(Output {
        command_line: line,
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` and fails unless it exits with status 0.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    run_unchecked(cmd, timeout)?.expect_success()
}

/// Runs `tool` with `args` under [`DEFAULT_TIMEOUT`]; fails unless it exits
/// with status 0.
pub fn run_tool<I, S>(tool: Tool, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tool.command()?;
    cmd.args(args);
    run(&mut cmd, DEFAULT_TIMEOUT)
}

/// Runs `tool` with `args` under [`DEFAULT_TIMEOUT`], whatever its exit
/// status.
pub fn run_tool_unchecked<I, S>(tool: Tool, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tool.command()?;
    cmd.args(args);
    run_unchecked(&mut cmd, DEFAULT_TIMEOUT)
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

/// `qemu-img snapshot -f qcow2 -c NAME PATH` (an internal snapshot).
pub fn snapshot_create(path: &Path, name: &str) -> Result<()> {
    run_tool(
        Tool::Img,
        [
            OsStr::new("snapshot"),
            OsStr::new("-f"),
            OsStr::new("qcow2"),
            OsStr::new("-c"),
            OsStr::new(name),
            path.as_os_str(),
        ],
    )
    .map(drop)
}

/// `qemu-img amend -f qcow2 -o OPTIONS PATH`, whatever its exit status.
pub fn amend_unchecked(path: &Path, options: &str) -> Result<Output> {
    run_tool_unchecked(
        Tool::Img,
        [
            OsStr::new("amend"),
            OsStr::new("-f"),
            OsStr::new("qcow2"),
            OsStr::new("-o"),
            OsStr::new(options),
            path.as_os_str(),
        ],
    )
}

// ---------------------------------------------------------------------------
// qemu-img info / check

/// What `qemu-img info --output=json` says about an image (the fields this
/// project uses).
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    pub format: String,
    #[serde(rename = "cluster-size")]
    pub cluster_size: Option<u64>,
    #[serde(rename = "dirty-flag", default)]
    pub dirty_flag: bool,
    #[serde(rename = "format-specific")]
    pub format_specific: Option<FormatSpecific>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
}

impl ImageInfo {
    /// The persistent bitmaps, in the order QEMU lists them (empty when
    /// there are none).
    pub fn bitmaps(&self) -> &[BitmapInfo] {
        self.format_specific
            .as_ref()
            .and_then(|f| f.data.bitmaps.as_deref())
            .unwrap_or(&[])
    }

    /// The qcow2 `compat` level ("0.10" or "1.1").
    pub fn compat(&self) -> Option<&str> {
        self.format_specific.as_ref()?.data.compat.as_deref()
    }
}

/// `format-specific` of `qemu-img info`.
#[derive(Debug, Clone, Deserialize)]
pub struct FormatSpecific {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Qcow2Specific,
}

/// `format-specific.data` for qcow2.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Qcow2Specific {
    pub compat: Option<String>,
    pub bitmaps: Option<Vec<BitmapInfo>>,
    pub corrupt: Option<bool>,
    #[serde(rename = "extended-l2")]
    pub extended_l2: Option<bool>,
    #[serde(rename = "refcount-bits")]
    pub refcount_bits: Option<u32>,
    #[serde(rename = "compression-type")]
    pub compression_type: Option<String>,
}

/// One persistent bitmap as `qemu-img info` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BitmapInfo {
    pub name: String,
    /// Bytes per bit.
    pub granularity: u64,
    /// "in-use", "auto" (QEMU's names for the on-disk flags).
    pub flags: Vec<String>,
}

impl BitmapInfo {
    pub fn in_use(&self) -> bool {
        self.flags.iter().any(|f| f == "in-use")
    }

    /// Enabled: records writes.
    pub fn auto(&self) -> bool {
        self.flags.iter().any(|f| f == "auto")
    }

    /// log2 of the granularity, if it is a power of two.
    pub fn granularity_bits(&self) -> Option<u8> {
        self.granularity
            .is_power_of_two()
            .then(|| self.granularity.trailing_zeros() as u8)
    }
}

/// One internal snapshot as `qemu-img info` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    #[serde(rename = "vm-state-size", default)]
    pub vm_state_size: u64,
}

/// `qemu-img info -f qcow2 --output=json PATH`.
pub fn info_json(path: &Path) -> Result<ImageInfo> {
    let out = run_tool(
        Tool::Img,
        [
            OsStr::new("info"),
            OsStr::new("-f"),
            OsStr::new("qcow2"),
            OsStr::new("--output=json"),
            path.as_os_str(),
        ],
    )?;
    serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "cannot parse the JSON of: {}\n{}",
            out.command_line, out.stdout
        )
    })
}

/// What `qemu-img check --output=json` says.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckInfo {
    #[serde(rename = "check-errors", default)]
    pub check_errors: u64,
    #[serde(default)]
    pub corruptions: u64,
    #[serde(default)]
    pub leaks: u64,
    #[serde(rename = "corruptions-fixed", default)]
    pub corruptions_fixed: u64,
    #[serde(rename = "leaks-fixed", default)]
    pub leaks_fixed: u64,
    #[serde(rename = "image-end-offset")]
    pub image_end_offset: Option<u64>,
    #[serde(rename = "total-clusters")]
    pub total_clusters: Option<u64>,
    #[serde(rename = "allocated-clusters")]
    pub allocated_clusters: Option<u64>,
    /// qemu-img check's exit status: 0 clean, 2 corruptions, 3 leaks only.
    #[serde(skip)]
    pub exit_code: i32,
}

impl CheckInfo {
    /// No errors, corruptions or leaks.
    pub fn is_clean(&self) -> bool {
        self.check_errors == 0 && self.corruptions == 0 && self.leaks == 0
    }
}

/// `qemu-img check -f qcow2 --output=json PATH` (read-only: no repair).
/// Exit statuses 0 (clean), 2 (corruptions) and 3 (leaks) all yield a
/// result; anything else is an error.
pub fn check_json(path: &Path) -> Result<CheckInfo> {
    let out = run_tool_unchecked(
        Tool::Img,
        [
            OsStr::new("check"),
            OsStr::new("-f"),
            OsStr::new("qcow2"),
            OsStr::new("--output=json"),
            path.as_os_str(),
        ],
    )?
    .expect_codes(&[0, 2, 3])?;
    let mut info: CheckInfo = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "cannot parse the JSON of: {}\n{}",
            out.command_line, out.stdout
        )
    })?;
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
/// kills the server and removes its directory.
pub struct NbdServer {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    command_line: String,
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
        let mut cmd = Tool::Nbd.command()?;
        cmd.arg("-r").arg("-t").arg("-k").arg(&socket);
        if let Some(b) = bitmap {
            cmd.arg("-B").arg(b);
        }
        cmd.arg("-f").arg("qcow2").arg(image);
        let command_line = command_line(&cmd);
        let log_file = std::fs::File::create(&log).context("cannot create the qemu-nbd log")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start: {command_line}"))?;
        let mut server = NbdServer {
            child,
            dir,
            socket,
            command_line,
        };
        server.wait_until_listening()?;
        Ok(server)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu-nbd.log")).unwrap_or_default()
    }

    fn wait_until_listening(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "qemu-nbd exited before listening ({}): {}\n--- output ---\n{}",
                    describe_status(status),
                    self.command_line,
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
                    self.command_line,
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
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("qemu-nbd exited ({})", describe_status(status)),
            _ => "qemu-nbd is still running".to_string(),
        };
        client_error.context(format!(
            "{state}: {}\n--- qemu-nbd output ---\n{}",
            self.command_line,
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

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One extent of `qemu-img map --output=json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MapExtent {
    pub start: u64,
    pub length: u64,
    pub data: bool,
    #[serde(default)]
    pub zero: bool,
    #[serde(default)]
    pub present: bool,
    pub offset: Option<u64>,
}

/// `qemu-img map --output=json --image-opts OPTS`.
pub fn map_image_opts(opts: &str) -> Result<Vec<MapExtent>> {
    let out = run_tool(Tool::Img, ["map", "--output=json", "--image-opts", opts])?;
    serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "cannot parse the JSON of: {}\n{}",
            out.command_line, out.stdout
        )
    })
}

/// Merges touching or overlapping half-open ranges (sorted first).
pub fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|&(a, b)| a < b);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge_ranges(vec![(10, 20), (0, 5), (5, 8), (20, 20), (19, 30)]),
            vec![(0, 8), (10, 30)]
        );
    }

    #[test]
    fn quotes_command_lines() {
        let mut c = Command::new("qemu-img");
        c.args(["info", "a b", "x'y"]);
        assert_eq!(command_line(&c), r"qemu-img info 'a b' 'x'\''y'");
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
}
