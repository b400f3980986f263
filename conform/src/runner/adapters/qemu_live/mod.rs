//! QEMU's block layer as it runs (`run --impl qemu-live`): each image is
//! opened by `qemu-storage-daemon` ([`daemon`]), read-write as a running
//! guest holds it (read-only when QEMU refuses that), and judged with the
//! same outcomes as the offline `qemu` adapter:
//!
//! - opened, bitmaps and flags: QMP `query-named-block-nodes` ([`qmp`]);
//!   a bitmap QEMU loaded `inconsistent` is one it reports `in_use`;
//! - using a bitmap = a backup client reading its dirty extents: the
//!   bitmap exported over NBD and read with the `qemu:dirty-bitmap:NAME`
//!   metadata context by the suite's own client ([`nbd`]);
//! - QEMU's `x-debug-block-dirty-bitmap-sha256` checked against those
//!   bits by the semantic model's rule
//!   ([`spec_model::semantics::granules::qemu_debug_sha256`]);
//! - writes: guest data written through the NBD export while the daemon
//!   runs, then QMP `quit` (bitmaps stored) and the model judges the file.
//!
//! The random operation sequences of `campaign --impl qemu-live
//! --sequences` live in [`crate::campaign::sequences`].

pub mod backup;
pub mod daemon;
pub mod nbd;
pub mod oracle;
pub mod qmp;
pub mod session;

use super::qemu::Tool;
use crate::runner::adapter::{Adapter, Capabilities, WriteRun};
use crate::runner::observation::{Observation, ObservedBitmap, ObservedFlags};
use crate::runner::process::Limits;
use crate::runner::ranges::digest_of_ranges;
use anyhow::Result;
use daemon::{Daemon, DaemonError};
use spec_model::semantics::granules;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The live-QEMU adapter: the path of `qemu-storage-daemon`, under a
/// name (`qemu-live`, `qemu-live@10.2`, `qemu-live@DIR`).
pub struct QemuLiveAdapter {
    name: String,
    qsd: PathBuf,
}

impl QemuLiveAdapter {
    /// Finds `qemu-storage-daemon` (`QSD_PROG` or `PATH`); missing is an
    /// error.
    pub fn new() -> Result<QemuLiveAdapter> {
        Ok(QemuLiveAdapter {
            name: "qemu-live".into(),
            qsd: Tool::StorageDaemon.locate()?,
        })
    }

    /// The adapter for `qemu-live@WHERE`: the `qemu-storage-daemon` of the
    /// QEMU that `qemu@WHERE` names (an installation prefix, a version
    /// setup unpacked, or a build of `scripts/build-qemu.sh`); a prefix
    /// without one is an error.
    pub fn at(place: &str) -> Result<QemuLiveAdapter> {
        let tools = super::qemu::QemuAdapter::at(place)?.tools().clone();
        let Some(qsd) = tools.storage_daemon else {
            anyhow::bail!(
                "qemu-live@{place}: the QEMU in {} has no qemu-storage-daemon \
                 (scripts/setup.sh unpacks it for 7.2; scripts/build-qemu.sh builds it)",
                tools.prefix.unwrap_or_default().display()
            );
        };
        Ok(QemuLiveAdapter {
            name: format!("qemu-live@{place}"),
            qsd,
        })
    }

    /// The daemon's path.
    pub fn program(&self) -> &Path {
        &self.qsd
    }

    /// Starts the daemon on `image`: read-write, else read-only (noted).
    fn start(&self, image: &Path, limits: &Limits, obs: &mut Observation) -> Option<Daemon> {
        match Daemon::start(&self.qsd, image, limits) {
            Ok(d) => {
                obs.commands.push(format!("{} &", d.command));
                Some(d)
            }
            Err(DaemonError::Refused { message, process }) => {
                obs.record(&process);
                if process.timed_out || process.signal.is_some() {
                    return None;
                }
                match Daemon::start_with(&self.qsd, image, limits, true) {
                    Ok(d) => {
                        obs.notes.push(format!(
                            "qemu-storage-daemon refused the image read-write ({message}); opened read-only"
                        ));
                        obs.commands.push(format!("{} &", d.command));
                        Some(d)
                    }
                    Err(DaemonError::Refused { message, process }) => {
                        obs.record(&process);
                        obs.error = Some(message);
                        None
                    }
                    Err(e) => {
                        obs.protocol_error = Some(e.to_string());
                        None
                    }
                }
            }
            Err(DaemonError::NotStarted(e)) => {
                obs.not_started = Some(e.to_string());
                None
            }
            Err(e) => {
                obs.protocol_error = Some(e.to_string());
                None
            }
        }
    }

    fn observe_into(&self, image: &Path, limits: &Limits, obs: &mut Observation) {
        let Some(mut d) = self.start(image, limits, obs) else {
            return;
        };
        obs.opened = true;
        if let Err(e) = self.list_and_read(&mut d, obs) {
            obs.protocol_error = Some(e.to_string());
        }
        obs.commands
            .extend(d.qmp.transcript.iter().map(|l| format!("# qmp {l}")));
        let ended_early = d.ended();
        let p = d.quit();
        obs.commands.push("# qmp > {\"execute\": \"quit\"}".into());
        if ended_early {
            obs.notes
                .push("qemu-storage-daemon ended while it was being asked".into());
        }
        obs.absorb(&p);
        if p.status == Some(0) {
            stored_auto_flags(image, obs);
        }
    }

    fn list_and_read(&self, d: &mut Daemon, obs: &mut Observation) -> Result<(), DaemonError> {
        let (size, listed) = d.bitmaps()?;
        obs.virtual_size = (size > 0).then_some(size);
        for b in listed {
            let gbits = b.gbits();
            let mut o = ObservedBitmap {
                name: b.name.clone(),
                granularity_bits: (b.granularity.is_power_of_two()).then_some(gbits),
                flags: ObservedFlags {
                    in_use: b.inconsistent,
                    auto: b.recording,
                },
                ..ObservedBitmap::default()
            };
            match d.read_dirty(&b.name)? {
                Ok(ranges) => {
                    o.usable = true;
                    let (sha, bits) = digest_of_ranges(&ranges, size, gbits);
                    o.content_sha256 = Some(sha);
                    o.set_bits = Some(bits);
                    if let Some(note) = hash_check(d, &b.name, &ranges, size, gbits)? {
                        obs.notes.push(note);
                    }
                    o.dirty_ranges = Some(ranges);
                }
                Err(e) => o.error = Some(e.0),
            }
            obs.bitmaps.push(o);
        }
        Ok(())
    }
}

/// QMP has no field for the stored `auto` flag of a bitmap QEMU loaded
/// `inconsistent` (`recording` is false: it must not record), so for
/// those the flag is the one QEMU left in the file after its clean
/// shutdown (QEMU keeps an `in_use` entry as it was), read back with the
/// format model's parser.
fn stored_auto_flags(image: &Path, obs: &mut Observation) {
    if !obs.bitmaps.iter().any(|b| b.flags.in_use) {
        return;
    }
    let Ok(file) = session::read_file(image) else {
        return;
    };
    for b in obs.bitmaps.iter_mut().filter(|b| b.flags.in_use) {
        if let Some(f) = file.bitmaps.get(&b.name) {
            b.flags.auto = f.auto;
        }
    }
    obs.notes.push(
        "the auto flag of an in_use bitmap is not in QMP: it is read from the file QEMU left"
            .into(),
    );
}

/// QEMU's own debug hash of bitmap `name` against the bits its NBD export
/// handed out, by the semantic model's rule: a note when they disagree
/// (QEMU's two views of one bitmap differ), `None` when they agree.
fn hash_check(
    d: &mut Daemon,
    name: &str,
    ranges: &[(u64, u64)],
    size: u64,
    gbits: u8,
) -> Result<Option<String>, DaemonError> {
    let Ok(qemu) = d.debug_sha256(name)? else {
        return Ok(None);
    };
    let n = granules::nbits(size, gbits);
    let bits = granules::from_bytes(ranges, gbits, n);
    let want = granules::qemu_debug_sha256(&bits, n);
    Ok((qemu != want).then(|| {
        format!(
            "bitmap {name:?}: x-debug-block-dirty-bitmap-sha256 is {qemu}, but the bits read over NBD hash to {want}"
        )
    }))
}

impl Adapter for QemuLiveAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_metadata: true,
            read_bitmap_contents: true,
            read_guest_data: true,
            write_guest_data: true,
            bitmap_operations: false,
            incompatible_features_supported: Some(super::qemu::INCOMPATIBLE_SUPPORTED),
            uses_secret: true,
        }
    }

    fn observe(&self, image: &Path, limits: &Limits) -> Observation {
        let start = Instant::now();
        let mut obs = Observation::default();
        self.observe_into(image, limits, &mut obs);
        obs.duration_ms = start.elapsed().as_millis() as u64;
        obs
    }

    fn write(&self, image: &Path, offset: u64, len: u64, limits: &Limits) -> WriteRun {
        let mut d = match Daemon::start(&self.qsd, image, limits) {
            Ok(d) => d,
            Err(DaemonError::Refused { message, process }) => {
                return WriteRun {
                    error: Some(message),
                    process: Some(*process),
                    ..WriteRun::default()
                }
            }
            Err(e) => {
                return WriteRun {
                    error: Some(e.to_string()),
                    ..WriteRun::default()
                }
            }
        };
        let mut commands = vec![format!("{} &", d.command)];
        let written = d.guest().map_err(|e| e.to_string()).and_then(|mut c| {
            let data = vec![0xa5u8; len as usize];
            let r = c.write(offset, &data).and_then(|()| c.flush());
            c.disconnect();
            r.map_err(|e| e.to_string())
        });
        commands.push(format!(
            "# NBD write of {len} bytes of 0xa5 at {offset} to export `{}` (e.g. nbdcopy or qemu-io -f raw nbd+unix:///disk?socket=...)",
            daemon::EXPORT
        ));
        commands.extend(d.qmp.transcript.iter().map(|l| format!("# qmp {l}")));
        let p = d.quit();
        commands.push("# qmp > {\"execute\": \"quit\"}".into());
        let error = match (&written, p.status) {
            (Err(e), _) => Some(e.clone()),
            (Ok(()), Some(0)) => None,
            (Ok(()), _) => Some(format!(
                "qemu-storage-daemon did not end cleanly: {}",
                p.describe_end()
            )),
        };
        WriteRun {
            ok: error.is_none(),
            error,
            process: Some(p),
            commands,
            problems: Vec::new(),
        }
    }
}
