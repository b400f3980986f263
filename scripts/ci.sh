#!/usr/bin/env bash
# Runs qcow2-conform's conformance corpus against one or more
# implementations, the way a CI job needs it: reports in one directory
# (report.json, junit.xml, report.html), an expectations file for the known
# outcomes, and the run's exit status as the job's. Works in any CI (see
# docs/ci.md; action.yml wraps it for GitHub Actions).
#
#   scripts/ci.sh [--impl IMPL]... [--corpus DIR] [--expect FILE]
#                 [--fail-on OUTCOMES] [--out DIR] [--bin PATH] [-- RUN-ARGS...]
#
#   --impl IMPL      implementation under test (repeatable; default: qemu)
#   --corpus DIR     corpus directory (default: the bundled corpus/)
#   --expect FILE    expectations file; the job fails only on changes
#   --fail-on LIST   outcomes that fail the job (run --fail-on)
#   --out DIR        where the reports go (default: qcow2-conform-report)
#   --bin PATH       the qcow2-conform binary (default: $QCOW2_CONFORM_BIN,
#                    else qcow2-conform on PATH, else built from this checkout)
#   -- RUN-ARGS      passed to `qcow2-conform run` as they are
#
# Exit status: that of `qcow2-conform run` (0 all as expected, 2 failing or
# changed outcomes, 1 the run could not complete).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
impls=()
corpus="$root/corpus"
expect=""
fail_on=""
out="qcow2-conform-report"
bin="${QCOW2_CONFORM_BIN:-}"
extra=()

need() { [ "$#" -ge 2 ] || { echo "ci.sh: $1 needs a value" >&2; exit 1; }; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --impl) need "$@"; impls+=("$2"); shift 2 ;;
    --corpus) need "$@"; corpus="$2"; shift 2 ;;
    --expect) need "$@"; expect="$2"; shift 2 ;;
    --fail-on) need "$@"; fail_on="$2"; shift 2 ;;
    --out) need "$@"; out="$2"; shift 2 ;;
    --bin) need "$@"; bin="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ci.sh: unknown argument $1 (try --help)" >&2; exit 1 ;;
  esac
done
[ "${#impls[@]}" -gt 0 ] || impls=(qemu)

if [ -z "$bin" ]; then
  if command -v qcow2-conform >/dev/null 2>&1; then
    bin="$(command -v qcow2-conform)"
  else
    echo "ci.sh: building qcow2-conform (release) from $root" >&2
    (cd "$root" && cargo build --release --quiet -p conform --bin qcow2-conform)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/qcow2-conform"
  fi
fi

mkdir -p "$out"
args=(run --corpus "$corpus"
      --json "$out/report.json" --junit "$out/junit.xml" --html "$out/report.html")
for i in "${impls[@]}"; do args+=(--impl "$i"); done
[ -z "$expect" ] || args+=(--expect "$expect")
[ -z "$fail_on" ] || args+=(--fail-on "$fail_on")
args+=("${extra[@]}")

echo "ci.sh: $bin ${args[*]}" >&2
status=0
"$bin" "${args[@]}" || status=$?
case "$status" in
  0) echo "ci.sh: every outcome as expected; reports in $out/" >&2 ;;
  2) echo "ci.sh: FAILED: outcomes failed or changed (listed above); reports in $out/" >&2 ;;
  *) echo "ci.sh: FAILED: the run could not complete (status $status); reports in $out/" >&2 ;;
esac
exit "$status"
