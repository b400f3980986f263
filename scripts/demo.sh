#!/usr/bin/env bash
# The main job on the bundled example: installs what is missing, builds the
# tool, checks and dumps examples/bitmaps-example.qcow2 (made by qemu-img),
# and checks a fresh image that the machine's own qemu-img makes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --quiet -p conform
bin=target/release/qcow2-conform
example=examples/bitmaps-example.qcow2

echo "== qcow2-conform check $example"
status=0
"$bin" check "$example" || status=$?
echo "== qcow2-conform dump $example (excerpt)"
"$bin" dump "$example" | sed -n '1,12p;/^bitmap directory/,/^mapping/p'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fresh="$work/fresh.qcow2"
qemu-img create -q -f qcow2 "$fresh" 1G
qemu-img bitmap --add "$fresh" b0
qemu-io -c 'write 0 3M' -c 'write 512M 64k' "$fresh" >/dev/null
echo "== qcow2-conform check (a fresh image from $(qemu-img --version | head -n 1))"
"$bin" check "$fresh" || status=$?
exit "$status"
