#!/usr/bin/env bash
# Benchmark: `qcow2-conform run --impl qemu` throughput (cases per second,
# 2 workers) against the floor set by the QEMU tools themselves.
#
# The corpus is generated (`generate --profile qemu`, valid images and
# one-rule mutants). The runner's JSON report lists, per case, the exact
# commands that reproduce what it did (`observation.commands`); the floor
# runs exactly those commands from a shell, one script per case, two at a
# time (`xargs -P 2`), with nothing else: no `prlimit` wrapper, no model
# check, no JSON parsing, no judging. The lines that only show QEMU's
# equivalent of what the runner did itself (a bitmap's dirty ranges read
# with the runner's own NBD client) are left out of the floor too. The qemu-nbd server line waits for its
# socket before the clients start, as the runner does. So the floor is the
# cost of the qemu-img / qemu-io / qemu-nbd processes a case needs, and the
# ratio runner/floor says how much the runner adds.
#
# Target: runner rate >= 0.5 x floor rate, with the sandbox on (the
# default); and the sandboxed runner's time within 1.1 x the same run with
# `--sandbox off` (measured as a third side, alternating with the others).
#
# Environment:
#   COUNT=N         cases per kind (valid and mutants; default 40 -> 80 cases)
#   RUNS=N          timed runs of each side, alternating (default 3)
#   JOBS=N          workers on both sides (default 2)
#   EXTRA="..."     extra `run` arguments (e.g. "--read-only", "--bitmap-ops")
#   BENCH_DIR=DIR   work dir (default /tmp/qcow2-conform-bench-run)
#   BIN=PATH        use this qcow2-conform binary instead of building one
#   STRICT=1        exit 1 when the target is missed
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-40}
RUNS=${RUNS:-3}
JOBS=${JOBS:-2}
EXTRA=${EXTRA:-}
DIR=${BENCH_DIR:-/tmp/qcow2-conform-bench-run}

if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p conform
  BIN=${CARGO_TARGET_DIR:-target}/release/qcow2-conform
fi
mkdir -p "$DIR"
corpus=$DIR/corpus
"$BIN" generate --seed 7 --count "$COUNT" --profile qemu --out "$corpus" --force >/dev/null
cases=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["cases"]))' "$corpus/manifest.json")

now() { date +%s.%N; }

run_runner() {
  # shellcheck disable=SC2086
  "$BIN" run --impl qemu --corpus "$corpus" --jobs "$JOBS" --fail-on none \
    --json "$DIR/report.json" $EXTRA "$@" >/dev/null 2>"$DIR/run.err"
}

# Warm-up run; its report gives the commands of the floor.
run_runner

rm -rf "$DIR/floor" && mkdir -p "$DIR/floor"
python3 - "$DIR/report.json" "$DIR/floor" <<'EOF'
import json, re, sys
report, out = json.load(open(sys.argv[1])), sys.argv[2]
n = 0
for i, case in enumerate(report["cases"]):
    for r in case["results"]:
        lines = ["set +e"]
        for c in r["observation"]["commands"]:
            if "# read by the runner's own NBD client" in c:
                # The runner read these dirty ranges itself, with no
                # process: the line only shows QEMU's equivalent.
                continue
            # `(cd DIR && CMD)` (the runner runs QEMU in the copy's
            # directory): the floor changes directory once, then runs CMD.
            m = re.match(r"^\(cd (\S+) && (.*)\)( &)?$", c)
            if m:
                lines.append("cd %s" % m.group(1))
                c = m.group(2) + (m.group(3) or "")
            c = re.sub(r"^prlimit --as=\d+ -- ", "", c)
            if c.startswith("qcow2-conform "):
                continue  # the model's own check: not a QEMU invocation
            if c.endswith("&"):
                lines.append(c[:-1] + ">/dev/null 2>&1 &")
                m = re.search(r' -k ("\$WORK"/\S+)', c) or re.search(r' -k /proc/self/cwd/(\S+)', c)
                sock = m.group(1) if m.group(1).startswith('"') else '"$WORK"/' + m.group(1)
                # As the runner: wait until the server listens (or exits).
                lines.append('for _ in $(seq 5000); do [ -S %s ] && break; kill -0 $! 2>/dev/null || break; sleep 0.002; done' % sock)
            elif c == "kill $!":
                # The runner kills the server's process group with SIGKILL;
                # a SIGTERM right after start-up can be lost by qemu-nbd.
                lines.append("kill -9 $! 2>/dev/null")
            elif c.startswith(("WORK=", "cp ", "wait ")):
                lines.append(c)
            else:
                lines.append(c + " >/dev/null 2>&1")
        lines.append("wait")
        lines.append('rm -rf "$WORK"')
        open("%s/case-%04d.sh" % (out, n), "w").write("\n".join(lines) + "\n")
        n += 1
print(n, file=sys.stderr)
EOF

run_floor() {
  find "$DIR/floor" -name 'case-*.sh' -print0 | xargs -0 -P "$JOBS" -n 1 bash
}
run_floor  # warm-up

runner_t=()
floor_t=()
open_t=()
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then order="runner floor open"; else order="open floor runner"; fi
  for side in $order; do
    t0=$(now)
    case $side in
      runner) run_runner ;;
      open) run_runner --sandbox off ;;
      floor) run_floor ;;
    esac
    t1=$(now)
    dt=$(python3 -c "print(round($t1 - $t0, 3))")
    case $side in
      runner) runner_t+=("$dt") ;;
      open) open_t+=("$dt") ;;
      floor) floor_t+=("$dt") ;;
    esac
  done
done

python3 - "$cases" "${STRICT:-0}" "$JOBS" "$RUNS" "$COUNT" "${EXTRA:-none}" "$DIR" "${runner_t[*]}" "${floor_t[*]}" "${open_t[*]}" <<'EOF'
import glob, re, statistics, sys
cases, strict, jobs, runs, count, extra, d = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
rt = [float(x) for x in sys.argv[8].split()]
ft = [float(x) for x in sys.argv[9].split()]
ot = [float(x) for x in sys.argv[10].split()]
procs = sum(len(re.findall(r"^(?:/\S+/)?qemu-(?:img|io|nbd) ", open(f).read(), re.M)) for f in glob.glob(d + "/floor/case-*.sh"))
mr, mf = statistics.median(rt), statistics.median(ft)
rr, fr = cases / mr, cases / mf
ratio = rr / fr
print(f"cases: {cases} (COUNT={count}, EXTRA={extra}), jobs {jobs}, runs {runs}")
print(f"QEMU processes per pass: {procs} ({procs / cases:.1f} per case)")
print(f"runner: median {mr:.2f} s ({', '.join(map(str, rt))}) -> {rr:.1f} cases/s")
print(f"floor:  median {mf:.2f} s ({', '.join(map(str, ft))}) -> {fr:.1f} cases/s")
mo = statistics.median(ot)
print(f"runner --sandbox off: median {mo:.2f} s ({', '.join(map(str, ot))}) -> {cases / mo:.1f} cases/s")
print(f"ratio runner/floor: {ratio:.3f} (target >= 0.5): {'met' if ratio >= 0.5 else 'MISSED'}")
cost = mr / mo
print(f"sandboxed/unsandboxed time: {cost:.3f} (target <= 1.1): {'met' if cost <= 1.1 else 'MISSED'}")
print("load average:", " ".join(open("/proc/loadavg").read().split()[:3]))
sys.exit(1 if strict == "1" and (ratio < 0.5 or cost > 1.1) else 0)
EOF
