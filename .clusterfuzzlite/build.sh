#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build: every cargo-fuzz target of fuzz_targets/
# with the shared dictionary, libFuzzer options and a seed corpus. Runs
# inside the base-builder-rust image (nightly as the default toolchain,
# cargo-fuzz installed) or directly on a machine with a `nightly` toolchain
# and cargo-fuzz:  OUT=/tmp/fuzz-out .clusterfuzzlite/build.sh
cd "${SRC:-$(dirname "$0")/..}/qcow2-conform" 2>/dev/null || cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/target/fuzz-out}
mkdir -p "$OUT"

# base-builder-rust pins its nightly as the default toolchain (there may be
# no toolchain named plain `nightly`); elsewhere ask for nightly explicitly.
if rustc -vV | grep -q '^release: .*nightly'; then
  fuzz=(cargo fuzz)
else
  fuzz=(cargo +nightly fuzz)
fi
"${fuzz[@]}" build -O --fuzz-dir fuzz_targets
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=${CARGO_TARGET_DIR:-target}/$triple/release

# Seed corpora (small generated images, random strings); optional: a
# build without them still fuzzes, from the dictionary alone.
seeds=$(mktemp -d)
if ! fuzz_targets/seeds.sh "$seeds" 65536 >&2; then
  echo "build.sh: no seed corpora (seeds.sh failed)" >&2
fi

targets=$("${fuzz[@]}" list --fuzz-dir fuzz_targets)
for t in $targets; do
  cp "$bin_dir/$t" "$OUT/$t"
  cp fuzz_targets/qcow2.dict "$OUT/$t.dict"
  case $t in
    check_bytes | dump_json | draft_dump | read_guest) max_len=65536 ;;
    *) max_len=4096 ;;
  esac
  printf '[libfuzzer]\nmax_len = %s\nrss_limit_mb = 2048\n' "$max_len" >"$OUT/$t.options"
  if [ -d "$seeds/$t" ] && command -v zip >/dev/null 2>&1; then
    rm -f "$OUT/${t}_seed_corpus.zip"
    (cd "$seeds/$t" && zip -q -r "$OUT/${t}_seed_corpus.zip" .)
  fi
done
rm -rf "$seeds"
echo "built: $(echo $targets) into $OUT"
