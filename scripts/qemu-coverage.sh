#!/usr/bin/env bash
# How much of QEMU's bitmap code the suite runs: line and branch coverage
# of block/qcow2-bitmap.c, block/dirty-bitmap.c,
# block/monitor/bitmap-qmp-cmds.c and the bitmap parts of block/qcow2.c,
# measured on a gcov build of QEMU (scripts/build-qemu.sh VERSION
# --coverage), for each of four activities and for all four together:
#
#   corpus     run --impl qemu@V-coverage --impl qemu-live@V-coverage --corpus corpus
#   ops        run --impl qemu@V-coverage --bitmap-ops --corpus corpus
#   images     campaign --impl qemu@V-coverage              (MINUTES)
#   sequences  campaign --impl qemu-live@V-coverage --sequences (MINUTES)
#
# and, only when named, the comparison of a coverage-guided image campaign
# with a blind one of the same seed and time, run side by side (not part
# of "all four together"):
#
#   guided     campaign --impl qemu@V-coverage --coverage-guided (MINUTES)
#   blind      campaign --impl qemu@V-coverage                   (MINUTES)
#
#   scripts/qemu-coverage.sh [--version 10.2] [--minutes 10] [--seed 1] [ACTIVITY...]
#   scripts/qemu-coverage.sh --collect ACTIVITY...   # only read the counters again
#
# Each activity writes its counters into its own tree (GCOV_PREFIX), so
# activities run side by side: corpus and ops together, then images and
# sequences together. Results under target/qemu-coverage/: ACTIVITY.json
# (gcovr), html/index.html (all four together), summary.md (the numbers).
# Programs run unsandboxed (--sandbox off): the sandbox would stop the
# counters being written. An activity already measured is reused unless
# its JSON is removed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
version=10.2
minutes=10
seed=1
acts=()
collect_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    corpus|ops|images|sequences|guided|blind) acts+=("$1"); shift ;;
    --collect) collect_only=1; shift ;;
    *) echo "usage: $0 [--version V] [--minutes N] [--seed S] [corpus|ops|images|sequences|guided|blind]..." >&2; exit 2 ;;
  esac
done
[ "${#acts[@]}" -gt 0 ] || acts=(corpus ops images sequences)

cache="${QCOW2_CONFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qcow2-conform}"
prefix=$("$root/scripts/build-qemu.sh" "$version" --coverage | tail -n 1)
src="$prefix/src/qemu"
build="$src/build-tools"
out="$root/target/qemu-coverage"
mkdir -p "$out"

gcovr_venv="$cache/gcovr-venv"
if ! "$gcovr_venv/bin/gcovr" --version >/dev/null 2>&1; then
  rm -rf "$gcovr_venv"
  python3 -m venv "$gcovr_venv"
  "$gcovr_venv/bin/pip" install -q --disable-pip-version-check gcovr==8.3
fi
gcovr="$gcovr_venv/bin/gcovr"

conform="${CONFORM:-$root/target/debug/qcow2-conform}"
[ -x "$conform" ] || (cd "$root" && cargo build -q -p conform --bin qcow2-conform)
impl="qemu@$version-coverage"
live="qemu-live@$version-coverage"

files=(block/qcow2-bitmap.c block/dirty-bitmap.c block/monitor/bitmap-qmp-cmds.c block/qcow2.c)
# Filters are matched against paths relative to where gcovr runs (the build
# directory).
filters=()
for f in "${files[@]}"; do filters+=(--filter "\.\./${f//./\\.}\$"); done

# One activity, its counters under $out/gcda/ACT (the build's absolute
# paths below it), read by gcovr into $out/ACT.json.
activity() {
  local act="$1" tree="$out/gcda/$1"
  rm -rf "$tree" "$out/$act-out" && mkdir -p "$tree"
  export GCOV_PREFIX="$tree" GCOV_PREFIX_STRIP=0
  local log="$out/$act.log"
  echo "qemu-coverage: $act (log $log)" >&2
  case "$act" in
    corpus) "$conform" run --impl "$impl" --impl "$live" --corpus "$root/corpus" --sandbox off \
              --json "$out/$act-report.json" >"$log" 2>&1 || true ;;
    ops) "$conform" run --impl "$impl" --bitmap-ops --corpus "$root/corpus" --sandbox off \
              --json "$out/$act-report.json" >"$log" 2>&1 || true ;;
    images|blind) "$conform" campaign --impl "$impl" --seed "$seed" --duration "${minutes}m" --sandbox off \
              --fail-on-findings none --out "$out/$act-out" >"$log" 2>&1 || true ;;
    guided) "$conform" campaign --impl "$impl" --coverage-guided --seed "$seed" --duration "${minutes}m" \
              --sandbox off --fail-on-findings none --out "$out/$act-out" >"$log" 2>&1 || true ;;
    sequences) "$conform" campaign --impl "$live" --sequences --seed "$seed" --duration "${minutes}m" \
              --sandbox off --fail-on-findings none --out "$out/$act-out" >"$log" 2>&1 || true ;;
  esac
  unset GCOV_PREFIX GCOV_PREFIX_STRIP
  collect "$act"
}

# The counters of activity ACT read by gcovr into $out/ACT.json: the block
# layer's counters (`block_*`) are put back beside their objects in the
# build tree, where gcov finds notes and sources at the paths it was
# compiled with, read, and removed again (one activity at a time: a lock).
collect() {
  local act="$1" tree="$out/gcda/$1"
  (
    flock 9
    find "$build" -name '*.gcda' -delete
    (cd "$tree$build" && find . -name 'block_*.gcda' | while read -r n; do cp "$n" "$build/$n"; done)
    (cd "$build" && "$gcovr" --root "$src" "${filters[@]}" \
      --gcov-ignore-parse-errors=all \
      --json "$out/$act.json" "$build") >>"$out/$act.log" 2>&1
    find "$build" -name '*.gcda' -delete
  ) 9>"$out/.collect.lock"
}

run_pair() {
  local pids=()
  for a in "$@"; do
    if [ -f "$out/$a.json" ]; then echo "qemu-coverage: $a already measured ($out/$a.json)" >&2; continue; fi
    activity "$a" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
if [ "$collect_only" = 1 ]; then
  for a in "${acts[@]}"; do collect "$a"; done
  exit 0
fi
want() { local a; for a in "${acts[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
first=(); second=()
for a in corpus ops; do want "$a" && first+=("$a"); done
for a in images sequences; do want "$a" && second+=("$a"); done
[ "${#first[@]}" -eq 0 ] || run_pair "${first[@]}"
[ "${#second[@]}" -eq 0 ] || run_pair "${second[@]}"
third=()
for a in guided blind; do want "$a" && third+=("$a"); done
[ "${#third[@]}" -eq 0 ] || run_pair "${third[@]}"

# All four together: one HTML report.
tracefiles=()
for a in corpus ops images sequences; do [ -f "$out/$a.json" ] && tracefiles+=(--add-tracefile "$out/$a.json"); done
mkdir -p "$out/html"
"$gcovr" --root "$src" "${tracefiles[@]}" --html-details "$out/html/index.html" \
  --json "$out/together.json" >/dev/null
python3 "$root/scripts/qemu-coverage-summary.py" "$src" "$out" >"$out/summary.md"
cat "$out/summary.md"
echo "qemu-coverage: HTML report: $out/html/index.html" >&2
