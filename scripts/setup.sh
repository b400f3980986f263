#!/usr/bin/env bash
# Installs what qcow2-conform needs and this machine lacks: QEMU's tools
# (qemu-img, qemu-io, qemu-nbd, qemu-storage-daemon), chromium and python3 from Debian, and cargo-nextest from
# crates.io. Safe to run again: it only installs what is missing.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_missing=()
for tool in qemu-img qemu-io qemu-nbd qemu-storage-daemon; do
  command -v "$tool" >/dev/null 2>&1 || apt_missing+=(qemu-utils)
done
if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "setup: installing qemu-utils" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils
fi

# libqcow, an implementation under test (`run --impl libqcow`), through
# Debian's Python bindings, which Debian's own Python imports.
if ! /usr/bin/python3 -c 'import pyqcow' >/dev/null 2>&1; then
  echo "setup: installing python3-libqcow" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-libqcow
fi

# Headless Chromium renders the runner's --html page in the tests; python3
# runs examples/qemu-img-adapter.py (the exec-protocol example).
web_missing=()
command -v chromium >/dev/null 2>&1 || web_missing+=(chromium)
command -v python3 >/dev/null 2>&1 || web_missing+=(python3)
if [ "${#web_missing[@]}" -gt 0 ]; then
  echo "setup: installing ${web_missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${web_missing[@]}"
fi

# junitparser reads the runner's JUnit files back in the tests
# (conform/tests/ci.rs), from the project's own venv, .venv/.
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! "$root/.venv/bin/python" -c 'import junitparser' >/dev/null 2>&1; then
  echo "setup: creating $root/.venv with junitparser" >&2
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install --quiet --disable-pip-version-check junitparser
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

# cargo-insta checks the snapshots in snapshots/ (`cargo insta test --check`).
if ! cargo insta --version >/dev/null 2>&1; then
  echo "setup: installing cargo-insta" >&2
  cargo install --locked cargo-insta
fi

for tool in qemu-img qemu-io qemu-nbd chromium python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool still missing" >&2; exit 1; }
done
/usr/bin/python3 -c 'import pyqcow' >/dev/null 2>&1 || { echo "setup: python3-libqcow still missing" >&2; exit 1; }
"$root/.venv/bin/python" -c 'import junitparser' >/dev/null 2>&1 || { echo "setup: junitparser (in .venv) still missing" >&2; exit 1; }
echo "setup: ready ($(qemu-img --version | head -n 1); $(cargo nextest --version | head -n 1))" >&2
