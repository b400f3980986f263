//! One image driven through a running daemon with the semantic model
//! beside it: each operation is carried out and judged ([`Session::step`]),
//! a clean restart and a crash are judged on the file by the format model
//! and on the reopened daemon ([`Session::restart`], [`Session::crash`]).
//! The prediction step is replaceable ([`Session::predict`]) so that a
//! test can give the oracle a deliberately wrong model and see it caught.

use super::daemon::{Daemon, DaemonError, NodeOptions};
use super::nbd::NbdClient;
use super::oracle::{self, Contents};
use crate::runner::process::{Limits, Proc};
use spec_model::semantics::{judge_file, Disk, Expect, FileExpectation, FileRead, Op};
use spec_model::CheckError;
use std::path::{Path, PathBuf};

/// Why a session could not go on (not a finding: the harness failed).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("the model cannot read {}: {source}", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: CheckError,
    },
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the session has no running daemon")]
    Stopped,
}

/// How a daemon is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// QMP `quit`.
    Quit,
    /// SIGTERM.
    Term,
    /// SIGKILL (a crash).
    Kill,
}

/// How the model predicts an operation's effect (normally [`Disk::apply`]).
pub type Predict = fn(&mut Disk, &Op);

/// A daemon, its guest connection, and the model's running state.
pub struct Session {
    program: PathBuf,
    image: PathBuf,
    limits: Limits,
    /// How the daemon opens the image's nodes (every restart too).
    opts: NodeOptions,
    daemon: Option<Daemon>,
    guest: Option<NbdClient>,
    /// What the model says the daemon holds now.
    pub model: Disk,
    /// The prediction step (a test double may replace it).
    pub predict: Predict,
    /// How contents are compared after each step.
    pub contents: Contents,
    /// QMP transcripts of the daemons ended so far, and `# restart` /
    /// `# crash` markers, for reproducers.
    pub transcript: Vec<String>,
    /// The daemon processes that ended (crash and hang detection).
    pub ended: Vec<Proc>,
    /// The image's bytes when a read-only session opened it: whatever the
    /// session does, the file must still be these bytes when a daemon
    /// ends (`None`: a writable node, judged by the model).
    pristine: Option<Vec<u8>>,
}

/// The format model's reading of `path`.
pub fn read_file(path: &Path) -> Result<FileRead, SessionError> {
    let f = std::fs::File::open(path).map_err(|source| SessionError::Open {
        path: path.to_owned(),
        source,
    })?;
    FileRead::read(f).map_err(|source| SessionError::Model {
        path: path.to_owned(),
        source,
    })
}

impl Session {
    /// Opens `image` in a daemon; the model starts from what the format
    /// model reads in the file.
    pub fn open(program: &Path, image: &Path, limits: &Limits) -> Result<Session, SessionError> {
        Session::open_with(program, image, limits, NodeOptions::default())
    }

    /// As [`Session::open`], the nodes opened as `opts` says.
    pub fn open_with(
        program: &Path,
        image: &Path,
        limits: &Limits,
        opts: NodeOptions,
    ) -> Result<Session, SessionError> {
        let file = read_file(image)?;
        let pristine = if opts.read_only {
            Some(std::fs::read(image).map_err(|source| SessionError::Open {
                path: image.to_owned(),
                source,
            })?)
        } else {
            None
        };
        let daemon = Daemon::start_opts(program, image, limits, opts)?;
        Ok(Session {
            program: program.to_owned(),
            image: image.to_owned(),
            limits: *limits,
            opts,
            daemon: Some(daemon),
            guest: None,
            model: Disk::reopened(&file)
                .with_discard(opts.discard)
                .with_read_only(opts.read_only),
            predict: Disk::apply,
            contents: Contents::Hash,
            transcript: Vec::new(),
            ended: Vec::new(),
            pristine,
        })
    }

    /// The running daemon.
    pub fn daemon(&mut self) -> Result<&mut Daemon, SessionError> {
        self.daemon.as_mut().ok_or(SessionError::Stopped)
    }

    /// When the daemon has died on its own (a crash of QEMU, not the
    /// session's `kill -9`): how it ended, with a sanitizer's report when
    /// one was printed. Waits up to a second for a
    /// dying process to be reaped.
    pub fn death(&mut self) -> Option<String> {
        let d = self.daemon.as_mut()?;
        let start = std::time::Instant::now();
        while !d.ended() {
            if start.elapsed() > std::time::Duration::from_secs(1) {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let d = self.daemon.take()?;
        self.transcript.extend(d.qmp.transcript.iter().cloned());
        let p = d.kill();
        // A sanitizer build ends with an exit status: its report (line
        // and top frames) names the death, and so the finding's bucket.
        let end = match p.sanitizer() {
            Some(report) => format!("{} after a sanitizer report: {report}", p.describe_end()),
            None => p.describe_end(),
        };
        self.ended.push(p);
        Some(format!("qemu-storage-daemon died: {end}"))
    }

    /// Compares the daemon with the model; the problems found.
    pub fn compare(&mut self) -> Result<Vec<String>, SessionError> {
        let how = self.contents;
        let model = self.model.clone();
        Ok(oracle::compare(self.daemon()?, &model, how)?)
    }

    /// Carries out `op`, judges whether QEMU had to accept or refuse it,
    /// predicts its effect and compares. Returns the problems found.
    pub fn step(&mut self, op: &Op) -> Result<Vec<String>, SessionError> {
        let expect = self.model.expect(op);
        let d = self.daemon.as_mut().ok_or(SessionError::Stopped)?;
        let r = oracle::execute(d, &mut self.guest, op)?;
        let mut p = Vec::new();
        // Messages show an add with the default granularity made
        // explicit, so that both forms of one problem share a key.
        let shown = self.model.resolved(op);
        match (&expect, &r) {
            (Expect::Succeed, Err(e)) => {
                p.push(format!("QEMU refused {shown:?}, which must succeed: {e}"))
            }
            (Expect::Refuse(why), Ok(())) => p.push(format!(
                "QEMU carried out {shown:?}, which must be refused: {why}"
            )),
            (_, Ok(())) => (self.predict)(&mut self.model, op),
            (_, Err(_)) => {}
        }
        if !p.is_empty() {
            return Ok(p);
        }
        if matches!(op, Op::SetActive { active: false }) && r.is_ok() {
            // The inactivation stored the persistent bitmaps: the file
            // must hold them as a clean close would.
            let file = read_file(&self.image)?;
            let p: Vec<String> = self
                .judge_file_or_bytes(&self.model.close(), &file)
                .into_iter()
                .map(|m| format!("after the inactivation: {m}"))
                .collect();
            if !p.is_empty() {
                return Ok(p);
            }
        }
        if let (Op::Reopen { read_only }, Ok(())) = (op, &r) {
            // Read-only: the bitmaps stored as a clean close stores them;
            // read-write again: the stored ones marked in_use, as after
            // an open (what a crash now would leave).
            let want = if *read_only {
                self.model.close()
            } else {
                self.model.crash()
            };
            let file = read_file(&self.image)?;
            let way = if *read_only {
                "read-only"
            } else {
                "read-write"
            };
            let p: Vec<String> = self
                .judge_file_or_bytes(&want, &file)
                .into_iter()
                .map(|m| format!("after the reopen {way}: {m}"))
                .collect();
            if !p.is_empty() {
                return Ok(p);
            }
        }
        self.compare()
    }

    fn stop(&mut self, how: End) -> Result<FileRead, SessionError> {
        if let Some(g) = self.guest.take() {
            g.disconnect();
        }
        let d = self.daemon.take().ok_or(SessionError::Stopped)?;
        self.transcript.extend(d.qmp.transcript.iter().cloned());
        let (p, marker) = match how {
            End::Kill => (d.kill(), "# kill -9"),
            End::Quit => (d.quit(), "# quit"),
            End::Term => (d.terminate(), "# kill -TERM"),
        };
        self.transcript.push(marker.to_owned());
        self.ended.push(p);
        read_file(&self.image)
    }

    fn reopen(&mut self, file: &FileRead) -> Result<Vec<String>, SessionError> {
        self.model = Disk::reopened(file)
            .with_discard(self.opts.discard)
            .with_read_only(self.opts.read_only);
        self.daemon = Some(Daemon::start_opts(
            &self.program,
            &self.image,
            &self.limits,
            self.opts,
        )?);
        self.compare()
    }

    /// The file judged: by the model's expectation on a writable node,
    /// byte for byte against the bytes it was opened with on a read-only
    /// one ([`spec_model::semantics::readonly`]).
    fn judge_file_or_bytes(&self, want: &FileExpectation, file: &FileRead) -> Vec<String> {
        let Some(before) = &self.pristine else {
            return judge_file(want, file);
        };
        match std::fs::read(&self.image) {
            Ok(now) if now == *before => Vec::new(),
            Ok(now) => {
                let at = before
                    .iter()
                    .zip(&now)
                    .position(|(a, b)| a != b)
                    .unwrap_or(before.len().min(now.len()));
                let in_use: Vec<&String> = file
                    .bitmaps
                    .iter()
                    .filter(|(_, b)| b.in_use)
                    .map(|(n, _)| n)
                    .collect();
                vec![format!(
                    "the read-only image changed: {} bytes before, {} after, first difference at offset {at}{}",
                    before.len(),
                    now.len(),
                    if in_use.is_empty() {
                        String::new()
                    } else {
                        format!(" (bitmaps now in_use: {in_use:?})")
                    }
                )]
            }
            Err(e) => vec![format!("cannot read the read-only image back: {e}")],
        }
    }

    fn judge_end(&mut self, want: &FileExpectation, file: &FileRead, what: &str) -> Vec<String> {
        let mut p: Vec<String> = self
            .judge_file_or_bytes(want, file)
            .into_iter()
            .map(|m| format!("after the {what}: {m}"))
            .collect();
        if let Some(e) = self.ended.last() {
            if !e.timed_out && what == "clean shutdown" && e.status != Some(0) {
                p.push(format!(
                    "qemu-storage-daemon did not exit cleanly: {}",
                    e.describe_end()
                ));
            }
            if e.timed_out {
                p.push("qemu-storage-daemon did not quit in time".to_owned());
            }
        }
        p
    }

    /// A clean shutdown (QMP `quit`): the file must hold exactly what the
    /// model stores; then a reopen must load it as the model says.
    pub fn restart(&mut self) -> Result<Vec<String>, SessionError> {
        self.clean_restart(End::Quit)
    }

    /// A clean shutdown by SIGTERM, judged as [`Session::restart`].
    pub fn terminate(&mut self) -> Result<Vec<String>, SessionError> {
        self.clean_restart(End::Term)
    }

    fn clean_restart(&mut self, how: End) -> Result<Vec<String>, SessionError> {
        let want = self.model.close();
        let file = self.stop(how)?;
        let p = self.judge_end(&want, &file, "clean shutdown");
        if !p.is_empty() {
            return Ok(p);
        }
        self.reopen(&file)
    }

    /// A crash (SIGKILL): the file must conform with the bitmaps loaded
    /// from it marked `in_use`; the reopened daemon must report those
    /// inconsistent (and refuse to use them, which later steps check).
    pub fn crash(&mut self) -> Result<Vec<String>, SessionError> {
        let want = self.model.crash();
        let file = self.stop(End::Kill)?;
        let p = self.judge_end(&want, &file, "crash");
        if !p.is_empty() {
            return Ok(p);
        }
        self.reopen(&file)
    }

    /// Ends the session cleanly (QMP `quit`).
    pub fn close(mut self) -> Result<FileRead, SessionError> {
        self.stop(End::Quit)
    }

    /// Ends the session cleanly and judges the file it leaves: the
    /// problems found and the whole QMP transcript.
    pub fn finish(mut self) -> Result<(Vec<String>, Vec<String>), SessionError> {
        let want = self.model.close();
        let file = self.stop(End::Quit)?;
        let p = self.judge_end(&want, &file, "clean shutdown");
        Ok((p, self.transcript))
    }

    /// The QMP transcript so far (ended daemons and the running one).
    pub fn full_transcript(&self) -> Vec<String> {
        let mut t = self.transcript.clone();
        if let Some(d) = &self.daemon {
            t.extend(d.qmp.transcript.iter().cloned());
        }
        t
    }
}
