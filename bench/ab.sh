#!/usr/bin/env bash
# A/B benchmark: two builds of `qcow2-conform check` on the images that
# bench/check.sh makes, run alternately (A, B, A, B, ...) so that machine
# load falls on both alike. For refactors that must not slow the model:
# reports each build's median wall time and peak RSS per image and the
# ratio B/A.
#
# Usage: bench/ab.sh BIN_A BIN_B      (run bench/check.sh once first, for
#                                      the images and the runone helper)
# Environment: RUNS (default 21), BENCH_DIR (default as check.sh),
#              IMAGES (default "big dense")
set -euo pipefail
a=${1:?usage: ab.sh BIN_A BIN_B}
b=${2:?usage: ab.sh BIN_A BIN_B}
RUNS=${RUNS:-21}
BENCH_DIR=${BENCH_DIR:-/tmp/qcow2-conform-bench}
IMAGES=${IMAGES:-big dense}
runone=$BENCH_DIR/runone
[[ -x $runone ]] || { echo "ab: no $runone: run bench/check.sh first" >&2; exit 2; }

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

printf '| image | A median wall (s) | B median wall (s) | B/A | A peak RSS (KiB) | B peak RSS (KiB) |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for img in $IMAGES; do
    path=$BENCH_DIR/$img.qcow2
    [[ -f $path ]] || { echo "ab: no $path: run bench/check.sh first" >&2; exit 2; }
    : > "$BENCH_DIR/ab-$img-a" ; : > "$BENCH_DIR/ab-$img-b"
    for _ in $(seq "$RUNS"); do
        for side in a b; do
            bin=$a; [[ $side == b ]] && bin=$b
            # runone prints "WALL_S MAXRSS_KIB EXIT" on stdout (the
            # program's own output goes to /dev/null).
            "$runone" "$bin" check --json "$path" >>"$BENCH_DIR/ab-$img-$side" || true
        done
    done
    wa=$(awk '{print $1}' "$BENCH_DIR/ab-$img-a" | median)
    wb=$(awk '{print $1}' "$BENCH_DIR/ab-$img-b" | median)
    ra=$(awk '{print $2}' "$BENCH_DIR/ab-$img-a" | median)
    rb=$(awk '{print $2}' "$BENCH_DIR/ab-$img-b" | median)
    printf '| %s | %s | %s | %.3f | %s | %s |\n' "$img" "$wa" "$wb" "$(echo "$wb / $wa" | bc -l)" "$ra" "$rb"
done
printf '\n%s runs per build per image, alternating; load average %s\n' "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)"
