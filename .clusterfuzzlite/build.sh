#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build: every cargo-fuzz target of fuzz_targets/,
# with the shared dictionary. Runs inside the base-builder-rust image (which
# provides nightly and cargo-fuzz), or directly on a machine that has both.
cd "${SRC:-$(dirname "$0")/..}/qcow2-conform" 2>/dev/null || cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/target/fuzz-out}
mkdir -p "$OUT"
cargo +nightly fuzz build -O --fuzz-dir fuzz_targets --features libfuzzer
triple=$(rustc -vV | sed -n 's/^host: //p')
for t in $(cargo +nightly fuzz list --fuzz-dir fuzz_targets); do
  cp "target/$triple/release/$t" "$OUT/$t"
  cp fuzz_targets/qcow2.dict "$OUT/$t.dict"
done
echo "built: $(cargo +nightly fuzz list --fuzz-dir fuzz_targets | tr '\n' ' ')into $OUT"
