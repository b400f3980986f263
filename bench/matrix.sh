#!/usr/bin/env bash
# Benchmark: the full matrix, every implementation over the shared corpus
# with the write check on, 2 workers:
#
#   qcow2-conform run --impl qemu --impl qemu@7.2 --impl qcow --impl libqcow \
#     --impl libqcow@20260703 --impl imago --impl qcow2-rs --impl qcow2 \
#     --impl dissect@3.21 --impl qemu-live --corpus corpus --jobs 2
#
# Prints the wall time and the rate in (case, implementation) runs per
# second, and each implementation's share (the sum of its case durations
# from the JSON report), the processor time of the run and everything it
# started (GNU time), and the hangs. Needs what scripts/setup.sh installs.
#
# Environment:
#   RUNS=N   timed runs (default 1)
#   JOBS=N   workers (default 2)
#   TIMEOUT=S the per-process time limit (run --timeout; default: run's, 30)
#   BIN=PATH use this qcow2-conform binary instead of building a release one
#   KEEP=PREFIX keep each run's JSON report as PREFIX.rN.json
#   ORDER_FROM=REPORT start the longest runs of this earlier JSON report
#            first (run --order-from); with RUNS>1, each later run orders
#            itself from the run before it
#   STEP_ASIDE=N programs that may wait out their limit aside (run
#            --step-aside; default: run's, 4; 0 keeps each on its worker)
#   STALL=S  processor seconds a program may spin without a read, a write
#            or a wait before it is a hang (run --stall; default: run's,
#            2; 0 ends hangs only at the time limit)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1}
JOBS=${JOBS:-2}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p conform
  BIN=${CARGO_TARGET_DIR:-target}/release/qcow2-conform
fi
impls=(qemu qemu@7.2 qcow libqcow libqcow@20260703 imago qcow2-rs qcow2 dissect@3.21 qemu-live)
args=()
[ -z "${TIMEOUT:-}" ] || args+=(--timeout "$TIMEOUT")
[ -z "${STEP_ASIDE:-}" ] || args+=(--step-aside "$STEP_ASIDE")
[ -z "${STALL:-}" ] || args+=(--stall "$STALL")
for i in "${impls[@]}"; do args+=(--impl "$i"); done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: $BIN run ${args[*]} --corpus corpus --jobs $JOBS --fail-on none --json REPORT"
order=${ORDER_FROM:-}
for r in $(seq 1 "$RUNS"); do
  order_args=()
  [ -z "$order" ] || { order_args=(--order-from "$order"); echo "order from: $order"; }
  start=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$out/r$r.cpu" "$BIN" run "${args[@]}" "${order_args[@]}" --corpus corpus --jobs "$JOBS" --fail-on none --json "$out/r$r.json" >/dev/null 2>"$out/r$r.err" || true
  end=$(date +%s.%N)
  read -r user sys < "$out/r$r.cpu"
  echo "cpu: user ${user} s, system ${sys} s (the run and everything it started)"
  if [ -n "${ORDER_FROM:-}" ]; then order=$out/r$r.json; fi
  [ -z "${KEEP:-}" ] || cp "$out/r$r.json" "$KEEP.r$r.json"
  python3 - "$out/r$r.json" "$start" "$end" <<'PY'
import json, sys
from collections import defaultdict
report = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
cases = report["cases"]
runs = sum(len(c["results"]) for c in cases)
print(f"run: {len(cases)} cases x {runs // max(len(cases), 1)} implementations = {runs} runs in {wall:.1f} s: {runs / wall:.2f} runs/s")
busy = defaultdict(int)
for c in cases:
    for r in c["results"]:
        busy[r["implementation"]] += r["observation"].get("duration_ms", 0)
for name, ms in sorted(busy.items(), key=lambda kv: -kv[1]):
    print(f"  {name:18} {ms / 1000:7.1f} s of observing")
hung = [(c["id"], r["implementation"], r["observation"].get("duration_ms", 0),
         r["observation"].get("stalled_ms"))
        for c in cases for r in c["results"] if r["outcome"]["kind"] == "hang"]
print(f"hangs: {len(hung)}, {sum(ms for _, _, ms, _ in hung) / 1000:.1f} s of observing")
for case, impl, ms, spun in hung:
    how = f"a stall, {spun / 1000:.1f} s spun" if spun is not None else "the time limit"
    print(f"  {impl} {case}: {ms / 1000:.1f} s ({how})")
PY
  echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
done
