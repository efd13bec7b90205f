#!/usr/bin/env python3
"""Storms against one route, latency of another: `make storm`.

Starts `wasmgate serve` on the embedded default in a temporary data dir,
deploys the probe guest at /storm and the hello example at /other, and
measures /other's latency (sequential requests, one connection each):

  quiet      no storm (the reference of this run)
  loops      64 concurrent /storm/loop requests (each runs to its deadline)
  slow-body  300 clients sending a declared 100-byte body a byte a second
  oom        64 concurrent /storm/oom requests (memory bombs)

and prints p50/p99/max per phase, the statuses the storm got, and the
server's RSS after each phase. Knobs: WASMGATE (binary; default
target/release/wasmgate, else target/debug/wasmgate), STORM_SECONDS (8).
"""

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = float(os.environ.get("STORM_SECONDS", "8"))


def binary():
    if os.environ.get("WASMGATE"):
        return os.environ["WASMGATE"]
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, "wasmgate")
        if os.path.exists(path):
            return path
    sys.exit("build wasmgate first (cargo build --release)")


async def request(port, path, method="GET", body=b"", timeout=60):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


async def slow_client(port, stop):
    """A declared 100-byte body, a byte a second, until answered or stopped."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    writer.write(b"POST /storm/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    status = 0
    try:
        for _ in range(100):
            if stop.is_set():
                break
            writer.write(b"a")
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(64), 1.0)
                if data:
                    status = int(data.split(b" ", 2)[1])
                    break
            except asyncio.TimeoutError:
                pass
    except (OSError, ValueError, IndexError):
        pass
    finally:
        writer.close()
    return status


async def measure(port, seconds):
    latencies, statuses = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        statuses.append(await request(port, "/other/x"))
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.02)
    return latencies, statuses


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def summary(name, latencies, statuses, storm, rss):
    latencies = sorted(latencies)
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    ok = sum(1 for s in statuses if s == 200)
    counts = {}
    for s in storm:
        counts[s] = counts.get(s, 0) + 1
    print(
        f"| {name} | {len(latencies)} | {ok} | {p(0.5):.1f} | {p(0.99):.1f} | {latencies[-1] * 1000:.1f} "
        f"| {', '.join(f'{k}: {v}' for k, v in sorted(counts.items())) or '-'} | {rss:.0f} |"
    )


async def main():
    exe = binary()
    data = tempfile.mkdtemp(prefix="wasmgate-storm-")
    env = dict(os.environ, WASMGATE_DATA_DIR=data, WASMGATE_LOG="error", WASMGATE_TIMEOUT_MS="5000")
    for route, module in (("/storm", "tests/fixtures/probe.wasm"), ("/other", "examples/hello-rust/hello.wasm")):
        subprocess.run([exe, "deploy", os.path.join(ROOT, module), "--route", route], env=env,
                       check=True, stdout=subprocess.DEVNULL)
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen([exe, "serve", "--addr", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                if await request(port, "/other/x", timeout=2) == 200:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.1)
        await request(port, "/storm/echo")
        print(f"binary: {exe}")
        print("| phase | requests to /other | 200s | p50 ms | p99 ms | max ms | storm statuses | RSS MiB after |")
        print("|---|---|---|---|---|---|---|---|")
        lat, st = await measure(port, SECONDS / 2)
        summary("quiet", lat, st, [], rss_mib(server.pid))

        for name, path in (("64 loops", "/storm/loop"), ("64 memory bombs", "/storm/oom")):
            storm = [asyncio.create_task(request(port, path)) for _ in range(64)]
            await asyncio.sleep(0.5)
            lat, st = await measure(port, SECONDS)
            statuses = await asyncio.gather(*storm)
            summary(name, lat, st, statuses, rss_mib(server.pid))

        stop = asyncio.Event()
        clients = [asyncio.create_task(slow_client(port, stop)) for _ in range(300)]
        await asyncio.sleep(1.0)
        lat, st = await measure(port, SECONDS)
        statuses = await asyncio.gather(*clients)
        stop.set()
        summary("300 slow bodies", lat, st, statuses, rss_mib(server.pid))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
