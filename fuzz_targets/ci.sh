#!/usr/bin/env bash
# CI fuzz step (called by .ci/run): builds every cargo-fuzz target of
# fuzz_targets/ and runs each for FUZZ_SECONDS (default 30) from the seed
# corpora of seeds.sh, two targets at a time (CI has 2 cores). Fails when a
# target crashes, panics, leaks past -rss_limit_mb or times out; libFuzzer
# then names the reproducer under fuzz_targets/artifacts/TARGET/.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_CORPUS (seed/working corpus
# directory, default target/fuzz-ci-corpus; keep it between CI runs to let
# coverage accumulate).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
corpus=${FUZZ_CORPUS:-target/fuzz-ci-corpus}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

fuzz_targets/seeds.sh "$corpus" 65536
cargo +nightly fuzz build -O --fuzz-dir fuzz_targets

# The targets default ASan to detect_stack_use_after_return=0 and
# quarantine_size_mb=0 (fuzz_main! in src/lib.rs says why); an
# ASAN_OPTIONS from the environment still overrides them.

max_len() {
  case $1 in
    check_bytes | dump_json | draft_dump | read_guest) echo 65536 ;;
    *) echo 4096 ;;
  esac
}

run() {
  local t=$1 log=target/fuzz-ci-$1.log
  mkdir -p "$corpus/$t"
  if cargo +nightly fuzz run "$t" --fuzz-dir fuzz_targets -O "$corpus/$t" -- \
    -max_total_time="$secs" -dict=fuzz_targets/qcow2.dict -rss_limit_mb=2048 \
    -max_len="$(max_len "$t")" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz: $t ok: $(grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" | tr -s ' ' | tr '\n' ' ')"
  else
    echo "fuzz: $t FAILED (log: $log)" >&2
    tail -n 60 "$log" >&2
    return 1
  fi
}

mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz_targets)
failed=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for t in "${targets[@]:i:2}"; do
    run "$t" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p" || failed=1
  done
done
exit "$failed"
