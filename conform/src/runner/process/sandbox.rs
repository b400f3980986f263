//! The sandbox every program the runner starts runs in (`run --sandbox`,
//! `campaign --sandbox`): it may write only the scratch directories of the
//! case it serves, read only those and what it needs to run (the system's
//! program and library directories, its own installation, the few files
//! of `/etc` a dynamic linker and a C library read), and reach no network
//! (TCP bind and connect denied; abstract Unix sockets and signals scoped
//! to its own sandbox).
//!
//! The mechanism is Landlock (Linux 5.13 and later; file system rules
//! from ABI 1, TCP rules from ABI 4, scopes from ABI 6): unprivileged,
//! per process, inherited by everything the program starts, and unable to
//! be undone by the program. The runner builds one ruleset per command in
//! its own process ([`restriction`]), where it may allocate and open
//! paths; the keeper's child ([`crate::runner::process::containment`]) only calls
//! `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self` on its
//! descriptor before `exec`, as code after `fork` in a threaded process
//! must.
//!
//! Which directories a program may write is the thread's business: the
//! runner names them around a case ([`writable`]: the case's scratch
//! directory; the live adapter adds its daemon's socket directory). A
//! program started while none is named (the exec adapter's
//! `capabilities` call, `--version`) writes nowhere.
//!
//! [`configure`] is called once by the commands that run implementations.
//! Without it (the library used by tests, `check`, `dump`) nothing is
//! sandboxed. On a kernel without Landlock, `auto` runs unsandboxed and
//! the report says so ([`Status`]); `require` refuses to run.

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetError, Scope, ABI,
};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// What `--sandbox` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Sandbox when the kernel offers Landlock; otherwise run and say so.
    #[default]
    Auto,
    /// Sandbox, or refuse to run.
    Require,
    /// Never sandbox.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Require => "require",
            Mode::Off => "off",
        }
    }
}

/// Whether and how a run was sandboxed (the report's provenance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The `--sandbox` mode asked for.
    pub mode: String,
    /// Every program of the run ran sandboxed.
    pub sandboxed: bool,
    /// How (`landlock ABI 7: ...`), or why not.
    pub detail: String,
}

/// Why the sandbox cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("--sandbox require: {0}")]
    Unavailable(String),
    #[error("cannot build the sandbox's Landlock ruleset: {0}")]
    Ruleset(#[from] RulesetError),
    #[error("the kernel refused a Landlock ruleset (Landlock reported as available)")]
    NotCreated,
}

/// The environment variable that caps the Landlock ABI the runner uses
/// (`0`: as if the kernel had no Landlock); for tests of the fallback.
pub const ABI_CAP_ENV: &str = "QCOW2_CONFORM_LANDLOCK_ABI";

/// The Landlock ABI in force: 0 while nothing is sandboxed.
static ACTIVE_ABI: AtomicI32 = AtomicI32::new(0);

/// The highest Landlock ABI the kernel offers (0: none), capped by
/// [`ABI_CAP_ENV`] when set.
pub fn kernel_abi() -> i32 {
    // LANDLOCK_CREATE_RULESET_VERSION: asks the ABI version, creates nothing.
    const VERSION: u32 = 1;
    // SAFETY: a null attribute with size 0 and the version flag is the
    // documented query; it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            VERSION,
        )
    };
    let v = i32::try_from(v.max(0)).unwrap_or(0);
    match std::env::var(ABI_CAP_ENV).ok().and_then(|s| s.parse().ok()) {
        Some(cap) => v.min(cap),
        None => v,
    }
}

/// What the rulesets cover at `abi`, in words.
fn coverage(abi: i32) -> String {
    let mut parts = vec!["file system (writes only to the case's scratch directory)"];
    if abi >= 4 {
        parts.push("TCP bind and connect denied");
    }
    if abi >= 6 {
        parts.push("abstract Unix sockets and signals scoped");
    }
    format!("landlock ABI {abi}: {}", parts.join("; "))
}

/// Turns the sandbox on or off for every program this process starts
/// from now on; the status for the report. `require` on a kernel without
/// Landlock is an error.
pub fn configure(mode: Mode) -> Result<Status, SandboxError> {
    let abi = if mode == Mode::Off { 0 } else { kernel_abi() };
    let status = Status {
        mode: mode.as_str().into(),
        sandboxed: abi > 0,
        detail: match (mode, abi) {
            (Mode::Off, _) => "not sandboxed: --sandbox off".into(),
            (_, 0) => "not sandboxed: the kernel offers no Landlock".into(),
            (_, a) => coverage(a),
        },
    };
    if mode == Mode::Require && abi == 0 {
        return Err(SandboxError::Unavailable(
            "the kernel offers no Landlock (Linux 5.13 or later with Landlock enabled)".into(),
        ));
    }
    if abi > 0 {
        // Fail now rather than at the first program.
        build(abi, None, &[], &[])?;
    }
    ACTIVE_ABI.store(abi, Ordering::SeqCst);
    Ok(status)
}

/// The sandbox status now (for reports of runs that did not call
/// [`configure`]).
pub fn status() -> Status {
    let abi = ACTIVE_ABI.load(Ordering::SeqCst);
    Status {
        mode: if abi > 0 { "on" } else { "off" }.into(),
        sandboxed: abi > 0,
        detail: if abi > 0 {
            coverage(abi)
        } else {
            "not sandboxed".into()
        },
    }
}

/// Whether programs are sandboxed.
pub fn active() -> bool {
    ACTIVE_ABI.load(Ordering::SeqCst) > 0
}

thread_local! {
    static WRITABLE: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Lets every program this thread starts write `dir` (and only the
/// directories named this way) until the guard is dropped.
pub fn writable(dir: &Path) -> Writable {
    WRITABLE.with(|w| w.borrow_mut().push(dir.to_owned()));
    Writable(())
}

/// The directories programs of this thread may write.
pub fn writable_dirs() -> Vec<PathBuf> {
    WRITABLE.with(|w| w.borrow().clone())
}

/// Guard of [`writable`].
#[must_use = "the directory stops being writable when the guard is dropped"]
pub struct Writable(());

impl Drop for Writable {
    fn drop(&mut self) {
        WRITABLE.with(|w| {
            w.borrow_mut().pop();
        });
    }
}

/// A ruleset built for one command, applied in its child.
#[derive(Debug)]
pub struct Restriction {
    fd: OwnedFd,
}

impl Restriction {
    /// The ruleset's descriptor (for `landlock_restrict_self`).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Directories every program may read and execute from.
const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
];

/// Files of `/etc` a dynamic linker, a C library or an interpreter reads.
const ETC_READ: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/alternatives",
    "/etc/gai.conf",
];

/// Devices every program may read and write.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// The ruleset for `program` (its directory readable) with `reads`
/// readable and this thread's [`writable_dirs`] writable; `None` when
/// nothing is sandboxed.
pub fn restriction(
    program: &OsStr,
    reads: &[PathBuf],
) -> Option<Result<Arc<Restriction>, SandboxError>> {
    let abi = ACTIVE_ABI.load(Ordering::SeqCst);
    if abi == 0 {
        return None;
    }
    let writes = writable_dirs();
    Some(build(abi, Some(program), reads, &writes).map(Arc::new))
}

/// Where `program` is: itself if it names a path, else the first match
/// on `PATH`; made absolute. `None` when there is no such file.
pub fn locate(program: &OsStr) -> Option<PathBuf> {
    let p = Path::new(program);
    let found = if p.components().count() > 1 {
        Some(p.to_path_buf()).filter(|p| p.is_file())
    } else {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    }?;
    std::path::absolute(found).ok()
}

/// The directories a program needs to read to run: its own directory as
/// named and as its links resolve, and, for one in a `bin`, `sbin` or
/// `shims` directory, the installation around it (a virtual environment's
/// `lib`, a version manager's interpreters).
pub fn program_dirs(program: &OsStr) -> Vec<PathBuf> {
    let Some(named) = locate(program) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in [Some(named.clone()), std::fs::canonicalize(&named).ok()]
        .into_iter()
        .flatten()
    {
        let Some(dir) = p.parent() else { continue };
        let installed = dir
            .file_name()
            .is_some_and(|n| n == "bin" || n == "sbin" || n == "shims");
        match dir.parent() {
            Some(prefix) if installed && prefix.parent().is_some() => out.push(prefix.to_owned()),
            _ => out.push(dir.to_owned()),
        }
    }
    out
}

/// `python3*` entries of `/etc` (Debian's interpreters read their
/// `sitecustomize` there).
fn etc_python() -> Vec<PathBuf> {
    std::fs::read_dir("/etc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn build(
    abi: i32,
    program: Option<&OsStr>,
    reads: &[PathBuf],
    writes: &[PathBuf],
) -> Result<Restriction, SandboxError> {
    let level = ABI::from(abi);
    let read = AccessFs::from_read(level);
    let all = AccessFs::from_all(level);
    let mut ruleset = Ruleset::default().handle_access(all)?;
    let net: BitFlags<AccessNet> = AccessNet::from_all(level);
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net)?;
    }
    let scopes: BitFlags<Scope> = Scope::from_all(level);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut own: Vec<PathBuf> = reads.to_vec();
    own.extend(program.map(program_dirs).unwrap_or_default());
    let device = read | AccessFs::WriteFile;
    let created: RulesetCreated = ruleset
        .create()?
        .add_rules(path_beneath_rules(SYSTEM_READ, read))?
        .add_rules(path_beneath_rules(ETC_READ, read))?
        .add_rules(path_beneath_rules(etc_python(), read))?
        .add_rules(path_beneath_rules(["/proc", "/sys"], read))?
        .add_rules(path_beneath_rules(DEVICES, device))?
        .add_rules(path_beneath_rules(own, read))?
        .add_rules(path_beneath_rules(writes, all))?;
    let fd: Option<OwnedFd> = created.into();
    Ok(Restriction {
        fd: fd.ok_or(SandboxError::NotCreated)?,
    })
}

#[cfg(test)]
mod tests {
    use crate::runner::process::sandbox::*;

    #[test]
    fn writable_directories_nest_per_thread() {
        assert!(writable_dirs().is_empty());
        let a = writable(Path::new("/a"));
        {
            let _b = writable(Path::new("/b"));
            assert_eq!(writable_dirs(), [PathBuf::from("/a"), PathBuf::from("/b")]);
            std::thread::spawn(|| assert!(writable_dirs().is_empty()))
                .join()
                .unwrap();
        }
        assert_eq!(writable_dirs(), [PathBuf::from("/a")]);
        drop(a);
        assert!(writable_dirs().is_empty());
    }

    #[test]
    fn a_ruleset_builds_on_this_kernel() {
        let abi = kernel_abi();
        assert!(abi > 0, "this machine's kernel offers Landlock");
        let r = build(abi, Some(OsStr::new("sh")), &[], &[]).unwrap();
        assert!(r.raw() >= 0);
        assert_eq!(
            locate(OsStr::new("sh")).map(|p| p.is_absolute()),
            Some(true)
        );
        // A program in a prefix's `bin` reads its prefix (a virtual
        // environment's `lib`); the root directory never.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("bin")).unwrap();
        let p = d.path().join("bin").join("tool");
        std::fs::write(&p, b"").unwrap();
        let dirs = program_dirs(p.as_os_str());
        assert!(
            dirs.contains(&std::fs::canonicalize(d.path()).unwrap()),
            "{dirs:?}"
        );
        assert!(program_dirs(OsStr::new("/bin/sh"))
            .iter()
            .all(|d| d != Path::new("/")));
    }
}
