#!/usr/bin/env bash
# Benchmark: generator throughput (build + model check, in memory, one core)
# against making comparable images with QEMU's own tools in the same run.
#
# Ours:  generator/examples/throughput.rs, pinned to one core with taskset,
#        random specs from generator::Config::small() (64 KiB clusters, up to
#        64 MiB virtual, up to 4 bitmaps, up to 6 guest writes), each built
#        in memory and checked by spec_model::check_bytes. REPEATS runs of
#        SECONDS each; the median rate is reported.
# QEMU:  per image, `qemu-img create` (64 MiB, 64 KiB clusters), two
#        `qemu-img bitmap --add`, and one `qemu-io` write, on tmpfs-backed
#        /dev/shm when available; QEMU_IMAGES images, pinned to the same core.
#        This makes images without any checking, so it is a floor for the
#        real alternative.
# Target: at least 1,000 images per second per core.
#
# Environment: SECONDS_PER_RUN (default 5), REPEATS (default 3),
# QEMU_IMAGES (default 40), OUT (markdown table, default stdout only).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECONDS_PER_RUN:-5}
repeats=${REPEATS:-3}
qn=${QEMU_IMAGES:-40}
pin="taskset -c 0"
command -v taskset >/dev/null || pin=""

cargo build --release -q -p generator --example throughput
bin=target/release/examples/throughput

rates=()
for r in $(seq 1 "$repeats"); do
  line=$($pin "$bin" "$secs" "$r")
  echo "[bench] run $r: $line" >&2
  rates+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_second"])' "$line")")
done
ours=$(printf '%s\n' "${rates[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')

work=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s.%N)
for i in $(seq 1 "$qn"); do
  img="$work/q$i.qcow2"
  $pin qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" 64M
  $pin qemu-img bitmap --add "$img" b0
  $pin qemu-img bitmap --add -g 1M "$img" b1
  $pin qemu-io -c "write -P 0x5a $((i * 65536)) 128k" "$img" >/dev/null
done
end=$(date +%s.%N)
qemu=$(python3 -c "print(round($qn / ($end - $start), 1))")
ratio=$(python3 -c "print(round($ours / $qemu, 1))")
met=$(python3 -c "print('yes' if $ours >= 1000 else 'NO')")

table="| method | images per second (one core) | ratio | target >= 1000/s |
|---|---:|---:|---|
| qcow2-conform generator: build + model check, in memory (median of $repeats x ${secs}s) | $ours | $ratio | $met |
| qemu-img create + 2 x bitmap --add + qemu-io write ($qn images) | $qemu | 1 | - |"
echo "$table"
if [ -n "${OUT:-}" ]; then echo "$table" > "$OUT"; fi
