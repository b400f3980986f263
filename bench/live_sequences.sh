#!/usr/bin/env bash
# The live sequence campaign's cost: operations per second of
# `campaign --impl qemu-live --sequences` (the semantic model as the oracle:
# QEMU's debug hash after every operation, the format model on the file at
# every restart and crash) against a bare loop of the same operations over
# the same QMP and NBD clients (`--bare`: nothing predicted or compared),
# on the same seed and sequences. Findings are counted, not minimised
# (`--no-minimise`), so that both runs do the same work.
#
# With WHAT=chains, the same for the backup-chain campaign
# (`--backup-chains`: chains per minute and incremental backups per second,
# each chain restored and compared at every backup point) against
# `--bare` (the same guest writes, backup jobs and pulls, nothing read
# back, predicted or compared).
#
# Each round prints both modes and the ratio bare/oracle of their rates.
#
# Usage: [BIN=path] [WHAT=sequences|chains] bench/live_sequences.sh [COUNT] [ROUNDS]   (defaults 60, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-60}
rounds=${2:-3}
# BIN=path uses an already built binary instead of building the release one.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p conform --bin qcow2-conform
  BIN=target/release/qcow2-conform
fi
bin=$BIN
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "qemu-storage-daemon: $(qemu-storage-daemon --version | head -1)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
what=${WHAT:-sequences}
case "$what" in
  sequences) kind=(--sequences); count=operations; unit=sequences ;;
  chains) kind=(--backup-chains); count=incrementals; unit=chains ;;
  *) echo "WHAT must be sequences or chains" >&2; exit 1 ;;
esac
printf '%-7s %-6s %10s %12s %10s %12s\n' mode round "$unit" "$count" seconds "${count}_per_s"
for r in $(seq 1 "$rounds"); do
  rates=()
  for mode in bare oracle; do
    flags=()
    [ "$what" = sequences ] && flags+=(--no-minimise)
    [ "$mode" = bare ] && flags+=(--bare)
    rm -rf "$out/$mode"
    start=$(date +%s.%N)
    "$bin" campaign --impl qemu-live "${kind[@]}" --seed 1 --max-cases "$n" --duration 1h \
      --out "$out/$mode" --fail-on-findings none "${flags[@]}" 2>/dev/null >/dev/null
    end=$(date +%s.%N)
    ops=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['outcomes'].get(sys.argv[2],0))" "$out/$mode/state.json" "$count")
    line=$(python3 -c "import sys; n,o,a,b=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]),float(sys.argv[4]); s=b-a; print(f'{sys.argv[5]:<7} {sys.argv[6]:<6} {n:>10} {o:>12} {s:>10.2f} {o/s:>12.1f}   {60*n/s:.1f} {sys.argv[7]}/min')" "$n" "$ops" "$start" "$end" "$mode" "$r" "$unit")
    echo "$line"
    rates+=("$(echo "$line" | awk '{print $6}')")
  done
  python3 -c "import sys; b,o=float(sys.argv[1]),float(sys.argv[2]); print(f'round {sys.argv[3]}: bare/oracle = {b/o:.2f}x')" "${rates[0]}" "${rates[1]}" "$r"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
