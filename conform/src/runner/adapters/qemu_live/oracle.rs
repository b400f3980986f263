//! The semantic model as the oracle of a running daemon: [`execute`]
//! carries one [`Op`] out over QMP or NBD, and [`compare`] says every way
//! the daemon's bitmaps differ from what the model predicts (names,
//! granularity, recording, persistence, consistency, and contents by
//! QEMU's debug hash, or by the dirty extents an NBD client reads where
//! the hash cannot decide).

use super::daemon::{node_name, Daemon, DaemonError};
use super::nbd::NbdClient;
use super::qmp::{Refused, Reply};
use serde_json::json;
use spec_model::semantics::{granules, Disk, NodeOp, Op};

/// How `compare` reads contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// QEMU's `x-debug-block-dirty-bitmap-sha256`, NBD only where the
    /// prediction leaves granules open.
    Hash,
    /// Both the hash and the NBD dirty extents.
    HashAndNbd,
}

/// The byte every guest write of `op` at `offset` writes (any non-zero
/// value; the reproducer writes the same).
pub fn fill_byte(offset: u64) -> u8 {
    (offset % 251) as u8 | 1
}

/// Carries `op` out on the daemon: guest I/O through `guest` (connected
/// on first use, reconnected after a resize), bitmap operations over QMP.
/// `Ok(Err(_))`: QEMU refused it.
pub fn execute(
    d: &mut Daemon,
    guest: &mut Option<NbdClient>,
    op: &Op,
) -> Result<Result<(), Refused>, DaemonError> {
    let node = d.node_name();
    let qmp = |d: &mut Daemon, cmd: &str, args| -> Result<Result<(), Refused>, DaemonError> {
        Ok(match d.execute(cmd, args)? {
            Reply::Return(_) => Ok(()),
            Reply::Error(e) => Err(Refused(e)),
        })
    };
    match op {
        Op::Write { .. }
        | Op::Writes { .. }
        | Op::WriteZeroes { .. }
        | Op::Discard { .. }
        | Op::Export { .. }
            if !d.is_active() =>
        {
            // An export would activate the node behind the harness's back.
            Ok(Err(Refused(
                "the harness exports nothing from an inactive node".into(),
            )))
        }
        Op::Write { offset, len }
        | Op::WriteZeroes { offset, len }
        | Op::Discard { offset, len } => {
            if guest.is_none() {
                *guest = Some(d.guest()?);
            }
            let Some(c) = guest.as_mut() else {
                return Ok(Err(Refused("no guest connection".into())));
            };
            if offset.checked_add(*len).is_none_or(|e| e > c.size) {
                return Ok(Err(Refused(format!(
                    "{offset}+{len} lies past the export's end ({})",
                    c.size
                ))));
            }
            let r = match op {
                Op::Write { .. } => c.write(*offset, &vec![fill_byte(*offset); *len as usize]),
                Op::WriteZeroes { .. } => c.zero_or_trim(*offset, *len, true),
                _ => c.zero_or_trim(*offset, *len, false),
            };
            Ok(r.map_err(|e| Refused(e.to_string())))
        }
        Op::Writes { writes } => {
            if guest.is_none() {
                *guest = Some(d.guest()?);
            }
            let Some(c) = guest.as_mut() else {
                return Ok(Err(Refused("no guest connection".into())));
            };
            if let Some((o, l)) = writes
                .iter()
                .find(|(o, l)| o.checked_add(*l).is_none_or(|e| e > c.size))
            {
                return Ok(Err(Refused(format!(
                    "{o}+{l} lies past the export's end ({})",
                    c.size
                ))));
            }
            let data: Vec<(u64, Vec<u8>)> = writes
                .iter()
                .map(|&(o, l)| (o, vec![fill_byte(o); l as usize]))
                .collect();
            let r = c.write_concurrently(&data);
            if r.is_err() {
                // Replies may be left unread: a fresh connection next.
                if let Some(c) = guest.take() {
                    c.disconnect();
                }
            }
            Ok(r.map_err(|e| Refused(e.to_string())))
        }
        Op::Resize { size } => {
            if let Some(c) = guest.take() {
                c.disconnect();
            }
            d.drop_guest_export()?;
            qmp(d, "block_resize", json!({"node-name": node, "size": size}))
        }
        Op::SetActive { active } => {
            if !active {
                // The guest's export would keep the node in use.
                if let Some(c) = guest.take() {
                    c.disconnect();
                }
                d.drop_guest_export()?;
            }
            let r = qmp(
                d,
                "blockdev-set-active",
                json!({"node-name": node, "active": active}),
            )?;
            if r.is_ok() {
                d.set_active(*active);
            }
            Ok(r)
        }
        Op::Reopen { .. } if !d.is_active() => {
            Ok(Err(Refused("the harness reopens no inactive node".into())))
        }
        Op::Reopen { read_only } => {
            // The guest's writable export would hold the node writable.
            if let Some(c) = guest.take() {
                c.disconnect();
            }
            d.drop_guest_export()?;
            d.reopen(*read_only)
        }
        Op::Export { name } => Ok(d.export_bitmap(name)?.ok().map(|_| ())),
        Op::Unexport { name } => Ok(d.unexport_bitmap(name)?.ok().map(|_| ())),
        _ => match qmp_command_on(d.node, op) {
            Some((cmd, args)) => qmp(d, cmd, args),
            None => Ok(Err(Refused(format!("{op:?} has no QMP command")))),
        },
    }
}

/// Carries out `op` on a daemon holding several nodes: an operation aimed
/// at one node as [`execute`] does it there (`guests[i]`: node `i`'s
/// guest connection), a merge or a transaction over QMP. `Ok(Err(_))`:
/// QEMU refused it.
pub fn execute_nodes(
    d: &mut Daemon,
    guests: &mut [Option<NbdClient>],
    op: &NodeOp,
) -> Result<Result<(), Refused>, DaemonError> {
    if let NodeOp::On { node, op } = op {
        let Some(guest) = guests.get_mut(*node) else {
            return Ok(Err(Refused(format!("no node {node}"))));
        };
        let keep = std::mem::replace(&mut d.node, *node);
        let r = execute(d, guest, op);
        d.node = keep;
        return r;
    }
    match node_qmp_command(op) {
        Some((cmd, args)) => Ok(match d.execute(cmd, args)? {
            Reply::Return(_) => Ok(()),
            Reply::Error(e) => Err(Refused(e)),
        }),
        None => Ok(Err(Refused(format!("{op:?} has no QMP command")))),
    }
}

/// The QMP command of an operation on a daemon holding several nodes: a
/// merge names each source of another node as `{"node", "name"}`, a
/// transaction holds each member's command; `None` for guest I/O.
pub fn node_qmp_command(op: &NodeOp) -> Option<(&'static str, serde_json::Value)> {
    Some(match op {
        NodeOp::On { node, op } => return qmp_command_on(*node, op),
        NodeOp::Merge {
            node,
            target,
            sources,
        } => {
            let bitmaps: Vec<serde_json::Value> = sources
                .iter()
                .map(|s| {
                    if s.node == *node {
                        json!(s.name)
                    } else {
                        json!({"node": node_name(s.node), "name": s.name})
                    }
                })
                .collect();
            (
                "block-dirty-bitmap-merge",
                json!({"node": node_name(*node), "target": target, "bitmaps": bitmaps}),
            )
        }
        NodeOp::Transaction { actions } => {
            let actions: Vec<serde_json::Value> = actions
                .iter()
                .filter_map(node_qmp_command)
                .map(|(cmd, data)| json!({"type": cmd, "data": data}))
                .collect();
            ("transaction", json!({ "actions": actions }))
        }
    })
}

/// The QMP command (name, arguments) that carries out a bitmap operation,
/// a transaction, an (in)activation, an export or a resize; `None` for
/// guest I/O.
pub fn qmp_command(op: &Op) -> Option<(&'static str, serde_json::Value)> {
    qmp_command_on(0, op)
}

/// [`qmp_command`] aimed at node `index` ([`node_name`]).
pub fn qmp_command_on(index: usize, op: &Op) -> Option<(&'static str, serde_json::Value)> {
    let node = node_name(index);
    Some(match op {
        Op::Write { .. } | Op::Writes { .. } | Op::WriteZeroes { .. } | Op::Discard { .. } => {
            return None
        }
        Op::AddDefault {
            name,
            persistent,
            disabled,
        } => (
            "block-dirty-bitmap-add",
            json!({"node": node, "name": name, "persistent": persistent, "disabled": disabled}),
        ),
        Op::Transaction { actions } => {
            let actions: Vec<serde_json::Value> = actions
                .iter()
                .filter_map(|a| qmp_command_on(index, a))
                .map(|(cmd, data)| json!({"type": cmd, "data": data}))
                .collect();
            ("transaction", json!({ "actions": actions }))
        }
        Op::SetActive { active } => (
            "blockdev-set-active",
            json!({"node-name": node, "active": active}),
        ),
        Op::Export { name } => {
            let id = super::daemon::export_id_on(index, name);
            (
                "block-export-add",
                json!({"type": "nbd", "id": id, "node-name": node, "name": id,
                       "writable": true, "bitmaps": [name]}),
            )
        }
        Op::Unexport { name } => (
            "block-export-del",
            json!({"id": super::daemon::export_id_on(index, name), "mode": "hard"}),
        ),
        Op::Add {
            name,
            gbits,
            persistent,
            disabled,
        } => (
            "block-dirty-bitmap-add",
            json!({"node": node, "name": name, "granularity": 1u64 << (*gbits).min(63),
                   "persistent": persistent, "disabled": disabled}),
        ),
        Op::Remove { name } | Op::Clear { name } | Op::Enable { name } | Op::Disable { name } => {
            let command = match op {
                Op::Remove { .. } => "block-dirty-bitmap-remove",
                Op::Clear { .. } => "block-dirty-bitmap-clear",
                Op::Enable { .. } => "block-dirty-bitmap-enable",
                _ => "block-dirty-bitmap-disable",
            };
            (command, json!({"node": node, "name": name}))
        }
        Op::Merge { target, sources } => (
            "block-dirty-bitmap-merge",
            json!({"node": node, "target": target, "bitmaps": sources}),
        ),
        Op::Resize { size } => ("block_resize", json!({"node-name": node, "size": size})),
        // What is shown of a reopen; the daemon gives every option the
        // node was opened with again (`Daemon::reopen`).
        Op::Reopen { read_only } => (
            "blockdev-reopen",
            json!({"options": [{"node-name": node, "read-only": read_only}]}),
        ),
    })
}
/// Every way the daemon's bitmaps differ from `model`'s prediction.
pub fn compare(d: &mut Daemon, model: &Disk, how: Contents) -> Result<Vec<String>, DaemonError> {
    let mut p = Vec::new();
    let (size, listed) = d.bitmaps()?;
    if size != model.size {
        p.push(format!("virtual size {size}, expected {}", model.size));
    }
    for name in model.bitmaps.keys() {
        if !listed.iter().any(|b| &b.name == name) {
            p.push(format!("bitmap {name:?} is missing"));
        }
    }
    for b in &listed {
        let Some(m) = model.bitmaps.get(&b.name) else {
            p.push(format!("bitmap {:?} appeared", b.name));
            continue;
        };
        let want = (
            1u64 << m.gbits.min(63),
            m.enabled,
            m.persistent,
            m.inconsistent,
        );
        let got = (b.granularity, b.recording, b.persistent, b.inconsistent);
        if want != got {
            p.push(format!(
                "bitmap {:?}: granularity {} recording {} persistent {} inconsistent {}, expected {} {} {} {}",
                b.name, got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
            ));
            continue;
        }
        if m.inconsistent {
            continue;
        }
        if let Some(want) = m.qemu_debug_sha256(model.size) {
            match d.debug_sha256(&b.name)? {
                Ok(h) if h == want => {}
                Ok(h) => p.push(format!(
                    "bitmap {:?}: QEMU's debug hash {h}, the model predicts {want} (set granules {})",
                    b.name,
                    spec_model::semantics::lifecycle::show(&m.bits)
                )),
                Err(e) => p.push(format!("bitmap {:?}: debug hash refused: {e}", b.name)),
            }
        }
        // An export of an inactive node would activate it, and a bitmap
        // an export holds cannot be exported a second time.
        // NBD carries no name with a NUL byte.
        let exportable = model.active
            && d.is_active()
            && !model.exported.contains(&b.name)
            && !b.name.contains('\0');
        if exportable && (how == Contents::HashAndNbd || !m.unspecified.is_empty()) {
            match d.read_dirty(&b.name)? {
                Ok(ranges) => {
                    let n = granules::nbits(model.size, m.gbits);
                    let got = granules::from_bytes(&ranges, m.gbits, n);
                    if !m.matches(&got) {
                        p.push(format!(
                            "bitmap {:?}: NBD dirty granules {}, the model predicts {}",
                            b.name,
                            spec_model::semantics::lifecycle::show(&got),
                            spec_model::semantics::lifecycle::show(&m.bits)
                        ));
                    }
                }
                Err(e) => p.push(format!(
                    "bitmap {:?}: QEMU refused to export it: {e}",
                    b.name
                )),
            }
        }
    }
    Ok(p)
}
