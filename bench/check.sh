#!/usr/bin/env bash
# Benchmark: `qcow2-conform check` against `qemu-img check` on the same
# images, in the same run, taking medians over several alternating runs.
#
# Images (built once, then reused while the recipe stamp matches):
#   big    1 TiB virtual, 64 KiB clusters, 8 auto bitmaps (default
#          granularity), then 256 MiB of 0x5a at offset 0 and 256 MiB at 500 GiB
#   dense  8 GiB virtual, 512-byte clusters, 4 auto bitmaps at granularity
#          512, then 16 MiB of 0x5a at each of 16 offsets 512 MiB apart
# The bitmaps are added before the writes, so they record them; the script
# checks that every bitmap reports a non-zero set_bits count.
#
# Targets (per image):
#   wall:  median(ours) / median(qemu-img)  <= 0.5 (dense), <= 1.0 (big)
#   RSS:   median peak RSS(ours) <= median peak RSS(qemu-img) + 8 MiB
#
# Environment:
#   RUNS=N          timed runs per tool per image (default 7)
#   BENCH_DIR=DIR   work dir for images, helper and results
#                   (default /tmp/qcow2-conform-bench)
#   STRICT=1        exit 1 if any target is missed (default: report only)
#   JSON_OUT=FILE   where to write the JSON results (default BENCH_DIR/results.json)
#   MD_OUT=FILE     where to write the markdown table (default BENCH_DIR/results.md)
#   IMAGES="big dense"  which images to run (default both)
#   BIN=PATH        use this qcow2-conform binary instead of building one
#   TIMER=gnu-time  measure with /usr/bin/time even when cc is available
#
# Measurement: each run is started by a small C helper (bench/runone.c) that
# reads CLOCK_MONOTONIC around fork()+wait4() and takes the peak RSS from the
# rusage wait4() returns for that one child. Without a C compiler the script
# falls back to GNU time (`/usr/bin/time -f '%e %M'`, 10 ms resolution).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

RUNS=${RUNS:-7}
BENCH_DIR=${BENCH_DIR:-/tmp/qcow2-conform-bench}
STRICT=${STRICT:-0}
JSON_OUT=${JSON_OUT:-$BENCH_DIR/results.json}
MD_OUT=${MD_OUT:-$BENCH_DIR/results.md}
IMAGES=${IMAGES:-big dense}

# Bump when the image recipe changes, so old images are rebuilt.
RECIPE=2

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 2; }

# Relative output paths are taken from the directory the script was started in.
case $JSON_OUT in /*) ;; *) JSON_OUT=$PWD/$JSON_OUT ;; esac
case $MD_OUT in /*) ;; *) MD_OUT=$PWD/$MD_OUT ;; esac
case $RUNS in '' | *[!0-9]* | 0) die "RUNS must be a positive integer" ;; esac
for tool in qemu-img qemu-io python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
mkdir -p "$BENCH_DIR"

# --- 1. the binary -----------------------------------------------------------
if [[ -n ${BIN:-} ]]; then
    ours=$BIN
else
    log "building qcow2-conform (release)"
    (cd "$root" && cargo build --release -p conform --quiet)
    target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    ours=$target_dir/release/qcow2-conform
fi
[[ -x $ours ]] || die "no binary at $ours"
qemu_img=$(command -v qemu-img)

# --- 2. the measuring helper -------------------------------------------------
runone=$BENCH_DIR/runone
timer=runone
if [[ ${TIMER:-} == gnu-time && -x /usr/bin/time ]]; then
    timer=gnu-time
elif command -v cc >/dev/null; then
    if [[ ! -x $runone || $here/runone.c -nt $runone ]]; then
        cc -O2 -o "$runone" "$here/runone.c" || die "cannot compile runone.c"
    fi
elif [[ -x /usr/bin/time ]]; then
    timer=gnu-time
    log "no C compiler: falling back to /usr/bin/time (10 ms resolution)"
else
    die "need either cc or GNU time at /usr/bin/time"
fi

# measure PROGRAM ARG... -> prints "WALL_S MAXRSS_KIB EXIT"
measure() {
    if [[ $timer == runone ]]; then
        "$runone" "$@"
    else
        local f=$BENCH_DIR/.time.$$ rc=0
        /usr/bin/time -o "$f" -f '%e %M' "$@" >/dev/null 2>&1 || rc=$?
        printf '%s %s\n' "$(cat "$f")" "$rc"
        rm -f "$f"
    fi
}

# --- 3. the images -----------------------------------------------------------
make_big() {
    local img=$1
    qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" 1T
    for i in 0 1 2 3 4 5 6 7; do
        qemu-img bitmap --add "$img" "b$i"
    done
    local args=() off
    for base in 0 $((500 << 30)); do
        for chunk in 0 1 2 3; do # 4 x 64 MiB = 256 MiB
            off=$((base + chunk * (64 << 20)))
            args+=(-c "write -P 0x5a $off 64M")
        done
    done
    qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null
}

make_dense() {
    local img=$1
    qemu-img create -q -f qcow2 -o cluster_size=512 "$img" 8G
    for i in 0 1 2 3; do
        qemu-img bitmap --add -g 512 "$img" "d$i"
    done
    local args=()
    for i in $(seq 0 15); do
        args+=(-c "write -P 0x5a $((i * (512 << 20))) 16M")
    done
    qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null
}

# expected bitmap count and set bits per bitmap
declare -A want_bitmaps=([big]=8 [dense]=4)
declare -A want_bits=([big]=$(((512 << 20) / 65536)) [dense]=$(((256 << 20) / 512)))

qemu_ver=$(qemu-img --version | head -n1)
for name in $IMAGES; do
    declare -F "make_$name" >/dev/null || die "unknown image '$name'"
    img=$BENCH_DIR/$name.qcow2
    stamp=$BENCH_DIR/$name.stamp
    want_stamp="recipe=$RECIPE $qemu_ver"
    if [[ -f $img && -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
        log "reusing $img"
        continue
    fi
    log "creating $img"
    rm -f "$img" "$stamp" "$img.tmp"
    start=$SECONDS
    "make_$name" "$img.tmp"
    mv "$img.tmp" "$img"
    printf '%s\n' "$want_stamp" >"$stamp"
    log "created $img in $((SECONDS - start)) s"
done

# --- 4. both tools must call the images clean ---------------------------------
for name in $IMAGES; do
    img=$BENCH_DIR/$name.qcow2
    if ! qemu-img check -q -f qcow2 "$img" >/dev/null; then
        die "qemu-img check reports $img not clean"
    fi
    rc=0
    "$ours" check --json "$img" >"$BENCH_DIR/$name.verdict.json" || rc=$?
    [[ $rc -eq 0 ]] || die "qcow2-conform check $img exited $rc (want 0 = valid)"
    python3 - "$BENCH_DIR/$name.verdict.json" "${want_bitmaps[$name]}" "${want_bits[$name]}" <<'EOF' ||
import json, sys
path, nmaps, nbits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open(path))
maps = r.get("bitmaps", [])
bad = []
if r.get("verdict") != "valid":
    bad.append(f"verdict {r.get('verdict')!r}")
if len(maps) != nmaps:
    bad.append(f"{len(maps)} bitmaps, want {nmaps}")
for b in maps:
    if not b.get("set_bits"):
        bad.append(f"bitmap {b.get('name')!r} has no set bits")
    elif b["set_bits"] != nbits:
        bad.append(f"bitmap {b.get('name')!r} has {b['set_bits']} set bits, want {nbits}")
if bad:
    sys.exit("; ".join(bad))
EOF
        die "unexpected verdict for $img"
    log "$name: both tools report clean; ${want_bitmaps[$name]} bitmaps x ${want_bits[$name]} set bits"
done

# --- 5. warm up, then alternate timed runs ------------------------------------
samples=$BENCH_DIR/samples.tsv
: >"$samples"
# Other work on the machine skews short runs; record the load around them.
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
for name in $IMAGES; do
    img=$BENCH_DIR/$name.qcow2
    cmd_ours=("$ours" check "$img")
    cmd_qemu=("$qemu_img" check -f qcow2 "$img")
    # Pull the metadata both tools read into the page cache (the data
    # clusters are never read by either, and reading the sparse 1 TiB file
    # whole would be pointless).
    for _ in 1 2; do
        measure "${cmd_ours[@]}" >/dev/null
        measure "${cmd_qemu[@]}" >/dev/null
    done
    log "$name: $RUNS alternating runs per tool"
    for ((i = 1; i <= RUNS; i++)); do
        # Alternate which tool goes first, so neither always follows the other.
        if ((i % 2)); then order="ours qemu-img"; else order="qemu-img ours"; fi
        for tool in $order; do
            if [[ $tool == ours ]]; then
                read -r wall rss rc < <(measure "${cmd_ours[@]}")
            else
                read -r wall rss rc < <(measure "${cmd_qemu[@]}")
            fi
            [[ $rc -eq 0 ]] || die "$tool on $name exited $rc during run $i"
            printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$tool" "$i" "$wall" "$rss" >>"$samples"
        done
    done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
revision=$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)

# --- 6. medians, ratios, targets ---------------------------------------------
mkdir -p "$(dirname "$JSON_OUT")" "$(dirname "$MD_OUT")"
status=0
python3 - "$samples" "$JSON_OUT" "$MD_OUT" "$RUNS" "$timer" "$ours" "$qemu_ver" \
    "$load_before" "$load_after" "$revision" <<'EOF' || status=$?
import json, statistics, sys
samples, json_out, md_out, runs, timer, ours, qemu_ver, load0, load1, rev = sys.argv[1:11]
WALL_TARGET = {"big": 1.0, "dense": 0.5}
RSS_SLACK_MIB = 8.0

data = {}
for line in open(samples):
    name, tool, run, wall, rss = line.rstrip("\n").split("\t")
    d = data.setdefault(name, {}).setdefault(tool, {"wall_s": [], "rss_kib": []})
    d["wall_s"].append(float(wall))
    d["rss_kib"].append(int(rss))

result = {"runs": int(runs), "timer": timer, "ours": ours, "revision": rev,
          "qemu_img": qemu_ver, "loadavg_before": load0, "loadavg_after": load1,
          "targets": {"wall_ratio_max": WALL_TARGET, "rss_slack_mib": RSS_SLACK_MIB},
          "images": {}}
rows, missed = [], []
for name, tools in data.items():
    med = {t: {"wall_s": statistics.median(v["wall_s"]),
               "rss_mib": statistics.median(v["rss_kib"]) / 1024} for t, v in tools.items()}
    o, q = med["ours"], med["qemu-img"]
    ratio = o["wall_s"] / q["wall_s"]
    wall_ok = ratio <= WALL_TARGET[name]
    rss_ok = o["rss_mib"] <= q["rss_mib"] + RSS_SLACK_MIB
    if not wall_ok:
        missed.append(f"{name}: wall ratio {ratio:.3f} > {WALL_TARGET[name]}")
    if not rss_ok:
        missed.append(f"{name}: RSS {o['rss_mib']:.1f} MiB > {q['rss_mib']:.1f} + {RSS_SLACK_MIB} MiB")
    result["images"][name] = {
        "samples": tools, "median": med, "wall_ratio": ratio,
        "wall_target": WALL_TARGET[name], "wall_met": wall_ok,
        "rss_delta_mib": o["rss_mib"] - q["rss_mib"], "rss_met": rss_ok,
    }
    rows.append(f"| {name} | qcow2-conform check | {o['wall_s']:.4f} | {o['rss_mib']:.1f} "
                f"| {ratio:.3f} (target <= {WALL_TARGET[name]}) | wall {'yes' if wall_ok else 'NO'}, "
                f"RSS {'yes' if rss_ok else 'NO'} ({o['rss_mib'] - q['rss_mib']:+.1f} MiB, target <= +{RSS_SLACK_MIB:g}) |")
    rows.append(f"| {name} | qemu-img check | {q['wall_s']:.4f} | {q['rss_mib']:.1f} | 1 | - |")
result["all_met"] = not missed
result["missed"] = missed

md = ["| image | tool | median wall (s) | median peak RSS (MiB) | wall ratio ours/qemu-img | target met |",
      "|---|---|---:|---:|---|---|", *rows]
open(md_out, "w").write("\n".join(md) + "\n")
json.dump(result, open(json_out, "w"), indent=2)
print("\n".join(md))
print(f"\n{runs} runs per tool per image, timer: {timer}, revision {rev}, "
      f"load average before/after: {load0} / {load1}")
if missed:
    print("targets missed: " + "; ".join(missed))
    sys.exit(3)
print("all targets met")
EOF
log "JSON: $JSON_OUT  markdown: $MD_OUT"
if ((status == 3)); then
    [[ $STRICT == 1 ]] && exit 1
elif ((status != 0)); then
    die "summary step failed"
fi
exit 0
