#!/usr/bin/env bash
# `make soak`: load at max rate against the listener for SOAK_SECONDS (600),
# with faulting guests mixed in, sampling the server's RSS as it goes. Fails
# (non-zero exit) if RSS grows, the server dies or stops answering, or any
# response is not the status its path must get. Writes bench/soak.md.
#
# The server runs from target/release/wasmgate on 127.0.0.1 with a fresh
# data dir holding two routes:
#   localhost/p  tests/fixtures/probe.wasm       (wasi:http component)
#   localhost/w  tests/fixtures/wagi-probe.wasm  (WAGI module)
# and wrk drives them with scripts/soak.lua (the request mix, the expected
# status of each path, and the count of every response by path and status).
#
# Knobs (environment):
#   SOAK_SECONDS=600          load duration
#   SOAK_SAMPLE_SECONDS=10    RSS sampling interval
#   SOAK_CONNECTIONS=32       wrk connections (-c)
#   SOAK_THREADS=2            wrk threads (-t)
#   SOAK_TIMEOUT_MS=1000      the server's WASMGATE_TIMEOUT_MS (the /loop deadline)
#   SOAK_LOOP_EVERY=10        each wrk thread sends one /loop every N seconds
#   SOAK_MEMORY_LIMIT_MB=32   the server's WASMGATE_MEMORY_LIMIT_MB (the /oom limit)
#   SOAK_MAX_GROWTH_PCT=10, SOAK_MAX_GROWTH_MIB=8   the "flat" threshold (below)
#   SOAK_ADDR=127.0.0.1:PORT  listener address (default: a free port)
#   SOAK_BUILD=0              use the existing target/release/wasmgate as is
#   SOAK_BIN=PATH             run this wasmgate binary (with SOAK_BUILD=0)
#   SOAK_OUT=bench/soak.md    where the summary goes (the samples go next to
#                             it, as soak-rss.csv)
#   SOAK_KEEP=1               keep the work dir (data dir, server log, wrk
#                             output); it is always kept when the soak fails
set -euo pipefail
cd "$(dirname "$0")/.."
# wasmtime captures a backtrace per guest error when this is set: noise and
# cost, and every faulting request here is a guest error.
unset RUST_BACKTRACE

seconds=${SOAK_SECONDS:-600}
sample=${SOAK_SAMPLE_SECONDS:-10}
connections=${SOAK_CONNECTIONS:-32}
threads=${SOAK_THREADS:-2}
# The deadline is what the /loop requests run into, and also what every
# other request must finish within: at max rate on 2 cores shared with wrk,
# a WAGI echo's p99 is ~150-250 ms (each of its ~30 stdout writes waits for
# a scheduler round under load), so 200 ms fails healthy runs on timing
# alone (~0.1% of /w/echo answered 504). 1 s keeps loops short and the
# verdict about correctness; the per-path latencies are reported either way.
timeout_ms=${SOAK_TIMEOUT_MS:-1000}
loop_every=${SOAK_LOOP_EVERY:-10}
# 32 MiB, not the 128 MiB default: an /oom touches every page up to the
# limit, and at 128 MiB the memory bombs alone take most of the CPU (and
# their transient pages swamp the RSS samples).
memory_mb=${SOAK_MEMORY_LIMIT_MB:-32}
max_growth_pct=${SOAK_MAX_GROWTH_PCT:-10}
max_growth_mib=${SOAK_MAX_GROWTH_MIB:-8}
out=${SOAK_OUT:-bench/soak.md}
bin=${SOAK_BIN:-${CARGO_TARGET_DIR:-target}/release/wasmgate}

for n in seconds sample connections threads timeout_ms loop_every memory_mb max_growth_pct max_growth_mib; do
  if ! [[ ${!n} =~ ^[0-9]+$ ]] || { ((10#${!n} == 0)) && [[ $n != loop_every ]]; }; then
    echo "soak: $n must be a positive whole number, got '${!n}'" >&2
    exit 2
  fi
done

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Tools: wrk from Debian/Ubuntu (apt); python3 and curl are already needed
# by `make test` and `make demo`.
ensure_wrk soak
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is needed" >&2; exit 1; }
done

if [[ ${SOAK_BUILD:-1} != 0 ]]; then
  step "building wasmgate (release)"
  cargo build --release
fi
[[ -x $bin ]] || { echo "soak: $bin is missing (run cargo build --release)" >&2; exit 1; }

addr=${SOAK_ADDR:-127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
url="http://$addr"
if curl -s -o /dev/null --max-time 2 "$url/" 2>/dev/null; then
  echo "soak: something is already listening on $addr; set SOAK_ADDR=127.0.0.1:PORT" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-soak.XXXXXX")
csv=$work/rss.csv
server=
sampler=
passed=0
cleanup() {
  if [[ -n $sampler ]]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill "$server" 2>/dev/null || true
    # bounded: the drain timeout is 2 s, then SIGKILL
    for _ in $(seq 1 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if ((passed)) && [[ -z ${SOAK_KEEP:-} ]]; then
    rm -rf "$work"
  else
    echo "soak: work dir kept: $work (server.log, wrk.txt, rss.csv, data/)" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export WASMGATE_DATA_DIR=$work/data
step "deploying the test guests to a fresh data dir ($WASMGATE_DATA_DIR)"
"$bin" deploy tests/fixtures/probe.wasm --route localhost/p --actor soak
"$bin" deploy tests/fixtures/wagi-probe.wasm --route localhost/w --actor soak

step "starting the server on $addr (timeout ${timeout_ms} ms, memory limit ${memory_mb} MiB)"
WASMGATE_ADDR=$addr WASMGATE_TIMEOUT_MS=$timeout_ms WASMGATE_MEMORY_LIMIT_MB=$memory_mb \
  WASMGATE_LOG=warn WASMGATE_DRAIN_TIMEOUT_MS=2000 \
  "$bin" serve >"$work/server.log" 2>&1 &
server=$!

# answers PATH: the status of GET PATH with Host: localhost (000 if none).
answers() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Host: localhost' "$url$1" 2>/dev/null || true; }

# Ready once both guests answer (the first request to each compiles it).
ready=0
for _ in $(seq 1 600); do
  if [[ $(answers /p/echo) == 200 && $(answers /w/echo) == 200 ]]; then ready=1; break; fi
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if ((!ready)); then
  echo "soak: the server did not come up on $addr; its log:" >&2
  tail -n 50 "$work/server.log" >&2
  exit 1
fi

# rss_sample ELAPSED PHASE: appends one line of the server's memory, threads
# and open files to the CSV (nothing if the server is gone). RSS is read 5
# times 0.1 s apart: rss_kib is the lowest (the memory the server keeps:
# what a leak raises), rss_max_kib the highest (instances in flight, an
# /oom's pages not yet returned: transient, and what made single readings
# swing by 50 MiB between samples).
echo "elapsed_s,phase,rss_kib,rss_max_kib,hwm_kib,threads,fds" >"$csv"
rss_sample() {
  local status rss hwm thr fds lo='' hi='' i
  for i in 1 2 3 4 5; do
    status=$(cat "/proc/$server/status" 2>/dev/null) || return 0
    rss=$(awk '/^VmRSS:/ {print $2}' <<<"$status")
    if [[ -z $lo ]] || ((rss < lo)); then lo=$rss; fi
    if [[ -z $hi ]] || ((rss > hi)); then hi=$rss; fi
    if ((i < 5)); then sleep 0.1; fi
  done
  hwm=$(awk '/^VmHWM:/ {print $2}' <<<"$status")
  thr=$(awk '/^Threads:/ {print $2}' <<<"$status")
  fds=$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "$1,$2,$lo,$hi,$hwm,$thr,$fds" >>"$csv"
}
rss_sample 0 idle

step "wrk -t$threads -c$connections -d${seconds}s against $url (RSS every ${sample}s)"
start_ns=$(date +%s%N)
(
  # Samples at start + k*sample, however long each one takes.
  nap=
  trap 'kill $nap 2>/dev/null; exit 0' TERM
  k=0
  while kill -0 "$server" 2>/dev/null; do
    now_ns=$(date +%s%N)
    rss_sample "$(( (now_ns - start_ns) / 1000000000 ))" load
    k=$((k + 1))
    wake_ns=$((start_ns + k * sample * 1000000000))
    now_ns=$(date +%s%N)
    if ((wake_ns > now_ns)); then
      sleep "$(awk -v ns=$((wake_ns - now_ns)) 'BEGIN { printf "%.3f", ns / 1e9 }')" &
      nap=$!
      wait "$nap"
    fi
  done
) &
sampler=$!

wrk_rc=0
# Bounded: wrk stops itself after -d; the outer timeout is a backstop.
timeout --kill-after=10 $((seconds + 60)) \
  wrk -t"$threads" -c"$connections" -d"${seconds}s" --timeout 10s --latency \
  -s scripts/soak.lua "$url/" -- "$loop_every" >"$work/wrk.txt" 2>&1 || wrk_rc=$?
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=
sed -n '/^SOAK /!p' "$work/wrk.txt"

# After the load: alive, still answering both guests, and memory once idle.
alive=0
kill -0 "$server" 2>/dev/null && alive=1
after_p=$(answers /p/echo)
after_w=$(answers /w/echo)
sleep 2
rss_sample "$(( ($(date +%s%N) - start_ns) / 1000000000 ))" after

# A clean shutdown (SIGTERM, drain) should exit 0.
exit_code=dead
if ((alive)); then
  kill -TERM "$server" 2>/dev/null || true
  exit_code=timeout
  for _ in $(seq 1 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  if ! kill -0 "$server" 2>/dev/null; then
    exit_code=0
    wait "$server" || exit_code=$?
  fi
fi

mkdir -p "$(dirname "$out")"
cp "$csv" "$(dirname "$out")/soak-rss.csv"

step "summary ($out)"
verdict=0
SOAK_SECONDS=$seconds SOAK_SAMPLE_SECONDS=$sample SOAK_CONNECTIONS=$connections SOAK_THREADS=$threads \
  SOAK_TIMEOUT_MS=$timeout_ms SOAK_LOOP_EVERY=$loop_every SOAK_MEMORY_LIMIT_MB=$memory_mb \
  SOAK_MAX_GROWTH_PCT=$max_growth_pct SOAK_MAX_GROWTH_MIB=$max_growth_mib \
  SOAK_BIN=$bin WRK_RC=$wrk_rc ALIVE=$alive AFTER_P=$after_p AFTER_W=$after_w EXIT_CODE=$exit_code \
  python3 - "$work/wrk.txt" "$csv" "$work/server.log" "$out" <<'PY' || verdict=$?
import csv, datetime, json, os, platform, re, statistics, subprocess, sys

wrk_path, csv_path, log_path, out_path = sys.argv[1:5]
env = os.environ
seconds, sample = int(env["SOAK_SECONDS"]), int(env["SOAK_SAMPLE_SECONDS"])
connections, threads = int(env["SOAK_CONNECTIONS"]), int(env["SOAK_THREADS"])
timeout_ms, memory_mb = int(env["SOAK_TIMEOUT_MS"]), int(env["SOAK_MEMORY_LIMIT_MB"])
loop_every = int(env["SOAK_LOOP_EVERY"])
max_growth_pct, max_growth_mib = int(env["SOAK_MAX_GROWTH_PCT"]), int(env["SOAK_MAX_GROWTH_MIB"])
wrk_rc, alive = int(env["WRK_RC"]), env["ALIVE"] == "1"
after_p, after_w, exit_code = env["AFTER_P"], env["AFTER_W"], env["EXIT_CODE"]

failures = []
lines = open(wrk_path, errors="replace").read().splitlines()

def kv(prefix):
    for line in lines:
        if line.startswith(prefix + " "):
            return {k: float(v) for k, v in (p.split("=") for p in line.split()[2:])}
    return None

summary = kv("SOAK summary")
latency = kv("SOAK latency_us")
kinds = []
for line in lines:
    if line.startswith("SOAK kind "):
        _, _, name, path, expected, *rest = line.split(" ")
        counts = {}
        if rest and rest[0]:
            counts = {int(s): int(n) for s, n in (p.split("=") for p in rest[0].split(","))}
        kinds.append((name, path, int(expected), counts))
kind_latency = {}
for line in lines:
    if line.startswith("SOAK kindlat "):
        name = line.split()[2]
        kind_latency[name] = {k: float(v) / 1000 for k, v in (p.split("=") for p in line.split()[3:])}
unattributed = {}
for line in lines:
    if line.startswith("SOAK unattributed"):
        rest = line.split(" ", 2)[2:] or [""]
        if rest[0].strip():
            unattributed = {int(s): int(n) for s, n in (p.split("=") for p in rest[0].split(","))}

if wrk_rc != 0 or summary is None:
    failures.append(f"wrk failed (exit {wrk_rc}); see wrk.txt")
    summary = summary or {k: 0 for k in ("duration_us", "requests", "bytes", "connect", "read", "write", "status", "timeout")}
    latency = latency or {k: 0 for k in ("mean", "p50", "p90", "p99", "p999", "max")}

requests = int(summary["requests"])
duration_s = summary["duration_us"] / 1e6 or 1
rps = requests / duration_s
socket_errors = {k: int(summary[k]) for k in ("connect", "read", "write", "timeout")}
if any(socket_errors.values()):
    failures.append("wrk socket errors: " + ", ".join(f"{k} {v}" for k, v in socket_errors.items() if v))

# Responses by path: expected status, 503 (at capacity), anything else.
total_expected = total_503 = total_other = 0
rows = []
for name, path, expected, counts in kinds:
    n = sum(counts.values())
    ok = counts.get(expected, 0)
    busy = counts.get(503, 0) if expected != 503 else 0
    other = {s: c for s, c in counts.items() if s != expected and s != 503}
    total_expected += ok
    total_503 += busy
    total_other += sum(other.values())
    lat = kind_latency.get(name, {})
    lat = f"{lat['p50_us']:.1f} / {lat['p99_us']:.0f} / {lat['max_us']:.0f}" if n and lat else "-"
    rows.append((path, expected, n, ok, busy, ", ".join(f"{s}: {c}" for s, c in sorted(other.items())) or "-", lat))
    if other:
        failures.append(f"{path}: {sum(other.values())} responses not {expected} ({', '.join(f'{s}: {c}' for s, c in sorted(other.items()))})")
    if busy:
        failures.append(f"{path}: {busy} answered 503 (at capacity)")
if unattributed:
    failures.append(f"{sum(unattributed.values())} responses without a soak x-request-id: {unattributed}")
if sum(r[2] for r in rows) + sum(unattributed.values()) != requests and requests:
    failures.append(f"counted {sum(r[2] for r in rows)} responses by path but wrk completed {requests}")

# RSS: "flat" compares the median of the last third of the load samples
# (each the lowest of a burst of readings, see rss_sample in soak.sh)
# with the median of the second third (the first third is warm-up: module
# caches, the pooling allocator's slots and the allocator's arenas filling
# up). It fails only if the growth is more than max_growth_pct percent AND
# more than max_growth_mib MiB: the percentage keeps allocator noise on a
# large heap from failing the run, the MiB floor keeps a few MiB of noise on
# a small one (wasmgate idles at tens of MiB) from reading as 10%. A real
# leak is caught all the same: 8 MiB over the last third of a 600 s run at
# ~2000 requests/s is ~20 bytes a request, and a leak grows with the run.
samples = list(csv.DictReader(open(csv_path)))
load = [s for s in samples if s["phase"] == "load"]
mib = lambda kib: int(kib) / 1024
rss_ok = True
verdict_rss = ""
if len(load) < 6:
    if alive:  # (a dead server has its own failure)
        failures.append(f"only {len(load)} RSS samples under load: too few to judge (lower SOAK_SAMPLE_SECONDS or raise SOAK_SECONDS)")
    rss_ok = False
else:
    third = len(load) // 3
    second = [mib(s["rss_kib"]) for s in load[third:2 * third]]
    last = [mib(s["rss_kib"]) for s in load[2 * third:]]
    second_med, last_med = statistics.median(second), statistics.median(last)
    growth_mib = last_med - second_med
    growth_pct = 100 * growth_mib / second_med
    if growth_pct > max_growth_pct and growth_mib > max_growth_mib:
        rss_ok = False
        failures.append(f"RSS grew {growth_mib:.1f} MiB ({growth_pct:.1f}%) from the second third to the last third of the run")
    verdict_rss = "flat" if rss_ok else "GROWING"

if not alive:
    failures.append("the server died during the run")
if alive and (after_p != "200" or after_w != "200"):
    failures.append(f"after the run, /p/echo answered {after_p} and /w/echo {after_w} (want 200, 200)")
if alive and exit_code != "0":
    failures.append(f"the server did not shut down cleanly on SIGTERM (exit: {exit_code})")

# The log is JSON lines or text (WASMGATE_LOG_FORMAT).
def level(line):
    if line.startswith("{"):
        try:
            return str(json.loads(line).get("level", "")).upper()
        except ValueError:
            return ""
    m = re.search(r"\b(TRACE|DEBUG|INFO|WARN|ERROR)\b", line[:64])
    return m.group(1) if m else ""
log = open(log_path, errors="replace").read().splitlines()
levels = [level(l) for l in log]
warn_lines = levels.count("WARN")
error_lines = [l for l, lv in zip(log, levels) if lv == "ERROR"]
# wasmgate logs a panic as an ERROR event with the message "panic"; Rust's
# default hook (before logging is set up) prints "panicked at".
panics = [l for l in log if "panicked at" in l or re.search(r'"message":\s*"panic"', l)]
if panics:
    failures.append(f"the server log has {len(panics)} panic(s): {panics[0][:200]}")
if error_lines:
    failures.append(f"the server log has {len(error_lines)} ERROR line(s), first: {error_lines[0][:200]}")

def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
rev = git("rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock") else "")
wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].split(" [")[0]
built = datetime.datetime.fromtimestamp(os.path.getmtime(env["SOAK_BIN"]), datetime.timezone.utc)

md = []
w = md.append
w("# Soak")
w("")
w(f"`make soak` ({'PASS' if not failures else 'FAIL'}), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, wasmgate {rev}, "
  f"{os.cpu_count()} CPUs ({platform.machine()}, Linux {platform.release()}), {wrk_version}; "
  f"binary {env['SOAK_BIN']} built {built:%Y-%m-%d %H:%M} UTC.")
w("")
w(f"wrk -t{threads} -c{connections} -d{seconds}s (scripts/soak.lua, a /loop every {loop_every} s per thread) against `wasmgate serve` on 127.0.0.1, "
  f"WASMGATE_TIMEOUT_MS={timeout_ms}, WASMGATE_MEMORY_LIMIT_MB={memory_mb}, WASMGATE_LOG=warn; "
  "localhost/p = tests/fixtures/probe.wasm (wasi:http), localhost/w = tests/fixtures/wagi-probe.wasm (WAGI). "
  "Both wrk and the server share the machine.")
w("")
w("| | |")
w("|---|---|")
w(f"| requests | {requests:,} in {duration_s:.0f} s |")
w(f"| throughput | {rps:,.0f} requests/s |")
w(f"| latency | p50 {latency['p50']/1000:.2f} ms, p90 {latency['p90']/1000:.2f} ms, p99 {latency['p99']/1000:.2f} ms, p99.9 {latency['p999']/1000:.2f} ms, max {latency['max']/1000:.1f} ms |")
w(f"| expected status | {total_expected:,} |")
w(f"| 503 at capacity | {total_503:,} |")
w(f"| other unexpected | {total_other + sum(unattributed.values()):,} |")
w(f"| wrk socket errors | connect {socket_errors['connect']}, read {socket_errors['read']}, write {socket_errors['write']}, timeout {socket_errors['timeout']} |")
if len(load) < 6:
    w(f"| RSS (median) | not judged: {len(load)} samples under load |")
else:
    w(f"| RSS (median) | second third {second_med:.1f} MiB, last third {last_med:.1f} MiB: {growth_mib:+.1f} MiB ({growth_pct:+.1f}%), {verdict_rss} (fails past +{max_growth_pct}% and +{max_growth_mib} MiB) |")
w(f"| RSS peak (VmHWM) | {mib(samples[-1]['hwm_kib']):.1f} MiB |" if samples else "| RSS peak | - |")
w(f"| server after the run | alive, /p/echo {after_p}, /w/echo {after_w}, SIGTERM exit {exit_code} |" if alive
  else f"| server after the run | DEAD (it exited during the run; see server.log) |")
w(f"| server log | {warn_lines:,} WARN, {len(error_lines)} ERROR, {len(panics)} panics |")
w("")
w("## Responses by path")
w("")
w("Latency as wrk's Lua sees it (request built to response parsed, so it includes queueing in wrk), p50 / p99 / max in ms.")
w("")
w("| path | expected | responses | expected status | 503 | other | latency p50 / p99 / max (ms) |")
w("|---|---|---:|---:|---:|---|---|")
for path, expected, n, ok, busy, other, lat in rows:
    w(f"| `{path}` | {expected} | {n:,} | {ok:,} | {busy:,} | {other} | {lat} |")
w("")
w("## Memory over time")
w("")
w("RSS: the lowest and highest of 5 readings 0.1 s apart; the verdict uses the lowest.")
w("")
w("| t (s) | phase | RSS (MiB) | RSS max (MiB) | VmHWM (MiB) | threads | open fds |")
w("|---:|---|---:|---:|---:|---:|---:|")
# At most ~30 rows (every sample is in soak-rss.csv): idle, load, after.
step = max(1, -(-len(load) // 28))
shown = [s for s in samples if s["phase"] != "load"]
shown += load[::step] + ([load[-1]] if load and (len(load) - 1) % step else [])
shown.sort(key=lambda s: (s["phase"] != "idle", s["phase"] == "after", int(s["elapsed_s"])))
for s in shown:
    w(f"| {s['elapsed_s']} | {s['phase']} | {mib(s['rss_kib']):.1f} | {mib(s['rss_max_kib']):.1f} | {mib(s['hwm_kib']):.1f} | {s['threads']} | {s['fds']} |")
w("")
if failures:
    w("## Failures")
    w("")
    for f in failures:
        w(f"- {f}")
    w("")
text = "\n".join(md)
open(out_path, "w").write(text)
print(text)
sys.exit(1 if failures else 0)
PY

if ((verdict == 0)); then
  passed=1
  echo "soak: PASS"
else
  echo "soak: FAIL (see $out)" >&2
  exit 1
fi
