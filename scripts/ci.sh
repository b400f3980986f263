#!/usr/bin/env bash
# Runs qcow2-conform's conformance corpus from this checkout, the way a CI
# job needs it (see docs/ci.md; action.yml wraps it for GitHub Actions).
# The recipe itself is the corpus's own `corpus/ci.sh`, the one vendors
# get in the kit; this wrapper adds what only a checkout has:
#
#   scripts/ci.sh [--impl IMPL]... [--bin PATH] [CORPUS-CI-ARGS...]
#
#   --impl IMPL      implementation under test (repeatable; default: qemu)
#   --bin PATH       the qcow2-conform binary (default: $QCOW2_CONFORM_BIN,
#                    else qcow2-conform on PATH, else built from this checkout)
#   CORPUS-CI-ARGS   everything else goes to corpus/ci.sh as it is:
#                    --corpus DIR (default: the bundled corpus/), --expect
#                    FILE, --record FILE, --fail-on LIST, --out DIR (default:
#                    qcow2-conform-report), -- RUN-ARGS (`bash corpus/ci.sh
#                    --help` says more)
#
# Exit status: that of `qcow2-conform run` (0 all as expected, 2 failing or
# changed outcomes, 1 the run could not complete).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${QCOW2_CONFORM_BIN:-}"
impl=no
args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --bin)
      [ "$#" -ge 2 ] || { echo "ci.sh: --bin needs a value" >&2; exit 1; }
      bin="$2"; shift 2 ;;
    --impl) impl=yes; args+=("$1"); shift ;;
    --) args+=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ "$impl" = yes ] || args=(--impl qemu "${args[@]}")

if [ -z "$bin" ]; then
  if command -v qcow2-conform >/dev/null 2>&1; then
    bin="$(command -v qcow2-conform)"
  else
    echo "ci.sh: building qcow2-conform (release) from $root" >&2
    (cd "$root" && cargo build --release --quiet -p conform --bin qcow2-conform)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/qcow2-conform"
  fi
fi

exec bash "$root/corpus/ci.sh" --bin "$bin" "${args[@]}"
