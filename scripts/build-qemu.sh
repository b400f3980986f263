#!/usr/bin/env bash
# Builds QEMU's four block tools (qemu-img, qemu-io, qemu-nbd,
# qemu-storage-daemon) from Debian's source package of QEMU VERSION into
# the cache, one prefix per version and flavour:
#
#   scripts/build-qemu.sh 10.2 [--asan] [--coverage]
#
# VERSION is an upstream version or its prefix (10.2, 10.2.2, 7.2, 5.2):
# the newest Debian source package whose upstream version starts with it
# is built. The prefix is $CACHE/qemu-src-UPSTREAM[-asan|-coverage] with
# the tools in bin/ and the source and build tree in src/ (a coverage
# build writes its .gcda counters there). A prefix whose tools run is
# reused. The runner finds these prefixes for `--impl qemu@10.2`,
# `qemu-live@10.2` and the like (conform/src/runner/adapters/cache.rs).
#
# Not part of scripts/setup.sh: it takes minutes per build.
set -euo pipefail

usage() { echo "usage: $0 VERSION [--asan] [--coverage]" >&2; exit 2; }
[ $# -ge 1 ] || usage
want="$1"; shift
flavour=""
for arg in "$@"; do
  case "$arg" in
    --asan) flavour="$flavour-asan" ;;
    --coverage) flavour="$flavour-coverage" ;;
    *) usage ;;
  esac
done
[ "$flavour" != "-asan-coverage" ] || { echo "build-qemu: choose --asan or --coverage, not both" >&2; exit 2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

cache="${QCOW2_CONFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qcow2-conform}"
mkdir -p "$cache"
jobs="${BUILD_JOBS:-$(nproc)}"

# Build tools from Debian (the machine's own sources).
need=()
command -v ninja >/dev/null 2>&1 || need+=(ninja-build)
command -v dtc >/dev/null 2>&1 || need+=(device-tree-compiler)
pkg-config --exists glib-2.0 2>/dev/null || need+=(libglib2.0-dev pkg-config)
# What Debian's own build has and the suite's corpus needs: zstd
# compression (compressed-zstd images) and a crypto library with PBKDF
# (LUKS-encrypted images); without them QEMU refuses those images.
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
pkg-config --exists gnutls 2>/dev/null || need+=(libgnutls28-dev)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "build-qemu: installing ${need[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# A private apt configuration with deb-src lines for every Debian release
# that carries a QEMU the suite judges; the machine's sources are left alone.
apt_dir="$cache/apt-src"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources"
{
  for suite in bullseye bookworm trixie sid; do
    echo "deb-src http://deb.debian.org/debian $suite main"
  done
} >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
          -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
if [ -z "$(find "$apt_dir/lists" -name '*Sources*' -mtime -7 2>/dev/null | head -n 1)" ]; then
  apt-get "${apt_opts[@]}" update -qq
fi

# The newest source version whose upstream part (after the epoch, before
# +dfsg/+ds/-) starts with $want.
debver=$(apt-cache "${apt_opts[@]}" showsrc qemu 2>/dev/null | awk '/^Version:/ {print $2}' \
  | while read -r v; do
      up="${v#*:}"; up="${up%%[+~-]*}"
      case "$up" in "$want"|"$want".*) echo "$v" ;; esac
    done | sort -V -r | head -n 1)
[ -n "$debver" ] || { echo "build-qemu: Debian's source archive has no QEMU $want" >&2; exit 1; }
upstream="${debver#*:}"; upstream="${upstream%%[+~-]*}"
prefix="$cache/qemu-src-$upstream$flavour"

tools_run() {
  for t in qemu-img qemu-io qemu-nbd qemu-storage-daemon; do
    "$prefix/bin/$t" --version >/dev/null 2>&1 || return 1
  done
}
if tools_run; then
  echo "build-qemu: $prefix already built ($("$prefix/bin/qemu-img" --version | head -n 1))" >&2
  echo "$prefix"
  exit 0
fi

# The source, unpacked once per Debian version (Debian's patches applied).
srcroot="$apt_dir/sources/$debver"
if [ ! -f "$srcroot/.unpacked" ]; then
  echo "build-qemu: fetching qemu $debver from Debian's source archive" >&2
  rm -rf "$srcroot" && mkdir -p "$srcroot"
  (cd "$srcroot" && apt-get "${apt_opts[@]}" source -qq "qemu=$debver")
  touch "$srcroot/.unpacked"
fi
srcdir=$(find "$srcroot" -mindepth 1 -maxdepth 1 -type d -name 'qemu-*' | head -n 1)
[ -n "$srcdir" ] || { echo "build-qemu: no source tree under $srcroot" >&2; exit 1; }

# meson for the build, from PyPI in a venv per major version: QEMU 8 and
# later want a recent meson, QEMU 5.2 and 7.2 the meson of their day.
major="${upstream%%.*}"
if [ "$major" -ge 8 ]; then meson_pin="meson==1.9.0"; else meson_pin="meson==0.63.3"; fi
venv="$cache/build-venv-${meson_pin#meson==}"
if ! "$venv/bin/python3" -c 'import mesonbuild' >/dev/null 2>&1; then
  echo "build-qemu: creating $venv ($meson_pin)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$meson_pin" pycotap==1.3.1
fi

# Built in place (a coverage build writes its counters beside the objects,
# at the absolute paths it was compiled with); an interrupted build resumes.
mkdir -p "$prefix/src"
[ -d "$prefix/src/qemu" ] || cp -a "$srcdir" "$prefix/src/qemu"
build="$prefix/src/qemu/build-tools"
mkdir -p "$build"

conf=(--target-list= --disable-system --disable-user
      --enable-tools --disable-docs --disable-guest-agent)
# QEMU 8 and later find meson through --python; older ones take it by
# path (and refuse --python with a meson that is not their own).
if [ "$major" -ge 8 ]; then conf+=(--python="$venv/bin/python3" --disable-install-blobs); fi
# A tools-only build probes for a crypto library only when asked.
conf+=(--enable-gnutls --enable-zstd)
if [ "$major" -lt 8 ]; then conf+=(--meson="$venv/bin/meson" --disable-werror); fi
case "$flavour" in
  # QEMU 9 and later name the sanitizers one by one.
  -asan) if [ "$major" -ge 9 ]; then conf+=(--enable-asan --enable-ubsan); else conf+=(--enable-sanitizers); fi
         conf+=(--enable-debug-info) ;;
  -coverage) conf+=(--enable-gcov) ;;
esac

targets=(qemu-img qemu-io qemu-nbd storage-daemon/qemu-storage-daemon)
echo "build-qemu: building QEMU $upstream$flavour in $prefix (configure ${conf[*]})" >&2
if [ ! -f "$build/build.ninja" ]; then
  (cd "$build" && PATH="$venv/bin:$PATH" ../configure "${conf[@]}")
fi
(cd "$build" && PATH="$venv/bin:$PATH" ninja -j "$jobs" "${targets[@]}")

mkdir -p "$prefix/bin"
for t in "${targets[@]}"; do ln -sfn "../src/qemu/build-tools/$t" "$prefix/bin/$(basename "$t")"; done
tools_run || { echo "build-qemu: the tools in $prefix do not run" >&2; exit 1; }
echo "build-qemu: ready: $("$prefix/bin/qemu-img" --version | head -n 1)" >&2
echo "$prefix"
