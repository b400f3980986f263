#!/usr/bin/env bash
# Benchmark: `qcow2-conform check` on sparse files whose apparent size is
# huge, against `qemu-img check` on the same files in the same run.
#
# Files (made from examples/bitmaps-example.qcow2, a few header fields
# edited, then extended with a hole; a few hundred KiB on disk each):
#   valid-16t   the example as is, 16 TiB - 4 KiB long (valid header)
#   l1-1t       l1_size 2^28 and size 2^50, 1 TiB long
#   dir-1t      bitmap_directory_size 0xFFFFFAD000, 1 TiB long
#
# Targets (ours): valid-16t <= 64 MiB peak RSS and <= 1 s;
#                 l1-1t     <= 256 MiB and <= 2 s.
# dir-1t must exit 2 (invalid: bitmaps.ext.directory-size, decided from
# its two entries without reading the claimed terabyte; no target).
#
# Environment: RUNS (default 5), BENCH_DIR (default /tmp/qcow2-conform-bench),
#   BIN (qcow2-conform binary; default: build the release one),
#   QEMU_TIMEOUT (seconds per qemu-img run, default 120).
# Measurement: bench/runone.c (CLOCK_MONOTONIC around fork+wait4, peak RSS
# from wait4's rusage), compiled as check.sh does.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
RUNS=${RUNS:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/qcow2-conform-bench}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-120}
die() { printf '[sparse] error: %s\n' "$*" >&2; exit 2; }
command -v qemu-img >/dev/null || die "qemu-img not found"
command -v cc >/dev/null || die "cc not found (for bench/runone.c)"
mkdir -p "$BENCH_DIR"
runone=$BENCH_DIR/runone
if [[ ! -x $runone || $here/runone.c -nt $runone ]]; then
    cc -O2 -o "$runone" "$here/runone.c" || die "cannot compile runone.c"
fi
if [[ -z ${BIN:-} ]]; then
    (cd "$root" && cargo build --release -p conform --quiet)
    BIN=$root/target/release/qcow2-conform
fi
[[ -x $BIN ]] || die "no binary at $BIN"

# make NAME LENGTH [OFFSET HEXBYTES]...
make() {
    local f=$BENCH_DIR/sparse-$1.qcow2 len=$2
    shift 2
    cp "$root/examples/bitmaps-example.qcow2" "$f"
    while (($#)); do
        # shellcheck disable=SC2059 # the format is the bytes, as \xHH escapes
        printf "$(printf '%s' "$2" | sed 's/../\\x&/g')" |
            dd of="$f" bs=1 seek="$1" conv=notrunc status=none
        shift 2
    done
    truncate -s "$len" "$f"
}
make valid-16t $(((1 << 44) - 4096))
make l1-1t $((1 << 40)) 24 0004000000000000 36 10000000
make dir-1t $((1 << 40)) 128 000000fffffad000

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
printf '| file | on disk (KiB) | tool | exit | median wall (s) | median peak RSS (MiB) | ours/qemu-img wall | ours/qemu-img RSS | target |\n'
printf '|---|---:|---|---:|---:|---:|---:|---:|---|\n'
for name in valid-16t l1-1t dir-1t; do
    f=$BENCH_DIR/sparse-$name.qcow2
    disk=$(du -k "$f" | cut -f1)
    : >"$BENCH_DIR/sp-ours" ; : >"$BENCH_DIR/sp-qemu"
    for _ in $(seq "$RUNS"); do
        "$runone" "$BIN" check "$f" >>"$BENCH_DIR/sp-ours" || true
        "$runone" timeout "$QEMU_TIMEOUT" qemu-img check -f qcow2 "$f" >>"$BENCH_DIR/sp-qemu" || true
    done
    wo=$(awk '{print $1}' "$BENCH_DIR/sp-ours" | median)
    ro=$(awk '{print $2}' "$BENCH_DIR/sp-ours" | median)
    eo=$(awk '{print $3}' "$BENCH_DIR/sp-ours" | median)
    wq=$(awk '{print $1}' "$BENCH_DIR/sp-qemu" | median)
    rq=$(awk '{print $2}' "$BENCH_DIR/sp-qemu" | median)
    eq=$(awk '{print $3}' "$BENCH_DIR/sp-qemu" | median)
    case $name in
        valid-16t) target=$(awk -v w="$wo" -v r="$ro" 'BEGIN {print (w <= 1 && r / 1024 <= 64) ? "met (<= 1 s, <= 64 MiB)" : "MISSED (<= 1 s, <= 64 MiB)"}') ;;
        l1-1t) target=$(awk -v w="$wo" -v r="$ro" 'BEGIN {print (w <= 2 && r / 1024 <= 256) ? "met (<= 2 s, <= 256 MiB)" : "MISSED (<= 2 s, <= 256 MiB)"}') ;;
        *) target="exit 2, invalid" ;;
    esac
    awk -v n="$name" -v d="$disk" -v wo="$wo" -v ro="$ro" -v eo="$eo" -v wq="$wq" -v rq="$rq" -v eq="$eq" -v t="$target" 'BEGIN {
        printf "| %s | %d | qcow2-conform check | %d | %.4f | %.1f | %.3f | %.3f | %s |\n", n, d, eo, wo, ro / 1024, wo / wq, ro / rq, t
        printf "| %s | %d | qemu-img check | %d | %.4f | %.1f | 1 | 1 | - |\n", n, d, eq, wq, rq / 1024
    }'
done
printf '\n%s runs per tool per file; %s; %s; load average %s\n' "$RUNS" "$("$BIN" --version 2>/dev/null || echo qcow2-conform)" \
    "$(qemu-img --version | head -n1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'dir-1t, ours: %s\n' "$("$BIN" check "$BENCH_DIR/sparse-dir-1t.qcow2" 2>&1 >/dev/null | head -n1)"
