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

# cmake builds zlib-ng for the `qcow` crate (an implementation under
# test: its flate2 dependency asks for zlib-ng-compat).
if ! command -v cmake >/dev/null 2>&1; then
  echo "setup: installing cmake" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake
fi

# Headless Chromium renders the runner's --html page in the tests; python3
# runs corpus/examples/qemu-img-adapter.py (the exec-protocol example).
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

# The cache for implementations unpacked beside the machine's own (the
# runner finds them at the same paths: conform/src/runner/adapters/cache.rs).
cache="${QCOW2_CONFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qcow2-conform}"
mkdir -p "$cache"

# QEMU 7.2 from Debian bookworm (`run --impl qemu@7.2`, `qemu-live@7.2`), unpacked with
# dpkg -x beside the installed QEMU (which stays): qemu-utils and those of
# its libraries the machine lacks. A private apt configuration reads
# bookworm's package list, so the machine's sources are left alone.
qemu72="$cache/qemu-7.2"
apt_dir="$cache/apt-bookworm"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
          -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
# The private apt configuration's directories and bookworm's source line.
bookworm_apt() {
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/cache" "$apt_dir/debs"
  echo "deb http://deb.debian.org/debian bookworm main" >"$apt_dir/sources.list"
}
# Downloads bookworm's 7.2 build of package $1 into $apt_dir/debs.
bookworm_download_72() {
  local version
  version=$(apt-cache "${apt_opts[@]}" madison "$1" | awk -F'|' '$2 ~ /:7\.2/ {gsub(/ /, "", $2); print $2; exit}')
  [ -n "$version" ] || { echo "setup: bookworm has no $1 7.2" >&2; exit 1; }
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download "$1=$version")
}
# Unpacks into $2 those dependencies of the package file $1 that are not
# installed here ($3 names what needs them, for the log).
unpack_missing_deps() {
  local dep deps
  deps=$(dpkg-deb -f "$1" Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g')
  for dep in $deps; do
    if ! dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q "ok installed"; then
      echo "setup: unpacking $dep for $3" >&2
      (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download "$dep")
      dpkg -x "$(ls "$apt_dir/debs/${dep}"_*.deb | head -n 1)" "$2"
    fi
  done
}
if ! "$qemu72/usr/bin/qemu-img" --version >/dev/null 2>&1 \
    && ! LD_LIBRARY_PATH="$qemu72/usr/lib/x86_64-linux-gnu:$qemu72/lib/x86_64-linux-gnu" \
      "$qemu72/usr/bin/qemu-img" --version >/dev/null 2>&1; then
  echo "setup: unpacking QEMU 7.2 (Debian bookworm qemu-utils) into $qemu72" >&2
  bookworm_apt
  apt-get "${apt_opts[@]}" update -qq
  bookworm_download_72 qemu-utils
  rm -rf "$qemu72.tmp" && mkdir -p "$qemu72.tmp"
  dpkg -x "$apt_dir/debs"/qemu-utils_*7.2*.deb "$qemu72.tmp"
  # Its libraries that are not installed here, unpacked beside it.
  unpack_missing_deps "$(ls "$apt_dir/debs"/qemu-utils_*7.2*.deb | head -n 1)" "$qemu72.tmp" "QEMU 7.2"
  rm -rf "$qemu72" && mv "$qemu72.tmp" "$qemu72"
fi
LD_LIBRARY_PATH="$qemu72/usr/lib/x86_64-linux-gnu:$qemu72/lib/x86_64-linux-gnu" \
  "$qemu72/usr/bin/qemu-img" --version | grep -q "version 7\.2" \
  || { echo "setup: QEMU 7.2 in $qemu72 does not run" >&2; exit 1; }

# bookworm ships qemu-storage-daemon in qemu-system-common, not in
# qemu-utils: only that program is taken from it, into the same prefix
# (`run --impl qemu-live@7.2`). It needs no library the machine lacks;
# should one be missing, the package's uninstalled dependencies are
# unpacked beside it.
qsd72="$qemu72/usr/bin/qemu-storage-daemon"
run72() { LD_LIBRARY_PATH="$qemu72/usr/lib/x86_64-linux-gnu:$qemu72/lib/x86_64-linux-gnu" "$@"; }
if ! run72 "$qsd72" --version >/dev/null 2>&1; then
  echo "setup: unpacking qemu-storage-daemon 7.2 (Debian bookworm qemu-system-common) into $qemu72" >&2
  bookworm_apt
  [ -n "$(ls "$apt_dir/lists/"*Packages* 2>/dev/null)" ] || apt-get "${apt_opts[@]}" update -qq
  bookworm_download_72 qemu-system-common
  deb=$(ls "$apt_dir/debs"/qemu-system-common_*7.2*.deb | head -n 1)
  rm -rf "$qemu72.qsd" && mkdir -p "$qemu72.qsd"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$qemu72.qsd" ./usr/bin/qemu-storage-daemon
  install -m 0755 "$qemu72.qsd/usr/bin/qemu-storage-daemon" "$qsd72"
  rm -rf "$qemu72.qsd"
  if ! run72 "$qsd72" --version >/dev/null 2>&1; then
    unpack_missing_deps "$deb" "$qemu72" "qemu-storage-daemon 7.2"
  fi
fi
run72 "$qsd72" --version | grep -q "version 7\.2" \
  || { echo "setup: qemu-storage-daemon 7.2 in $qemu72 does not run" >&2; exit 1; }

# The Python the implementations' virtual environments are made from:
# Debian's (built with profile-guided optimisation and linked statically:
# a helper starts in about 12% less processor time than under a Python
# with a shared libpython, such as pyenv's, which may come first on PATH).
venv_python=/usr/bin/python3
[ -x "$venv_python" ] || venv_python=$(command -v python3)
"$venv_python" -m venv --help >/dev/null 2>&1 && "$venv_python" -c 'import ensurepip' >/dev/null 2>&1 || {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
}
# A virtual environment made from another Python is made again.
venv_base_ok() {
  grep -qx "home = $(dirname "$(readlink -f "$venv_python")")" "$1/pyvenv.cfg" 2>/dev/null
}

# libqcow 20260703 from PyPI (`run --impl libqcow@20260703`), beside
# Debian's 20201213, in a virtual environment the project owns.
libqcow_venv="$cache/libqcow-20260703"
if ! venv_base_ok "$libqcow_venv" \
  || ! "$libqcow_venv/bin/python" -c 'import pyqcow, sys; sys.exit(pyqcow.get_version() != "20260703")' >/dev/null 2>&1; then
  echo "setup: installing libqcow-python 20260703 into $libqcow_venv" >&2
  rm -rf "$libqcow_venv"
  "$venv_python" -m venv "$libqcow_venv"
  "$libqcow_venv/bin/pip" install -q --only-binary=:all: libqcow-python==20260703
fi
"$libqcow_venv/bin/python" -c 'import pyqcow; print(pyqcow.get_version())' | grep -qx 20260703 \
  || { echo "setup: libqcow 20260703 in $libqcow_venv does not import" >&2; exit 1; }

# dissect.hypervisor 3.21 from PyPI (`run --impl dissect@3.21`), Fox-IT's
# pure-Python qcow2 reader, in a virtual environment the project owns
# (pure Python: no wheel restriction needed; without the optional
# `zstandard` module, so zstd images are refused, as in a plain install).
dissect_venv="$cache/dissect-3.21"
dissect_version() {
  "$dissect_venv/bin/python" -c "import importlib.metadata as m; print(m.version('dissect.hypervisor'))" 2>/dev/null
}
if ! venv_base_ok "$dissect_venv" || [ "$(dissect_version)" != 3.21 ]; then
  echo "setup: installing dissect.hypervisor 3.21 into $dissect_venv" >&2
  rm -rf "$dissect_venv"
  "$venv_python" -m venv "$dissect_venv"
  "$dissect_venv/bin/pip" install -q 'dissect.hypervisor==3.21'
fi
[ "$(dissect_version)" = 3.21 ] \
  || { echo "setup: dissect.hypervisor 3.21 in $dissect_venv does not import" >&2; exit 1; }

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
