//! One `qemu-storage-daemon` holding one image: started in its own
//! process group under the runner's limits, its QMP monitor and NBD
//! server on Unix sockets in a private temporary directory (removed with
//! it), the image exported read-write as `disk` for guest writes while
//! they happen (an export holds off resizes). Ends
//! cleanly with QMP `quit` (which stores persistent bitmaps) or with
//! SIGKILL (a crash); dropping it kills the group.

use super::nbd::{NbdClient, NbdError};
use super::qmp::{Qmp, QmpError, Refused, Reply};
use crate::runner::process::{self, Background, Limits, Proc};
use serde::Deserialize;
use serde_json::{json, Value};
use spec_model::semantics::DiscardMode;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The node name of the image's qcow2 layer.
pub const NODE: &str = "q0";
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
    read_only: bool,
    /// The node's `discard` option (a reopen gives it again).
    discard: DiscardMode,
    /// Whether the guest export exists (it is removed for a resize: an
    /// NBD export does not share the resize permission).
    guest_export: bool,
    /// Whether the node is active as far as the harness knows (set by
    /// `blockdev-set-active` answered with success); nothing is exported
    /// from an inactive node, since an export would activate it.
    pub active: bool,
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
    use sha2::Digest;
    format!(
        "x{}",
        &hex::encode(sha2::Sha256::digest(name.as_bytes()))[..12]
    )
}

/// The arguments of QMP `blockdev-reopen` for the image's qcow2 node,
/// read-only when `read_only`: every option the node was opened with is
/// given again (the command resets what it is not given), its file child
/// by reference.
pub fn reopen_options(read_only: bool, discard: DiscardMode) -> serde_json::Value {
    let discard = match discard {
        DiscardMode::Unmap => "unmap",
        DiscardMode::Ignore => "ignore",
    };
    json!({"options": [{"driver": "qcow2", "node-name": NODE, "file": "f0",
                        "discard": discard, "read-only": read_only}]})
}

/// `v` with commas doubled, for QEMU's option syntax.
fn esc(v: &str) -> String {
    v.replace(',', ",,")
}

/// The daemon's arguments for `image`, its sockets under `dir` (a path
/// relative to the daemon's working directory keeps them short).
pub fn arguments(image: &Path, dir: &Path, secret: Option<&str>, read_only: bool) -> Vec<OsString> {
    let opts = NodeOptions {
        read_only,
        discard: DiscardMode::Unmap,
    };
    arguments_with(image, dir, secret, opts)
}

/// [`arguments`] with the nodes opened as `opts` says.
pub fn arguments_with(
    image: &Path,
    dir: &Path,
    secret: Option<&str>,
    opts: NodeOptions,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let ro = if opts.read_only { ",read-only=on" } else { "" };
    let discard = match opts.discard {
        DiscardMode::Unmap => "unmap",
        DiscardMode::Ignore => "ignore",
    };
    let mut qcow2 = format!("driver=qcow2,file=f0,node-name={NODE},discard={discard}{ro}");
    if let Some(s) = secret {
        // The corpus's encrypted images are LUKS (crypt_method 2); QEMU
        // opens the old AES method read-only at most.
        a.push("--object".into());
        a.push(format!("secret,id=sec0,data={}", esc(s)).into());
        qcow2.push_str(",encrypt.format=luks,encrypt.key-secret=sec0");
    }
    a.push("--blockdev".into());
    a.push(
        format!(
            "driver=file,filename={},node-name=f0,discard={discard}{ro}",
            esc(&image.to_string_lossy())
        )
        .into(),
    );
    a.push("--blockdev".into());
    a.push(qcow2.into());
    a.push("--chardev".into());
    a.push(
        format!(
            "socket,id=m0,path={},server=on,wait=off",
            esc(&dir.join("qmp.sock").to_string_lossy())
        )
        .into(),
    );
    a.push("--monitor".into());
    a.push("chardev=m0".into());
    a.push("--nbd-server".into());
    a.push(
        format!(
            "addr.type=unix,addr.path={}",
            esc(&dir.join("nbd.sock").to_string_lossy())
        )
        .into(),
    );
    a
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
        let read_only = opts.read_only;
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
        let args = arguments_with(image, rel, secret.as_deref(), opts);
        let cmd = {
            let _w = crate::runner::process::sandbox::writable(scratch.path());
            let _s = crate::runner::process::sandbox::writable(sockets.path());
            let mut c = process::command(program.as_os_str(), &args, limits);
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
                let p = server.stop(false);
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
                        read_only,
                        discard: opts.discard,
                        guest_export: false,
                        active: true,
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

    fn node_info(&mut self) -> Result<Value, DaemonError> {
        let v = self
            .execute("query-named-block-nodes", json!({"flat": true}))?
            .ok()
            .map_err(|e| DaemonError::Answer {
                command: "query-named-block-nodes".into(),
                detail: e.0,
            })?;
        v.as_array()
            .and_then(|a| a.iter().find(|n| n["node-name"] == NODE).cloned())
            .ok_or_else(|| DaemonError::Answer {
                command: "query-named-block-nodes".into(),
                detail: format!("no node {NODE}"),
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
            json!({"node": NODE, "name": name}),
        )?;
        Ok(r.ok()
            .map(|v| v["sha256"].as_str().unwrap_or_default().to_owned()))
    }

    /// A guest connection to the read-write export `disk` (added on first
    /// use).
    pub fn guest(&mut self) -> Result<NbdClient, DaemonError> {
        if !self.guest_export {
            let r = self.execute(
                "block-export-add",
                json!({"type": "nbd", "id": "e0", "node-name": NODE, "name": EXPORT,
                       "writable": !self.read_only}),
            )?;
            if let Reply::Error(e) = r {
                return Err(DaemonError::Answer {
                    command: "block-export-add".into(),
                    detail: e,
                });
            }
            self.guest_export = true;
        }
        Ok(NbdClient::connect(
            &self.nbd_socket(),
            EXPORT,
            None,
            self.timeout,
        )?)
    }

    /// Removes the guest export (its clients must have disconnected), so
    /// that the node can be resized.
    pub fn drop_guest_export(&mut self) -> Result<(), DaemonError> {
        if !self.guest_export {
            return Ok(());
        }
        self.guest_export = false;
        if let Reply::Return(_) =
            self.execute("block-export-del", json!({"id": "e0", "mode": "hard"}))?
        {
            self.wait_export_gone("e0")?;
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
            json!({"type": "nbd", "id": id, "node-name": NODE, "name": id,
                   "writable": !self.read_only, "bitmaps": [name]}),
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
            mut server,
            mut qmp,
            sockets,
            _scratch,
            timeout,
            ..
        } = self;
        let _ = qmp.execute("quit", json!({}));
        let start = Instant::now();
        while server.try_wait().is_none() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(1));
        }
        let p = server.stop(true);
        drop(sockets);
        drop(_scratch);
        p
    }

    /// Adds an NBD export holding bitmap `name` (id [`export_id`]), kept
    /// until [`Daemon::unexport_bitmap`] or the daemon's end.
    pub fn export_bitmap(&mut self, name: &str) -> Result<Reply, DaemonError> {
        let id = export_id(name);
        self.execute(
            "block-export-add",
            json!({"type": "nbd", "id": id, "node-name": NODE, "name": id,
                   "writable": !self.read_only, "bitmaps": [name]}),
        )
    }

    /// Reopens the qcow2 node read-only or read-write
    /// ([`reopen_options`]); later exports follow (`Err` inside: QEMU's
    /// refusal). The guest export must be gone: it holds the node.
    pub fn reopen(&mut self, read_only: bool) -> Result<Result<(), Refused>, DaemonError> {
        let r = self.execute("blockdev-reopen", reopen_options(read_only, self.discard))?;
        Ok(match r {
            Reply::Return(_) => {
                self.read_only = read_only;
                Ok(())
            }
            Reply::Error(e) => Err(Refused(e)),
        })
    }

    /// Removes the export [`Daemon::export_bitmap`] made for `name`.
    pub fn unexport_bitmap(&mut self, name: &str) -> Result<Reply, DaemonError> {
        let id = export_id(name);
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
            mut server,
            sockets,
            _scratch,
            timeout,
            ..
        } = self;
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
        let start = Instant::now();
        while server.try_wait().is_none() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(1));
        }
        let p = server.stop(true);
        drop(sockets);
        drop(_scratch);
        p
    }

    /// A crash: SIGKILL, nothing stored.
    pub fn kill(self) -> Proc {
        self.server.stop(false)
    }

    /// Whether the process has ended on its own.
    pub fn ended(&mut self) -> bool {
        self.server.try_wait().is_some()
    }
}
