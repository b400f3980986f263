#!/usr/bin/env bash
# Benchmark: the runner's peak RSS while an exec adapter prints to stdout
# without end (issue 11: 4.7 GB at `--timeout 2 --jobs 1` before the output
# caps). Every `observe` runs `yes`; the runner keeps 16 MiB of stdout,
# ends the program at the cap and judges the case `crash` ("protocol
# answer larger than 16777216 bytes").
#
# Target: peak RSS <= 256 MiB.
#
# Environment:
#   JOBS=N          workers (default 1, as in the issue; 2 doubles the buffers)
#   BENCH_DIR=DIR   work dir (default /tmp/qcow2-conform-bench-rss)
#   BIN=PATH        use this qcow2-conform binary instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-1}
DIR=${BENCH_DIR:-/tmp/qcow2-conform-bench-rss}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p conform
  BIN=${CARGO_TARGET_DIR:-target}/release/qcow2-conform
fi
rm -rf "$DIR" && mkdir -p "$DIR"
"$BIN" generate --valid --seed 2 --count 6 --out "$DIR/corpus" >/dev/null
cat > "$DIR/endless.sh" <<'SH'
#!/bin/sh
case "$1" in
capabilities) echo '{"protocol":1,"capabilities":["observe"]}';;
observe) exec yes;;
esac
SH
/usr/bin/time -f '%M %e' -o "$DIR/time" "$BIN" run --impl "exec:sh $DIR/endless.sh" \
  --corpus "$DIR/corpus" --json "$DIR/report.json" --timeout 2 --jobs "$JOBS" \
  --fail-on none >/dev/null
read -r kib secs < "$DIR/time"
crashes=$(grep -o 'protocol answer larger than 16777216 bytes' "$DIR/report.json" | wc -l)
echo "cases: 6, jobs: $JOBS, peak RSS: $((kib / 1024)) MiB, wall: ${secs} s, mentions of the cap in the report: $crashes (2 per case)"
[ "$kib" -le $((256 * 1024)) ] || { echo "target missed: peak RSS > 256 MiB"; exit 1; }
