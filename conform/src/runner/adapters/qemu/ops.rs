//! The bitmap-operations check: QEMU's own tools change the bitmaps of a
//! private copy of a valid image, one operation at a time, and after each
//! one the reference model reads the result. The image must still conform,
//! its bitmaps extension must stay consistent while bitmaps remain, and
//! every bitmap must hold exactly what the operation implies:
//!
//! | step | expected |
//! |---|---|
//! | `qemu-img bitmap --add -g G N` | N new, enabled, granularity G, empty; the others unchanged |
//! | `--merge A` into N | N = A ∪ N, A's dirty areas rounded out to N's granularity |
//! | `--disable N`, then a `qemu-io` write | N unchanged; every enabled bitmap gains the written range |
//! | `--enable N`, then a write | N gains the written range too |
//! | `--clear A` | A empty, the others unchanged |
//! | `--remove N` | N gone, the others unchanged |
//! | `qemu-img measure -O qcow2` (clusters of 64 KiB and 4 KiB) | the `bitmaps` size is what the model computes for the image's bitmaps ([`super::measure`]); a difference is a note, not a problem: QEMU documents the field, the spec does not bind it |
//! | `qemu-img convert --bitmaps` | the new image conforms and has the same usable bitmaps, flags, granularities and bits |
//! | `qemu-img resize` (grow, then `--shrink` back) | the image conforms (tables sized for the new disk, tail bits clear); bits inside the old size kept; bits of the grown area recorded, not judged (the spec says nothing about them) |
//!
//! A refused operation is a note, and the image must then be unchanged.
//! Anything else wrong is a problem, and problems make the case
//! `corrupting` (see [`crate::runner::judge`](mod@crate::runner::judge)). The result is a
//! [`crate::runner::checks::OpsCheck`].

use super::tools::{failure, os, qemu_io_write, Toolset};
use crate::runner::checks::{OpStep, OpsCheck};
use crate::runner::corpus::image_state::{self, ModelBitmap as Bm, ReadError};
use crate::runner::process::{self, Limits, Proc};
use crate::runner::text::{short, show_ranges};
use spec_model::bitmaps::space::Planned;
use spec_model::semantics::{granules, Bitmap, Disk, Op};
use spec_model::{ExtensionState, Verdict};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// An image as the model reads it.
#[derive(Debug, Clone)]
struct State {
    size: u64,
    verdict: Verdict,
    extension: ExtensionState,
    error_rules: Vec<String>,
    bitmaps: BTreeMap<String, Bm>,
}

/// The model's reading of `path`, bitmaps by name.
fn read_state(path: &Path) -> Result<State, ReadError> {
    let s = image_state::read(path)?;
    Ok(State {
        size: s.size,
        verdict: s.verdict,
        extension: s.extension,
        error_rules: s.error_rules,
        bitmaps: s.bitmaps.into_iter().collect(),
    })
}

/// Range lists in messages: the first five.
fn show(r: &[(u64, u64)]) -> String {
    show_ranges(r, 5)
}

/// Differences between the bitmaps expected and those found.
fn compare(want: &BTreeMap<String, Bm>, got: &State) -> Vec<String> {
    let mut p = Vec::new();
    for (name, w) in want {
        let Some(g) = got.bitmaps.get(name) else {
            p.push(format!("bitmap {} is gone", short(name)));
            continue;
        };
        if (w.in_use, w.auto, w.gbits, w.usable) != (g.in_use, g.auto, g.gbits, g.usable) {
            p.push(format!(
                "bitmap {}: in_use={} auto={} granularity 2^{} usable={}, expected in_use={} auto={} granularity 2^{} usable={}",
                short(name),
                g.in_use,
                g.auto,
                g.gbits,
                g.usable,
                w.in_use,
                w.auto,
                w.gbits,
                w.usable
            ));
            continue;
        }
        if let (Some(wr), Some(gr)) = (&w.ranges, &g.ranges) {
            if wr != gr {
                p.push(format!(
                    "bitmap {}: dirty ranges {}, expected {}",
                    short(name),
                    show(gr),
                    show(wr)
                ));
            }
        }
    }
    for name in got.bitmaps.keys() {
        if !want.contains_key(name) {
            p.push(format!("bitmap {} appeared", short(name)));
        }
    }
    p
}

struct Ctx<'a> {
    tools: &'a Toolset,
    limits: &'a Limits,
    check: OpsCheck,
}

impl Ctx<'_> {
    /// Runs one program; `Err` when it crashed, hung or did not start (the
    /// check stops there).
    fn run(&mut self, program: &Path, args: Vec<OsString>) -> Result<Proc, ()> {
        let pinned = super::tools::pinned(&args).map_err(|e| {
            self.check
                .found
                .notes
                .push(format!("bitmap operations stopped: {e}"));
        })?;
        let cmd = self.tools.command(program, &pinned.args, self.limits);
        match process::run(cmd, self.limits.timeout).map(|mut p| {
            pinned.unpin(&mut p);
            p
        }) {
            Err(e) => {
                self.check
                    .found
                    .notes
                    .push(format!("bitmap operations stopped: {e}"));
                Err(())
            }
            Ok(p) => {
                self.check.found.commands.push(p.command.clone());
                if p.timed_out || p.signal.is_some() || p.sanitizer().is_some() {
                    self.check.found.process = Some(p);
                    return Err(());
                }
                Ok(p)
            }
        }
    }

    /// Why a tool's run failed (`None`: it succeeded).
    fn failure(p: &Proc) -> Option<String> {
        failure(p, &["failed", "rror"])
    }

    /// Runs `program args`, then reads `image` with the model and compares
    /// it with `want` (or, when QEMU refused, with `before`). Returns the
    /// new state, or `None` when the check cannot go on.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        op: &str,
        program: &Path,
        args: Vec<OsString>,
        image: &Path,
        before: &State,
        want: BTreeMap<String, Bm>,
        want_size: u64,
    ) -> Option<(State, bool)> {
        let p = self.run(program, args).ok()?;
        let error = Self::failure(&p);
        let mut s = OpStep {
            op: op.to_owned(),
            ok: error.is_none(),
            error: error.clone(),
            ..OpStep::default()
        };
        let after = match read_state(image) {
            Ok(a) => a,
            Err(e) => {
                s.problems
                    .push(format!("the model cannot read the image: {e}"));
                self.finish_step(s);
                return None;
            }
        };
        s.verdict_after = Some(after.verdict.as_str().to_owned());
        let mut go_on = true;
        if after.verdict == Verdict::Invalid {
            s.problems.push(format!(
                "the image no longer conforms: {}",
                after.error_rules.join(", ")
            ));
            go_on = false;
        } else {
            let (want, want_size) = match &error {
                Some(e) => {
                    self.check
                        .found
                        .notes
                        .push(format!("QEMU refused `{op}`: {e}"));
                    (before.bitmaps.clone(), before.size)
                }
                None => (want, want_size),
            };
            if after.size != want_size {
                s.problems.push(format!(
                    "virtual size {} instead of {want_size}",
                    after.size
                ));
                go_on = false;
            }
            let any_left = !want.is_empty();
            if any_left && after.extension != ExtensionState::Consistent {
                s.problems.push(format!(
                    "the bitmaps extension is no longer consistent ({:?}): every bitmap is lost",
                    after.extension
                ));
                go_on = false;
            } else if go_on {
                s.problems.extend(compare(&want, &after));
            }
        }
        self.finish_step(s);
        go_on.then_some((after, error.is_none()))
    }

    fn finish_step(&mut self, s: OpStep) {
        for p in &s.problems {
            self.check
                .found
                .problems
                .push(format!("after {}: {p}", s.op));
        }
        self.check.steps.push(s);
    }

    fn bitmap(&mut self, image: &Path, args: &[&str], name: &str) -> (String, Vec<OsString>) {
        let mut a: Vec<OsString> = vec!["bitmap".into(), "-f".into(), "qcow2".into()];
        a.extend(args.iter().map(OsString::from));
        a.push(image.into());
        a.push(name.into());
        let op = format!("qemu-img bitmap {} {}", args.join(" "), short(name));
        (op, a)
    }
}

/// Bitmap `b` (dirty byte ranges on a disk of `size` bytes) as the
/// semantic model holds it.
fn model_of(b: &Bm, size: u64) -> Bitmap {
    let n = granules::nbits(size, b.gbits);
    let bits = granules::from_bytes(b.ranges.as_deref().unwrap_or_default(), b.gbits, n);
    Bitmap::loaded(b.gbits, b.auto, false, bits)
}

/// Every enabled usable bitmap of `bms` gains `[offset, offset+len)`, as
/// the semantic model says.
fn written(bms: &BTreeMap<String, Bm>, offset: u64, len: u64, size: u64) -> BTreeMap<String, Bm> {
    let mut out = bms.clone();
    for b in out.values_mut() {
        if !(b.usable && b.auto && b.ranges.is_some()) {
            continue;
        }
        let mut m = model_of(b, size);
        m.record_write(offset, len, granules::nbits(size, b.gbits));
        b.ranges = Some(m.dirty_ranges(size));
    }
    out
}

/// `ranges` (dirty bytes at granularity `2^gbits`) after the disk is
/// resized to `new_size`, as the semantic model says: bits past the new
/// end dropped, bits of a grown area left out (unspecified).
fn resized(ranges: &[(u64, u64)], gbits: u8, old_size: u64, new_size: u64) -> Vec<(u64, u64)> {
    let b = Bm {
        usable: true,
        in_use: false,
        auto: false,
        gbits,
        ranges: Some(ranges.to_vec()),
    };
    let mut d = Disk::opened(old_size, [(String::new(), model_of(&b, old_size))]);
    d.apply(&Op::Resize { size: new_size });
    d.bitmaps[""].dirty_ranges(new_size)
}

/// A name no bitmap of `state` has.
fn fresh_name(state: &State) -> String {
    let mut name = "conform-ops".to_owned();
    let mut i = 1;
    while state.bitmaps.contains_key(&name) {
        name = format!("conform-ops-{i}");
        i += 1;
    }
    name
}

/// Runs the whole sequence on `image` (a private copy of a valid image
/// whose bitmaps extension is consistent); `work` is a scratch directory
/// for the converted copy.
pub fn run_qemu(tools: &Toolset, image: &Path, work: &Path, limits: &Limits) -> OpsCheck {
    let mut cx = Ctx {
        tools,
        limits,
        check: OpsCheck::default(),
    };
    let start = match read_state(image) {
        Ok(s) => s,
        Err(e) => {
            cx.check
                .found
                .notes
                .push(format!("bitmap operations skipped: {e}"));
            return cx.check;
        }
    };
    if start.verdict != Verdict::Valid || start.size == 0 {
        cx.check
            .found
            .notes
            .push("bitmap operations skipped: the image is not valid or the disk is empty".into());
        return cx.check;
    }
    sequence(&mut cx, image, work, start);
    cx.check
}

/// Sets bitmap `n`'s `auto` flag (`qemu-img bitmap --enable`/`--disable`),
/// then writes range `k` of the disk with qemu-io: the enabled bitmaps must
/// gain exactly that range, and `n` only when it was enabled.
#[allow(clippy::too_many_arguments)]
fn toggle_then_write(
    cx: &mut Ctx<'_>,
    image: &Path,
    cur: &State,
    n: &str,
    enable: bool,
    k: u64,
    pattern: u8,
    size: u64,
) -> Option<State> {
    let img = cx.tools.img.to_owned();
    let io = cx.tools.io.to_owned();
    let mut want = cur.bitmaps.clone();
    if let Some(b) = want.get_mut(n) {
        b.auto = enable;
    }
    let flag = if enable { "--enable" } else { "--disable" };
    let (op, args) = cx.bitmap(image, &[flag], n);
    let cur = cx.step(&op, &img, args, image, cur, want, size)?.0;
    let (w, l) = write_range(size, k);
    let want = written(&cur.bitmaps, w, l, size);
    let args = qemu_io_write(image, pattern, w, l);
    let state = if enable { "enabled" } else { "disabled" };
    let op = format!("qemu-io write {w} {l} (N {state})");
    Some(cx.step(&op, &io, args, image, &cur, want, size)?.0)
}

fn sequence(cx: &mut Ctx<'_>, image: &Path, work: &Path, start: State) -> Option<()> {
    let img = cx.tools.img.to_owned();
    let size = start.size;
    // A: the first usable bitmap with bits set (else any usable one).
    let a_name = start
        .bitmaps
        .iter()
        .filter(|(_, b)| b.usable)
        .max_by_key(|(_, b)| b.ranges.as_ref().is_some_and(|r| !r.is_empty()))
        .map(|(n, _)| n.clone());
    let a_gbits = a_name.as_ref().map(|n| start.bitmaps[n].gbits);
    // N's granularity differs from A's so that the merge crosses
    // granularities.
    let n_gbits: u8 = match a_gbits {
        Some(g) if g > 16 => 16,
        Some(g) => (g + 3).min(31),
        None => 16,
    };
    let n = fresh_name(&start);

    // 1. add
    let mut want = start.bitmaps.clone();
    want.insert(
        n.clone(),
        Bm {
            usable: true,
            in_use: false,
            auto: true,
            gbits: n_gbits,
            ranges: Some(Vec::new()),
        },
    );
    let g = (1u64 << n_gbits).to_string();
    let (op, args) = cx.bitmap(image, &["--add", "-g", &g], &n);
    let (mut cur, ok) = cx.step(&op, &img, args, image, &start, want, size)?;
    if !ok {
        return None;
    }

    // 2. merge A into N
    if let Some(a) = &a_name {
        let mut want = cur.bitmaps.clone();
        if let (Some(src), Some(nb)) = (cur.bitmaps.get(a), want.get_mut(&n)) {
            if src.ranges.is_some() {
                let mut d = Disk::opened(
                    size,
                    [
                        (a.clone(), model_of(src, size)),
                        (n.clone(), model_of(nb, size)),
                    ],
                );
                d.apply(&Op::Merge {
                    target: n.clone(),
                    sources: vec![a.clone()],
                });
                nb.ranges = Some(d.bitmaps[&n].dirty_ranges(size));
            }
        }
        let (op, args) = cx.bitmap(image, &["--merge", a], &n);
        cur = cx.step(&op, &img, args, image, &cur, want, size)?.0;
    }

    // 3. disable N, write: N unchanged, enabled bitmaps gain the range.
    cur = toggle_then_write(cx, image, &cur, &n, false, 1, 0x3c, size)?;
    // 4. enable N, write: N gains the range.
    cur = toggle_then_write(cx, image, &cur, &n, true, 2, 0xc3, size)?;

    // 5. clear A
    if let Some(a) = &a_name {
        let mut want = cur.bitmaps.clone();
        if let Some(b) = want.get_mut(a) {
            b.ranges = b.ranges.as_ref().map(|_| Vec::new());
        }
        let (op, args) = cx.bitmap(image, &["--clear"], a);
        cur = cx.step(&op, &img, args, image, &cur, want, size)?.0;
    }

    // 6. remove N
    let mut want = cur.bitmaps.clone();
    want.remove(&n);
    let (op, args) = cx.bitmap(image, &["--remove"], &n);
    cur = cx.step(&op, &img, args, image, &cur, want, size)?.0;

    // 7. measure, then convert --bitmaps: the space the bitmaps take in
    // the copy, and the copy has the same usable bitmaps.
    measure(cx, image, &cur);
    convert(cx, image, work, &cur)?;

    // 8. resize: grow by 1 MiB + 512 bytes, then shrink back.
    let grown = size + (1 << 20) + 512;
    // Contents are compared below, inside the old size only.
    let mut want = cur.bitmaps.clone();
    for b in want.values_mut() {
        b.ranges = None;
    }
    let args = vec![
        os("resize"),
        os("-q"),
        os("-f"),
        os("qcow2"),
        os(image),
        os(grown.to_string()),
    ];
    let before_grow = cur.clone();
    let (after, ok) = cx.step(
        &format!("qemu-img resize {grown}"),
        &img,
        args,
        image,
        &cur,
        want,
        grown,
    )?;
    if ok {
        grown_area(cx, &before_grow, &after, size);
    }
    cur = after;
    if ok {
        let mut want = cur.bitmaps.clone();
        for b in want.values_mut() {
            if let Some(r) = b.ranges.as_mut() {
                *r = resized(r, b.gbits, grown, size);
            }
        }
        let args = vec![
            os("resize"),
            os("-q"),
            os("-f"),
            os("qcow2"),
            os("--shrink"),
            os(image),
            os(size.to_string()),
        ];
        cx.step(
            &format!("qemu-img resize --shrink {size}"),
            &img,
            args,
            image,
            &cur,
            want,
            size,
        )?;
    }
    Some(())
}

/// After a grow: every bit inside the old size must be kept (a problem
/// otherwise); bits QEMU set in the grown area are only noted.
fn grown_area(cx: &mut Ctx<'_>, before: &State, after: &State, old_size: u64) {
    let mut problems = Vec::new();
    for (name, b) in &after.bitmaps {
        let (Some(r), Some(old)) = (
            &b.ranges,
            before.bitmaps.get(name).and_then(|x| x.ranges.as_ref()),
        ) else {
            continue;
        };
        let kept = resized(r, b.gbits, after.size, old_size);
        if kept != *old {
            problems.push(format!(
                "bitmap {}: inside the old size it marks {}, expected {} (bits lost or gained by the resize)",
                short(name),
                show(&kept),
                show(old)
            ));
        } else if *r != resized(old, b.gbits, old_size, after.size) {
            cx.check.found.notes.push(format!(
                "after growing from {old_size} to {} bytes, bitmap {} marks {} (the spec does not say what the grown area holds)",
                after.size,
                short(name),
                show(r)
            ));
        }
    }
    if let Some(step) = cx.check.steps.last_mut() {
        step.problems.extend(problems.iter().cloned());
        for p in problems {
            cx.check
                .found
                .problems
                .push(format!("after {}: {p}", step.op));
        }
    }
}

/// `qemu-img measure` for each destination cluster size: the `bitmaps`
/// size compared with the model's ([`super::measure`]); a difference and a
/// refusal are notes.
fn measure(cx: &mut Ctx<'_>, image: &Path, cur: &State) {
    let planned: Vec<Planned> = cur
        .bitmaps
        .iter()
        .map(|(n, b)| Planned {
            name_len: n.len(),
            granularity_bits: b.gbits,
        })
        .collect();
    for bits in super::measure::CLUSTER_BITS {
        let tools = cx.tools;
        let Ok(p) = cx.run(&tools.img, super::measure::arguments(image, bits)) else {
            return;
        };
        let op = format!("qemu-img measure -O qcow2 -o cluster_size={}", 1u64 << bits);
        let mut s = OpStep {
            op: op.clone(),
            error: Ctx::failure(&p),
            ..OpStep::default()
        };
        s.ok = s.error.is_none();
        match &s.error {
            Some(e) => cx
                .check
                .found
                .notes
                .push(format!("QEMU refused `{op}`: {e}")),
            // No spec sentence binds `qemu-img measure`: the size rests on
            // QEMU's own documentation, so a difference is noted, never
            // charged (it writes nothing, so it cannot corrupt).
            None => {
                for d in super::measure::judge(&p.stdout, &planned, cur.size, bits) {
                    cx.check.found.notes.push(format!(
                        "after {op}: {d} (QEMU's documented estimate, not a spec obligation: noted, not judged)"
                    ));
                }
            }
        }
        cx.finish_step(s);
    }
}

fn convert(cx: &mut Ctx<'_>, image: &Path, work: &Path, cur: &State) -> Option<()> {
    let out = work.join("converted.qcow2");
    let _ = std::fs::remove_file(&out);
    let broken = cur.bitmaps.values().any(|b| !b.usable);
    let mut args = vec![
        os("convert"),
        os("-f"),
        os("qcow2"),
        os("-O"),
        os("qcow2"),
        os("--bitmaps"),
    ];
    if broken {
        args.push(os("--skip-broken-bitmaps"));
    }
    args.push(os(image));
    args.push(os(&out));
    let tools = cx.tools;
    let p = cx.run(&tools.img, args).ok()?;
    let op = format!(
        "qemu-img convert --bitmaps{}",
        if broken { " --skip-broken-bitmaps" } else { "" }
    );
    let mut s = OpStep {
        op: op.clone(),
        error: Ctx::failure(&p),
        ..OpStep::default()
    };
    s.ok = s.error.is_none();
    if let Some(e) = &s.error {
        cx.check
            .found
            .notes
            .push(format!("QEMU refused `{op}`: {e}"));
        cx.finish_step(s);
        return Some(());
    }
    match read_state(&out) {
        Err(e) => s
            .problems
            .push(format!("the model cannot read the converted image: {e}")),
        Ok(conv) => {
            s.verdict_after = Some(conv.verdict.as_str().to_owned());
            let want: BTreeMap<String, Bm> = cur
                .bitmaps
                .iter()
                .filter(|(_, b)| b.usable)
                .map(|(n, b)| (n.clone(), b.clone()))
                .collect();
            if conv.verdict == Verdict::Invalid {
                s.problems.push(format!(
                    "the converted image does not conform: {}",
                    conv.error_rules.join(", ")
                ));
            } else if conv.size != cur.size {
                s.problems.push(format!(
                    "the converted image has virtual size {} instead of {}",
                    conv.size, cur.size
                ));
            } else if !want.is_empty() && conv.extension != ExtensionState::Consistent {
                s.problems.push(format!(
                    "the converted image's bitmaps extension is {:?}",
                    conv.extension
                ));
            } else {
                s.problems.extend(compare(&want, &conv));
            }
        }
    }
    cx.finish_step(s);
    Some(())
}

/// The `k`-th range the check writes: unaligned, 40000 bytes, away from
/// the runner's own write check range; clipped to the disk.
pub fn write_range(size: u64, k: u64) -> (u64, u64) {
    let offset = ((size / 5 * k) & !511).saturating_add(777).min(size - 1);
    (offset, (size - offset).min(40_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ranges() {
        let (o, l) = write_range(1 << 20, 2);
        assert!(o + l <= 1 << 20 && l == 40_000);
        assert_eq!(write_range(1000, 1).0 + write_range(1000, 1).1, 1000);
    }
}
