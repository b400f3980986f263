//! One image driven through a running daemon with the semantic model
//! beside it: each operation is carried out and judged ([`Session::step`]),
//! a clean restart and a crash are judged on the file by the format model
//! and on the reopened daemon ([`Session::restart`], [`Session::crash`]).
//! The prediction step is replaceable ([`Session::predict`]) so that a
//! test can give the oracle a deliberately wrong model and see it caught.

use super::daemon::{Daemon, DaemonError, NodeOptions};
use super::nbd::NbdClient;
use super::oracle::{self, Contents};
use super::qmp::Refused;
use crate::runner::process::{Limits, Proc};
use spec_model::semantics::{
    judge_file, Disk, Expect, FileExpectation, FileRead, NodeOp, Nodes, Op,
};
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
    /// The daemon's other nodes (node 1, 2, ...), each an image of its
    /// own, always writable; empty for a daemon of one node.
    pub others: Vec<Other>,
}

/// A node of the daemon besides the first: its image, how it is opened,
/// its guest connection and the model's state of it.
pub struct Other {
    pub image: PathBuf,
    pub opts: NodeOptions,
    guest: Option<NbdClient>,
    pub model: Disk,
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
        Session::open_nodes(program, image, limits, opts, &[])
    }

    /// As [`Session::open_with`], the daemon holding `others` too (node
    /// 1, 2, ... in that order; each writable, opened as its options say
    /// but for `read_only`, which is ignored).
    pub fn open_nodes(
        program: &Path,
        image: &Path,
        limits: &Limits,
        opts: NodeOptions,
        others: &[(PathBuf, NodeOptions)],
    ) -> Result<Session, SessionError> {
        let mut more = Vec::new();
        for (path, o) in others {
            let o = NodeOptions {
                read_only: false,
                ..*o
            };
            more.push(Other {
                image: path.clone(),
                opts: o,
                guest: None,
                model: Disk::reopened(&read_file(path)?).with_discard(o.discard),
            });
        }
        let file = read_file(image)?;
        let pristine = if opts.read_only {
            Some(std::fs::read(image).map_err(|source| SessionError::Open {
                path: image.to_owned(),
                source,
            })?)
        } else {
            None
        };
        let daemon = start_all(program, image, opts, &more, limits)?;
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
            others: more,
        })
    }

    /// The model's state of every node (node 0 first).
    pub fn nodes(&self) -> Nodes {
        Nodes {
            disks: std::iter::once(self.model.clone())
                .chain(self.others.iter().map(|o| o.model.clone()))
                .collect(),
        }
    }

    fn set_nodes(&mut self, nodes: Nodes) {
        let mut it = nodes.disks.into_iter();
        if let Some(d) = it.next() {
            self.model = d;
        }
        for (o, d) in self.others.iter_mut().zip(it) {
            o.model = d;
        }
    }

    /// Carries out `op` on a daemon of several nodes and judges it as
    /// [`Session::step`] does (an operation aimed at node 0 is a step);
    /// every node is compared afterwards.
    pub fn step_nodes(&mut self, op: &NodeOp) -> Result<Vec<String>, SessionError> {
        if let NodeOp::On { node: 0, op } = op {
            return self.step(op);
        }
        let nodes = self.nodes();
        let expect = nodes.expect(op);
        let d = self.daemon.as_mut().ok_or(SessionError::Stopped)?;
        let r = match op {
            NodeOp::On { node, op } => match self.others.get_mut(node - 1) {
                Some(o) => {
                    let keep = std::mem::replace(&mut d.node, *node);
                    let r = oracle::execute(d, &mut o.guest, op);
                    d.node = keep;
                    r?
                }
                None => Err(Refused(format!("no node {node}"))),
            },
            _ => oracle::execute_nodes(d, &mut [], op)?,
        };
        let shown = match op {
            NodeOp::On { node, op } => NodeOp::On {
                node: *node,
                op: nodes
                    .disks
                    .get(*node)
                    .map_or(op.clone(), |d| d.resolved(op)),
            },
            other => other.clone(),
        };
        match (&expect, &r) {
            (Expect::Succeed, Err(e)) => {
                return Ok(vec![format!(
                    "QEMU refused {shown:?}, which must succeed: {e}"
                )])
            }
            (Expect::Refuse(why), Ok(())) => {
                return Ok(vec![format!(
                    "QEMU carried out {shown:?}, which must be refused: {why}"
                )])
            }
            (_, Ok(())) => {
                let mut n = nodes;
                n.apply(op);
                self.set_nodes(n);
            }
            (_, Err(_)) => {}
        }
        if let (
            NodeOp::On {
                node,
                op: Op::SetActive { active: false },
            },
            Ok(()),
        ) = (op, &r)
        {
            if let Some(o) = self.others.get(node - 1) {
                let file = read_file(&o.image)?;
                let p: Vec<String> = judge_file(&o.model.close(), &file)
                    .into_iter()
                    .map(|m| format!("node q{node}: after the inactivation: {m}"))
                    .collect();
                if !p.is_empty() {
                    return Ok(p);
                }
            }
        }
        self.compare()
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
        let mut p = oracle::compare(self.daemon()?, &model, how)?;
        let others: Vec<Disk> = self.others.iter().map(|o| o.model.clone()).collect();
        for (i, m) in others.iter().enumerate() {
            let d = self.daemon()?;
            d.node = i + 1;
            let got = oracle::compare(d, m, how);
            d.node = 0;
            p.extend(got?.into_iter().map(|e| format!("node q{}: {e}", i + 1)));
        }
        Ok(p)
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
            let p = self.judged_after(&self.model.close(), &file, "inactivation");
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
            let p = self.judged_after(&want, &file, &format!("reopen {way}"));
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
        for o in &mut self.others {
            if let Some(g) = o.guest.take() {
                g.disconnect();
            }
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

    fn reopen(
        &mut self,
        file: &FileRead,
        others: &[FileRead],
    ) -> Result<Vec<String>, SessionError> {
        self.model = Disk::reopened(file)
            .with_discard(self.opts.discard)
            .with_read_only(self.opts.read_only);
        for (o, f) in self.others.iter_mut().zip(others) {
            o.model = Disk::reopened(f).with_discard(o.opts.discard);
        }
        self.daemon = Some(start_all(
            &self.program,
            &self.image,
            self.opts,
            &self.others,
            &self.limits,
        )?);
        self.compare()
    }

    /// The other nodes' files judged against `wants` (one per node, as
    /// the model required before the daemon ended): the problems, and
    /// the files as read.
    fn judge_others(
        &self,
        wants: &[FileExpectation],
        what: &str,
    ) -> Result<(Vec<String>, Vec<FileRead>), SessionError> {
        let mut p = Vec::new();
        let mut files = Vec::new();
        for (i, (o, want)) in self.others.iter().zip(wants).enumerate() {
            let f = read_file(&o.image)?;
            p.extend(
                judge_file(want, &f)
                    .into_iter()
                    .map(|m| format!("node q{}: after the {what}: {m}", i + 1)),
            );
            files.push(f);
        }
        Ok((p, files))
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

    /// [`Self::judge_file_or_bytes`], each problem said to come after the
    /// `what` (an inactivation, a reopen, a clean shutdown, ...).
    fn judged_after(&self, want: &FileExpectation, file: &FileRead, what: &str) -> Vec<String> {
        self.judge_file_or_bytes(want, file)
            .into_iter()
            .map(|m| format!("after the {what}: {m}"))
            .collect()
    }

    fn judge_end(&mut self, want: &FileExpectation, file: &FileRead, what: &str) -> Vec<String> {
        let mut p = self.judged_after(want, file, what);
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
        self.end_and_reopen(how, Disk::close, "clean shutdown")
    }

    /// A crash (SIGKILL): the file must conform with the bitmaps loaded
    /// from it marked `in_use`; the reopened daemon must report those
    /// inconsistent (and refuse to use them, which later steps check).
    pub fn crash(&mut self) -> Result<Vec<String>, SessionError> {
        self.end_and_reopen(End::Kill, Disk::crash, "crash")
    }

    /// Ends the daemon as `how` says and judges every node's file against
    /// what `expect` ([`Disk::close`] or [`Disk::crash`]) requires of it
    /// (`what`, the end, names it in the problems); with none, reopens.
    fn end_and_reopen(
        &mut self,
        how: End,
        expect: fn(&Disk) -> FileExpectation,
        what: &str,
    ) -> Result<Vec<String>, SessionError> {
        let want = expect(&self.model);
        let wants: Vec<FileExpectation> = self.others.iter().map(|o| expect(&o.model)).collect();
        let file = self.stop(how)?;
        let mut p = self.judge_end(&want, &file, what);
        let (more, files) = self.judge_others(&wants, what)?;
        p.extend(more);
        if !p.is_empty() {
            return Ok(p);
        }
        self.reopen(&file, &files)
    }

    /// Ends the session cleanly (QMP `quit`).
    pub fn close(mut self) -> Result<FileRead, SessionError> {
        self.stop(End::Quit)
    }

    /// Ends the session cleanly and judges the file it leaves: the
    /// problems found and the whole QMP transcript.
    pub fn finish(mut self) -> Result<(Vec<String>, Vec<String>), SessionError> {
        let want = self.model.close();
        let wants: Vec<FileExpectation> = self.others.iter().map(|o| o.model.close()).collect();
        let file = self.stop(End::Quit)?;
        let mut p = self.judge_end(&want, &file, "clean shutdown");
        p.extend(self.judge_others(&wants, "clean shutdown")?.0);
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

/// Starts one daemon on `image` (node 0, opened as `opts`) and every other
/// node's image.
fn start_all(
    program: &Path,
    image: &Path,
    opts: NodeOptions,
    others: &[Other],
    limits: &Limits,
) -> Result<Daemon, DaemonError> {
    let images: Vec<(&Path, NodeOptions)> = std::iter::once((image, opts))
        .chain(others.iter().map(|o| (o.image.as_path(), o.opts)))
        .collect();
    Daemon::start_nodes(program, &images, limits)
}
