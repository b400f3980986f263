#!/usr/bin/env bash
# Runs this corpus against one or more implementations the way a CI job
# needs it: reports in one directory (report.json, junit.xml, report.html),
# an expectations file for the known outcomes, and the run's exit status as
# the job's. Needs only the qcow2-conform binary on PATH (or --bin); see
# CI.md beside this script.
#
#   bash ci.sh --impl IMPL [--impl IMPL]... [--expect FILE] [--record FILE]
#              [--fail-on OUTCOMES] [--out DIR] [--bin PATH] [--corpus DIR]
#              [-- RUN-ARGS...]
#
#   --impl IMPL      implementation under test (repeatable): qemu, or
#                    exec:TEMPLATE for your adapter (PROTOCOL.md)
#   --expect FILE    expectations file; the job fails only on changes
#   --record FILE    write (or update) the expectations file instead of
#                    checking; exits 0 whatever the outcomes
#   --fail-on LIST   outcomes that fail the job (run --fail-on)
#   --out DIR        where the reports go (default: qcow2-conform-report)
#   --bin PATH       the qcow2-conform binary (default: $QCOW2_CONFORM_BIN,
#                    else qcow2-conform on PATH)
#   --corpus DIR     another corpus directory (default: this one)
#   -- RUN-ARGS      passed to `qcow2-conform run` as they are
#
# The corpus is the directory holding this script, wherever it was
# unpacked, unless --corpus names another. Exit status: that of
# `qcow2-conform run` (0 all as expected, 2 failing or changed outcomes,
# 1 the run could not complete).
set -euo pipefail

corpus="$(cd "$(dirname "$0")" && pwd)"
impls=()
expect=""
record=""
fail_on=""
out="qcow2-conform-report"
bin="${QCOW2_CONFORM_BIN:-}"
extra=()

need() { [ "$#" -ge 2 ] || { echo "ci.sh: $1 needs a value" >&2; exit 1; }; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --impl) need "$@"; impls+=("$2"); shift 2 ;;
    --expect) need "$@"; expect="$2"; shift 2 ;;
    --record) need "$@"; record="$2"; shift 2 ;;
    --fail-on) need "$@"; fail_on="$2"; shift 2 ;;
    --out) need "$@"; out="$2"; shift 2 ;;
    --bin) need "$@"; bin="$2"; shift 2 ;;
    --corpus) need "$@"; corpus="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ci.sh: unknown argument $1 (try --help)" >&2; exit 1 ;;
  esac
done
[ "${#impls[@]}" -gt 0 ] || { echo "ci.sh: name an implementation with --impl" >&2; exit 1; }
[ -z "$expect" ] || [ -z "$record" ] || { echo "ci.sh: --expect and --record exclude each other" >&2; exit 1; }

if [ -z "$bin" ]; then
  bin="$(command -v qcow2-conform)" || {
    echo "ci.sh: qcow2-conform is not on PATH (or pass --bin PATH)" >&2
    exit 1
  }
fi

mkdir -p "$out"
args=(run --corpus "$corpus"
      --json "$out/report.json" --junit "$out/junit.xml" --html "$out/report.html")
for i in "${impls[@]}"; do args+=(--impl "$i"); done
[ -z "$expect" ] || args+=(--expect "$expect")
[ -z "$record" ] || args+=(--write-expect "$record")
[ -z "$fail_on" ] || args+=(--fail-on "$fail_on")
args+=("${extra[@]}")

echo "ci.sh: $bin ${args[*]}" >&2
status=0
"$bin" "${args[@]}" || status=$?
case "$status" in
  0) echo "ci.sh: done; reports in $out/" >&2 ;;
  2) echo "ci.sh: FAILED: outcomes failed or changed (listed above); reports in $out/" >&2 ;;
  *) echo "ci.sh: FAILED: the run could not complete (status $status); reports in $out/" >&2 ;;
esac
exit "$status"
