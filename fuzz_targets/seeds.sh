#!/usr/bin/env bash
# Builds size-limited seed corpora for every fuzz target:
#   fuzz_targets/seeds.sh [OUT] [MAX_BYTES]
# OUT defaults to fuzz_targets/corpus (gitignored); MAX_BYTES to 65536.
# Afterwards OUT/<target>/ holds the seeds of each target, ready for
#   cargo +nightly fuzz run TARGET --fuzz-dir fuzz_targets -O OUT/TARGET
# - check_bytes, dump_json: small generated images (valid and one-rule
#   mutants, 512 B to 4 KiB clusters), plus the images of the shared corpus
#   (corpus/images, when it exists) that fit under MAX_BYTES;
# - read_guest: the same images (and valid ones with compressed, zero and
#   partly allocated clusters) behind a 16-byte read plan;
# - draft_dump: images laid out per each historical draft, and the shared
#   corpus's draft cases (corpus/manifest.json), behind the byte that
#   selects the revision;
# - roundtrip, mutant_verdict, guest_roundtrip: deterministic random byte
#   strings.
# Idempotent: seeds are named by content hash, existing files are kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/fuzz_targets/corpus}
max=${2:-65536}
mkdir -p "$out"
out=$(cd "$out" && pwd)

cd "$root"
corpus_dir=()
if [ -f corpus/manifest.json ]; then
  corpus_dir=("$root/corpus")
fi
cargo run --quiet --release -p fuzz_targets --example seeds -- "$out" "$max" "${corpus_dir[@]}"

shared=0
if [ -d corpus/images ]; then
  while IFS= read -r -d '' img; do
    name="corpus-$(basename "$img")"
    cp "$img" "$out/check_bytes/$name"
    cp "$img" "$out/dump_json/$name"
    shared=$((shared + 1))
  done < <(find corpus/images -type f -size -"$((max + 1))"c -print0)
  echo "seeds: $shared images of corpus/images (<= $max bytes)"
else
  echo "seeds: no corpus/images, generated seeds only"
fi
for t in check_bytes dump_json roundtrip mutant_verdict draft_dump read_guest guest_roundtrip; do
  printf '  %-15s %5d files, %s\n' "$t" "$(find "$out/$t" -type f | wc -l)" "$(du -sh "$out/$t" | cut -f1)"
done
