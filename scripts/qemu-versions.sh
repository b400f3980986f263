#!/usr/bin/env bash
# The QEMU behaviours of docs/findings.md, side by side for every QEMU given
# (default: the machine's and the QEMU 7.2 that scripts/setup.sh unpacks):
# one line per behaviour, one column per version, each cell what that
# QEMU's own tools did. Run from the repository root:
#
#   scripts/qemu-versions.sh [PREFIX...]     # PREFIX: a dir with bin/qemu-img or usr/bin/qemu-img
#
# Uses qcow2-conform (QCOW2_CONFORM_BIN, else target/release or
# target/debug, built if missing) to judge the images QEMU leaves.
set -euo pipefail

cache="${QCOW2_CONFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qcow2-conform}"
root=$(cd "$(dirname "$0")/.." && pwd)
corpus="$root/corpus/images"

bin="${QCOW2_CONFORM_BIN:-}"
if [ -z "$bin" ]; then
  for b in "$root/target/release/qcow2-conform" "$root/target/debug/qcow2-conform"; do
    [ -x "$b" ] && { bin=$b; break; }
  done
fi
if [ -z "$bin" ]; then
  (cd "$root" && cargo build -q -p conform)
  bin="$root/target/debug/qcow2-conform"
fi

# Each QEMU as "label=bindir=libpath".
qemus=()
add_qemu() { # prefix-or-empty
  local bindir libs=""
  if [ -z "$1" ]; then
    bindir=$(dirname "$(command -v qemu-img)")
  elif [ -x "$1/bin/qemu-img" ]; then
    bindir="$1/bin"
  else
    bindir="$1/usr/bin"
    libs="$1/usr/lib/x86_64-linux-gnu:$1/lib/x86_64-linux-gnu"
  fi
  local v
  v=$(LD_LIBRARY_PATH="$libs" "$bindir/qemu-img" --version | awk 'NR==1 {print $3}')
  qemus+=("$v=$bindir=$libs")
}
if [ "$#" -eq 0 ]; then
  add_qemu "$cache/qemu-7.2"
  add_qemu ""
else
  for p in "$@"; do add_qemu "$p"; done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# q TOOL ARGS...: runs one of the current QEMU's tools.
q() { local t=$1; shift; LD_LIBRARY_PATH="$libs" "$bindir/$t" "$@"; }
verdict() { { "$bin" check --json "$1" || true; } | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["verdict"], ",".join(sorted({f["rule"] for f in r["findings"] if f["severity"] in ("error","invalid")})) or "-")'; }
opens() { # IMAGE: "opens, N bitmaps" or "refused: message"
  local out
  if out=$(q qemu-img info -f qcow2 --output=json "$1" 2>"$work/err"); then
    echo "opens, $(printf '%s' "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(len(j.get("format-specific",{}).get("data",{}).get("bitmaps",[])))') bitmaps listed"
  else
    echo "refused: $(grep -m1 -o "[A-Z][a-z]* [^']*'[^']*' .*\|Bitmap .*" "$work/err" | head -c 60)"
  fi
}

behaviours=(
  "compatible flag, no extra data (valid/compatible-flag-without-extra-data): qemu-img info"
  "extra data, flag set (bitmaps.dir.extra-data/compatible): qemu-img info"
  "tail bits set (bitmaps.data.tail-bits/set): info, then check's corruptions"
  "table past EOF (bitmaps.table.bounds/past-eof): info, then check's corruptions"
  "all-ones entry for the last, partly used cluster (generate --seed 1 --count 20 --profile qemu --valid: valid-0015): qemu-io read, then the model's verdict"
  "NUL in a name (bitmaps.dir.name-bytes/nul): the name qemu-img info lists"
  "v3 with bitmaps amended to compat=0.10: amend, then info's warning"
)

"$bin" generate --seed 1 --count 20 --profile qemu --valid --out "$work/gen" >/dev/null
declare -A cell
for entry in "${qemus[@]}"; do
  IFS='=' read -r ver bindir libs <<<"$entry"
  cell[0,$ver]=$(opens "$corpus/valid--compatible-flag-without-extra-data.qcow2")
  cell[1,$ver]=$(opens "$corpus/bitmaps.dir.extra-data--compatible.qcow2")
  for n in 2 3; do
    img=$([ $n -eq 2 ] && echo bitmaps.data.tail-bits--set || echo bitmaps.table.bounds--past-eof)
    c=$( (q qemu-img check -f qcow2 --output=json "$corpus/$img.qcow2" 2>/dev/null || true) \
      | python3 -c 'import json,sys; print(json.load(sys.stdin).get("corruptions",0))')
    cell[$n,$ver]="$(opens "$corpus/$img.qcow2"); check: $c corruptions"
  done
  cp "$work/gen/images/valid-0015.qcow2" "$work/ones.qcow2"
  q qemu-io -f qcow2 -c 'read 0 512' "$work/ones.qcow2" >/dev/null 2>&1 || true
  cell[4,$ver]="afterwards: $(verdict "$work/ones.qcow2")"
  cell[5,$ver]=$(q qemu-img info -f qcow2 --output=json "$corpus/bitmaps.dir.name-bytes--nul.qcow2" 2>&1 \
    | python3 -c 'import json,sys
try: print(", ".join(repr(b["name"]) for b in json.load(sys.stdin)["format-specific"]["data"]["bitmaps"]))
except Exception as e: print("refused")')
  rm -f "$work/v2.qcow2"
  q qemu-img create -q -f qcow2 "$work/v2.qcow2" 1M
  q qemu-img bitmap --add "$work/v2.qcow2" b0
  if q qemu-img amend -f qcow2 -o compat=0.10 "$work/v2.qcow2" >/dev/null 2>&1; then
    warn=$(q qemu-img info -f qcow2 "$work/v2.qcow2" 2>&1 >/dev/null | head -n 1 | head -c 70)
    cell[6,$ver]="amended; model: $(verdict "$work/v2.qcow2"); info warns: ${warn:-nothing}"
  else
    cell[6,$ver]="amend refused"
  fi
done

printf '| behaviour |'
for entry in "${qemus[@]}"; do printf ' QEMU %s |' "${entry%%=*}"; done
printf '\n|---|'
for _ in "${qemus[@]}"; do printf -- '---|'; done
printf '\n'
for i in "${!behaviours[@]}"; do
  printf '| %s |' "${behaviours[$i]}"
  for entry in "${qemus[@]}"; do printf ' %s |' "${cell[$i,${entry%%=*}]}"; done
  printf '\n'
done
