//! One `qemu-storage-daemon` holding one image: started in its own
//! process group under the runner's limits, its QMP monitor and NBD
//! server on Unix sockets in a private temporary directory (removed with
//! it), the image exported read-write as `disk` for guest writes while
//! they happen (an export holds off resizes). Ends
//! cleanly with QMP `quit` (which stores persistent bitmaps) or with
//! SIGKILL (a crash); dropping it kills the group.

use super::nbd::{NbdClient, NbdError};
use super::qmp::{Qmp, QmpError, Refused, Reply};
use crate::runner::adapters::qemu::pin::{self, PinError};
use crate::runner::process::{self, Background, Limits, Proc};
use serde::Deserialize;
use serde_json::{json, Value};
use spec_model::semantics::DiscardMode;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The node name of the (first) image's qcow2 layer.
pub const NODE: &str = "q0";

/// The node name of image `i`'s qcow2 layer (`q0`, `q1`, ...).
pub fn node_name(i: usize) -> String {
    format!("q{i}")
}
/// The export guest writes go through.
pub const EXPORT: &str = "disk";

/// Why the daemon could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot set up the daemon: {0}")]
    Setup(#[from] std::io::Error),
    /// It exited before its monitor listened: its first error line, and
    /// how it ended.
    #[error("{message}")]
    Refused { message: String, process: Box<Proc> },
    #[error("qemu-storage-daemon did not listen within {0:?}")]
    NotListening(Duration),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Nbd(#[from] NbdError),
    #[error("unexpected QMP answer to {command}: {detail}")]
    Answer { command: String, detail: String },
    /// The image names a file its pinned graph may not follow: the daemon
    /// is not started.
    #[error(transparent)]
    NotStarted(#[from] PinError),
}

/// One dirty bitmap as `query-named-block-nodes` lists it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LiveBitmap {
    pub name: String,
    pub granularity: u64,
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default)]
    pub inconsistent: bool,
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub count: u64,
}

impl LiveBitmap {
    /// log2 of the granularity.
    pub fn gbits(&self) -> u8 {
        self.granularity.max(1).trailing_zeros() as u8
    }
}

/// A running daemon.
pub struct Daemon {
    server: Background,
    pub qmp: Qmp,
    /// The directory of its sockets (inside its working directory).
    sockets: tempfile::TempDir,
    /// `sockets`, open: the runner reaches the sockets through it
    /// ([`crate::runner::process::temp_dirs::short_path`]).
    handle: std::fs::File,
    /// Its own scratch directory (its log; its working directory outside a
    /// case). Dropped after `sockets`, which may lie inside it.
    _scratch: crate::runner::process::temp_dirs::Scratch,
    /// The command line it was started with, quoted for a shell.
    pub command: String,
    exports: u32,
    timeout: Duration,
    /// Per node: opened read-only.
    read_only: Vec<bool>,
    /// Per node: whether its guest export exists (it is removed for a
    /// resize: an NBD export does not share the resize permission).
    guest_export: Vec<bool>,
    /// Per node: whether it is active as far as the harness knows (set by
    /// `blockdev-set-active` answered with success); nothing is exported
    /// from an inactive node, since an export would activate it.
    active: Vec<bool>,
    /// The node the node-level methods (bitmaps, hashes, exports, guest
    /// I/O) are aimed at: an index into the images it was started with.
    pub node: usize,
    /// How it was started (its output is shown as [`Arguments::unpin`]
    /// says).
    arguments: Arguments,
}

/// How the image's nodes are opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeOptions {
    pub read_only: bool,
    /// The nodes' `discard` option: `unmap` (discards carried out) or
    /// `ignore` (QEMU's default: dropped).
    pub discard: DiscardMode,
}

/// The export id (and NBD name) holding bitmap `name` for
/// [`Daemon::export_bitmap`]: a digest, so that any name makes a valid id.
pub fn export_id(name: &str) -> String {
    export_id_on(0, name)
}

/// [`export_id`] for a bitmap of node `node` (node 0's ids are
/// [`export_id`]'s).
pub fn export_id_on(node: usize, name: &str) -> String {
    use sha2::Digest;
    let key = if node == 0 {
        name.to_owned()
    } else {
        format!("{node}/{name}")
    };
    format!(
        "x{}",
        &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..12]
    )
}

/// The guest export's id and NBD name for node `node` (`e0`/`disk` for
/// the first).
fn guest_names(node: usize) -> (String, String) {
    let name = if node == 0 {
        EXPORT.to_owned()
    } else {
        format!("{EXPORT}{node}")
    };
    (format!("e{node}"), name)
}

/// The arguments of QMP `blockdev-reopen` for a qcow2 node started with
/// the `--blockdev` value `pinned` ([`Arguments::nodes`]), read-only when
/// `read_only`: every option the node was opened with is given again (the
/// command resets what it is not given), its graph included.
pub fn reopen_options(pinned: &str, read_only: bool) -> serde_json::Value {
    let mut node: Value = serde_json::from_str(pinned).unwrap_or_else(|_| json!({}));
    node["read-only"] = json!(read_only);
    json!({ "options": [node] })
}

/// `v` with commas doubled, for QEMU's option syntax.
fn esc(v: &str) -> String {
    v.replace(',', ",,")
}

/// The daemon's command line, and each image node's options as it was
/// given them and as its messages show them.
#[derive(Debug, Clone)]
pub struct Arguments {
    pub args: Vec<OsString>,
    /// Per qcow2 node: its `--blockdev` value (JSON naming its whole
    /// graph), and the same node as QEMU's messages showed it before it
    /// was pinned (its dotted options without the graph), put back in
    /// their place.
    pub nodes: Vec<(String, String)>,
}

impl Arguments {
    /// `p`'s output with each pinned node shown as it was before pinning
    /// (the daemon prefixes a start-up error with the option it was
    /// given).
    pub fn unpin(&self, p: &mut Proc) {
        for (pinned, shown) in &self.nodes {
            p.stdout = p.stdout.replace(pinned, shown);
            p.stderr = p.stderr.replace(pinned, shown);
        }
    }
}

/// The daemon's arguments for `image`, its sockets under `dir` (a path
/// relative to the daemon's working directory keeps them short), the
/// nodes opened as `opts` says. The qcow2 node
/// names its backing chain and data file ([`pin`]), so the daemon opens
/// no file the image names by itself; `Err` when the image names one the
/// graph may not follow.
pub fn arguments_with(
    image: &Path,
    dir: &Path,
    secret: Option<&str>,
    opts: NodeOptions,
) -> Result<Arguments, PinError> {
    arguments_nodes(&[(image, opts)], dir, secret)
}

/// The daemon's arguments for several images, image `i` as file node
/// `f{i}` under qcow2 node `q{i}` opened as its options say (the secret,
/// for an encrypted image, is the first image's). Each qcow2 node names
/// its backing chain and data file ([`pin`]), so the daemon opens no file
/// an image names by itself; `Err` when an image names one the graph may
/// not follow.
pub fn arguments_nodes(
    images: &[(&Path, NodeOptions)],
    dir: &Path,
    secret: Option<&str>,
) -> Result<Arguments, PinError> {
    let mut a: Vec<OsString> = Vec::new();
    let mut nodes = Vec::new();
    if let Some(s) = secret {
        // The corpus's encrypted images are LUKS (crypt_method 2); QEMU
        // opens the old AES method read-only at most.
        opt(
            &mut a,
            "--object",
            format!("secret,id=sec0,data={}", esc(s)),
        );
    }
    for (i, (image, opts)) in images.iter().enumerate() {
        let ro = if opts.read_only { ",read-only=on" } else { "" };
        let discard = match opts.discard {
            DiscardMode::Unmap => "unmap",
            DiscardMode::Ignore => "ignore",
        };
        let name = node_name(i);
        let mut node = pin::graph(image)?.options(pin::Backing::Open);
        node.insert("file".into(), json!(format!("f{i}")));
        node.insert("node-name".into(), json!(name));
        node.insert("discard".into(), json!(discard));
        if opts.read_only {
            node.insert("read-only".into(), json!(true));
        }
        let mut shown = format!("driver=qcow2,file=f{i},node-name={name},discard={discard}{ro}");
        if secret.is_some() && i == 0 {
            node.insert(
                "encrypt".into(),
                json!({"format": "luks", "key-secret": "sec0"}),
            );
            shown.push_str(",encrypt.format=luks,encrypt.key-secret=sec0");
        }
        let pinned = Value::Object(node).to_string();
        let file = esc(&image.to_string_lossy());
        let file = format!("driver=file,filename={file},node-name=f{i},discard={discard}{ro}");
        opt(&mut a, "--blockdev", file);
        opt(&mut a, "--blockdev", pinned.clone());
        nodes.push((pinned, shown));
    }
    let socket = |name: &str| esc(&dir.join(name).to_string_lossy());
    let qmp = format!(
        "socket,id=m0,path={},server=on,wait=off",
        socket("qmp.sock")
    );
    opt(&mut a, "--chardev", qmp);
    opt(&mut a, "--monitor", "chardev=m0");
    let nbd = format!("addr.type=unix,addr.path={}", socket("nbd.sock"));
    opt(&mut a, "--nbd-server", nbd);
    Ok(Arguments { args: a, nodes })
}

/// Adds option `name` with its `value` to the daemon's arguments `a`.
fn opt(a: &mut Vec<OsString>, name: &str, value: impl Into<OsString>) {
    a.push(name.into());
    a.push(value.into());
}

impl Daemon {
    /// Starts `program` on `image` (opened read-write, as a running guest
    /// holds it) and connects to its monitor.
    pub fn start(program: &Path, image: &Path, limits: &Limits) -> Result<Daemon, DaemonError> {
        Daemon::start_with(program, image, limits, false)
    }

    /// As [`Daemon::start`], read-only when `read_only`.
    pub fn start_with(
        program: &Path,
        image: &Path,
        limits: &Limits,
        read_only: bool,
    ) -> Result<Daemon, DaemonError> {
        let opts = NodeOptions {
            read_only,
            discard: DiscardMode::Unmap,
        };
        Daemon::start_opts(program, image, limits, opts)
    }

    /// As [`Daemon::start`], the nodes opened as `opts` says.
    pub fn start_opts(
        program: &Path,
        image: &Path,
        limits: &Limits,
        opts: NodeOptions,
    ) -> Result<Daemon, DaemonError> {
        Daemon::start_nodes(program, &[(image, opts)], limits)
    }

    /// One daemon holding every image of `images` (image `i` as node
    /// [`node_name`]`(i)`, opened as its options say); aimed at node 0.
    pub fn start_nodes(
        program: &Path,
        images: &[(&Path, NodeOptions)],
        limits: &Limits,
    ) -> Result<Daemon, DaemonError> {
        let read_only: Vec<bool> = images.iter().map(|(_, o)| o.read_only).collect();
        let scratch = crate::runner::process::temp_dirs::scratch("live")?;
        // It runs in the case's directory (a relative data file name
        // resolves there), else in its scratch directory; its sockets go
        // in a fresh directory there, named relative to it.
        let cwd =
            crate::runner::process::case_env::dir().unwrap_or_else(|| scratch.path().to_owned());
        let sockets = tempfile::Builder::new().prefix("qsd").tempdir_in(&cwd)?;
        let handle = std::fs::File::open(sockets.path())?;
        let rel = Path::new(sockets.path().file_name().unwrap_or_default());
        let secret = crate::runner::process::case_env::current();
        let arguments = arguments_nodes(images, rel, secret.as_deref())?;
        let args = &arguments.args;
        let cmd = {
            let _w = crate::runner::process::sandbox::writable(scratch.path());
            let _s = crate::runner::process::sandbox::writable(sockets.path());
            let mut c = process::command(program.as_os_str(), args, limits);
            c.current_dir(&cwd);
            c
        };
        let mut server = Background::spawn(cmd, &scratch.path().join("daemon.log"))?;
        let command = server.command.clone();
        let socket = crate::runner::process::temp_dirs::short_path(&handle, "qmp.sock");
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            if server.try_wait().is_some() {
                let mut p = server.stop(false);
                arguments.unpin(&mut p);
                let message = p
                    .first_error_line()
                    .unwrap_or_else(|| format!("qemu-storage-daemon ended: {}", p.describe_end()));
                return Err(DaemonError::Refused {
                    message,
                    process: Box::new(p),
                });
            }
            if socket.exists() {
                if let Ok(qmp) = Qmp::connect(&socket, limits.timeout) {
                    return Ok(Daemon {
                        server,
                        qmp,
                        sockets,
                        handle,
                        _scratch: scratch,
                        command,
                        exports: 0,
                        timeout: limits.timeout,
                        guest_export: vec![false; read_only.len()],
                        active: vec![true; read_only.len()],
                        read_only,
                        node: 0,
                        arguments,
                    });
                }
            }
            if start.elapsed() > limits.timeout {
                return Err(DaemonError::NotListening(limits.timeout));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// The NBD server's socket, as the runner reaches it (a short path
    /// through an open handle of its directory).
    pub fn nbd_socket(&self) -> PathBuf {
        crate::runner::process::temp_dirs::short_path(&self.handle, "nbd.sock")
    }

    /// The private directory holding the sockets.
    pub fn dir(&self) -> &Path {
        self.sockets.path()
    }

    /// Runs a QMP command.
    pub fn execute(&mut self, command: &str, args: Value) -> Result<Reply, DaemonError> {
        Ok(self.qmp.execute(command, args)?)
    }

    /// The name of the node the daemon is aimed at.
    pub fn node_name(&self) -> String {
        node_name(self.node)
    }

    /// Whether the node aimed at is active (as far as the harness knows).
    pub fn is_active(&self) -> bool {
        self.active.get(self.node).copied().unwrap_or(true)
    }

    /// Records that the node aimed at was (in)activated.
    pub fn set_active(&mut self, active: bool) {
        if let Some(a) = self.active.get_mut(self.node) {
            *a = active;
        }
    }

    fn ro(&self) -> bool {
        self.read_only.get(self.node).copied().unwrap_or(false)
    }

    fn node_info(&mut self) -> Result<Value, DaemonError> {
        let node = &self.node_name();
        let v = self
            .execute("query-named-block-nodes", json!({"flat": true}))?
            .ok()
            .map_err(|e| DaemonError::Answer {
                command: "query-named-block-nodes".into(),
                detail: e.0,
            })?;
        v.as_array()
            .and_then(|a| a.iter().find(|n| n["node-name"] == *node).cloned())
            .ok_or_else(|| DaemonError::Answer {
                command: "query-named-block-nodes".into(),
                detail: format!("no node {node}"),
            })
    }

    /// The image's bitmaps as QEMU holds them, and its virtual size.
    pub fn bitmaps(&mut self) -> Result<(u64, Vec<LiveBitmap>), DaemonError> {
        let node = self.node_info()?;
        let size = node["image"]["virtual-size"].as_u64().unwrap_or(0);
        let list = node.get("dirty-bitmaps").cloned().unwrap_or(json!([]));
        let bms: Vec<LiveBitmap> =
            serde_json::from_value(list).map_err(|e| DaemonError::Answer {
                command: "query-named-block-nodes".into(),
                detail: e.to_string(),
            })?;
        Ok((size, bms))
    }

    /// `x-debug-block-dirty-bitmap-sha256` of bitmap `name` (`Err`: QEMU's
    /// refusal).
    pub fn debug_sha256(&mut self, name: &str) -> Result<Result<String, Refused>, DaemonError> {
        let r = self.execute(
            "x-debug-block-dirty-bitmap-sha256",
            json!({"node": self.node_name(), "name": name}),
        )?;
        Ok(r.ok()
            .map(|v| v["sha256"].as_str().unwrap_or_default().to_owned()))
    }

    /// A guest connection to the read-write export `disk` (added on first
    /// use).
    pub fn guest(&mut self) -> Result<NbdClient, DaemonError> {
        let (id, name) = guest_names(self.node);
        if !self.guest_export[self.node] {
            let r = self.execute(
                "block-export-add",
                json!({"type": "nbd", "id": id, "node-name": self.node_name(), "name": name,
                       "writable": !self.ro()}),
            )?;
            if let Reply::Error(e) = r {
                return Err(DaemonError::Answer {
                    command: "block-export-add".into(),
                    detail: e,
                });
            }
            self.guest_export[self.node] = true;
        }
        Ok(NbdClient::connect(
            &self.nbd_socket(),
            &name,
            None,
            self.timeout,
        )?)
    }

    /// Removes the guest export (its clients must have disconnected), so
    /// that the node can be resized.
    pub fn drop_guest_export(&mut self) -> Result<(), DaemonError> {
        if !self.guest_export[self.node] {
            return Ok(());
        }
        self.guest_export[self.node] = false;
        let (id, _) = guest_names(self.node);
        if let Reply::Return(_) =
            self.execute("block-export-del", json!({"id": id, "mode": "hard"}))?
        {
            self.wait_export_gone(&id)?;
        }
        Ok(())
    }

    /// The dirty byte ranges of bitmap `name` as a backup client reads
    /// them: a new export carrying the bitmap, read over NBD with the
    /// `qemu:dirty-bitmap:NAME` metadata context, then removed. `Err`
    /// inside: QEMU refused to export it.
    pub fn read_dirty(
        &mut self,
        name: &str,
    ) -> Result<Result<Vec<(u64, u64)>, Refused>, DaemonError> {
        self.exports += 1;
        let id = format!("b{}", self.exports);
        let add = self.execute(
            "block-export-add",
            json!({"type": "nbd", "id": id, "node-name": self.node_name(), "name": id,
                   "writable": !self.ro(), "bitmaps": [name]}),
        )?;
        if let Reply::Error(e) = add {
            return Ok(Err(Refused(e)));
        }
        let ctx = format!("qemu:dirty-bitmap:{name}");
        let read = NbdClient::connect(&self.nbd_socket(), &id, Some(&ctx), self.timeout).and_then(
            |mut c| {
                let r = c.dirty_extents();
                c.disconnect();
                r
            },
        );
        // The export ends once the client has gone; `hard` cuts it if not.
        let del = self.execute("block-export-del", json!({"id": id, "mode": "hard"}))?;
        let ranges = match read {
            Ok(r) => r,
            // The server would not hand the bitmap out (or failed the
            // read): QEMU refused to use it.
            Err(
                e @ (NbdError::NoContext(_)
                | NbdError::OptionRefused { .. }
                | NbdError::Command { .. }),
            ) => {
                if let Reply::Return(_) = del {
                    self.wait_export_gone(&id)?;
                }
                return Ok(Err(Refused(e.to_string())));
            }
            Err(e) => return Err(e.into()),
        };
        if let Reply::Error(e) = del {
            return Err(DaemonError::Answer {
                command: "block-export-del".into(),
                detail: e,
            });
        }
        self.wait_export_gone(&id)?;
        Ok(Ok(ranges))
    }

    /// Waits until export `id` is gone (removal completes asynchronously).
    pub fn wait_export_gone(&mut self, id: &str) -> Result<(), DaemonError> {
        let start = Instant::now();
        while start.elapsed() < self.timeout {
            let v = self.execute("query-block-exports", json!({}))?;
            let busy = match v {
                Reply::Return(Value::Array(a)) => a.iter().any(|e| e["id"] == id),
                _ => false,
            };
            if !busy {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(DaemonError::Answer {
            command: "block-export-del".into(),
            detail: format!("export {id} still present after {:?}", self.timeout),
        })
    }

    /// A clean shutdown: QMP `quit`, then waits for the process to end
    /// (killed, and reported as timed out, when it does not in time).
    pub fn quit(self) -> Proc {
        let Daemon {
            server,
            mut qmp,
            sockets,
            _scratch,
            timeout,
            arguments,
            ..
        } = self;
        let _ = qmp.execute("quit", json!({}));
        let _dirs = (sockets, _scratch);
        wait_for_end(server, &arguments, timeout)
    }

    /// Adds an NBD export holding bitmap `name` (id [`export_id`]), kept
    /// until [`Daemon::unexport_bitmap`] or the daemon's end.
    pub fn export_bitmap(&mut self, name: &str) -> Result<Reply, DaemonError> {
        let id = export_id_on(self.node, name);
        self.execute(
            "block-export-add",
            json!({"type": "nbd", "id": id, "node-name": self.node_name(), "name": id,
                   "writable": !self.ro(), "bitmaps": [name]}),
        )
    }

    /// Reopens the qcow2 node read-only or read-write
    /// ([`reopen_options`]); later exports follow (`Err` inside: QEMU's
    /// refusal). The guest export must be gone: it holds the node.
    pub fn reopen(&mut self, read_only: bool) -> Result<Result<(), Refused>, DaemonError> {
        let pinned = self
            .arguments
            .nodes
            .get(self.node)
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        let r = self.execute("blockdev-reopen", reopen_options(&pinned, read_only))?;
        Ok(match r {
            Reply::Return(_) => {
                if let Some(ro) = self.read_only.get_mut(self.node) {
                    *ro = read_only;
                }
                Ok(())
            }
            Reply::Error(e) => Err(Refused(e)),
        })
    }

    /// Removes the export [`Daemon::export_bitmap`] made for `name`.
    pub fn unexport_bitmap(&mut self, name: &str) -> Result<Reply, DaemonError> {
        let id = export_id_on(self.node, name);
        let r = self.execute("block-export-del", json!({"id": id, "mode": "hard"}))?;
        if let Reply::Return(_) = r {
            self.wait_export_gone(&id)?;
        }
        Ok(r)
    }

    /// A clean shutdown by SIGTERM to the daemon itself (not its keeper),
    /// then waits for it to end as [`Daemon::quit`] does.
    pub fn terminate(self) -> Proc {
        let Daemon {
            server,
            sockets,
            _scratch,
            timeout,
            arguments,
            ..
        } = self;
        let _dirs = (sockets, _scratch);
        let keeper = server.id();
        let children = std::fs::read_to_string(format!("/proc/{keeper}/task/{keeper}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        wait_for_end(server, &arguments, timeout)
    }

    /// A crash: SIGKILL, nothing stored.
    pub fn kill(self) -> Proc {
        let mut p = self.server.stop(false);
        self.arguments.unpin(&mut p);
        p
    }

    /// Whether the process has ended on its own.
    pub fn ended(&mut self) -> bool {
        self.server.try_wait().is_some()
    }
}

/// Waits up to `timeout` for the daemon to end after it was asked to
/// (killed, and reported as timed out, when it does not), its output
/// shown unpinned. The caller drops the sockets and scratch directory
/// after this returns.
fn wait_for_end(mut server: Background, arguments: &Arguments, timeout: Duration) -> Proc {
    let start = Instant::now();
    while server.try_wait().is_none() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut p = server.stop(true);
    arguments.unpin(&mut p);
    p
}
