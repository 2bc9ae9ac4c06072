#!/usr/bin/env python3
"""Hot-swap benchmark (run through bench/swap.sh, which builds first).

1. Swap latency: the time from a new policy file landing (written beside,
   renamed over the watched file) to the first new SMTP session served by
   it, measured by a probe client that opens sessions back to back and asks
   the `versioned` test guest for its version. Three ways: the folder
   watcher with a compiled-cache miss (a version never seen: compiled), the
   watcher with a cache hit (a version compiled before), and SIGHUP with a
   cache hit (no debounce).
2. Throughput dip: smtp-source sends N messages with 20 sessions in
   parallel into the gateway (spool only) with and without a swap every
   0.5 s; the rates are compared.

Everything runs on 127.0.0.1; the gateway and smtp-source are started and
stopped by PID.
"""

import json
import os
import re
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MARKER = b"sluice-test-version:"


def version_bytes(base: bytes, n: int) -> bytes:
    at = base.index(MARKER) + len(MARKER)
    return base[:at] + b"%04d" % n + base[at + 4 :]


def land(dest: str, data: bytes) -> float:
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    t = time.monotonic()
    os.rename(tmp, dest)
    return t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(port: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("probe.example")
        c.mail("probe@example.com")
        code, text = c.rcpt("version@example.com")
        return text.decode()


def wait_version(port: int, want: str, since: float, limit: float = 60.0) -> float:
    while time.monotonic() - since < limit:
        if probe(port).endswith(want):
            return time.monotonic() - since
    raise SystemExit(f"{want} not served within {limit} s")


class Gateway:
    def __init__(self, sluice: str, work: str, wasm: str):
        self.port = free_port()
        self.work = work
        cfg = os.path.join(work, "sluice.toml")
        with open(cfg, "w") as f:
            f.write(
                f"""data_dir = "{work}/data"
hostname = "swap.localhost"
local_domains = ["example.com"]
relay_networks = ["127.0.0.0/8"]
[[listener]]
address = "127.0.0.1:{self.port}"
[limits]
max_connections = 500
max_connections_per_ip = 500
[queue]
deliver = false
[log]
level = "warn"
[policy_engine]
cache_dir = "{work}/cache"
[[policy]]
name = "versioned"
path = "{wasm}"
capabilities = ["kv"]
"""
            )
        self.log = open(os.path.join(work, "sluice.log"), "w")
        self.proc = subprocess.Popen(
            [sluice, "serve", "--config", cfg], stdout=subprocess.DEVNULL, stderr=self.log
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                probe(self.port)
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit("the gateway did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def latency(sluice: str, base: bytes, repeat: int) -> dict:
    rows = {"watch, cache miss": [], "watch, cache hit": [], "SIGHUP, cache hit": []}
    with tempfile.TemporaryDirectory(prefix="sluice-swap-") as work:
        wasm = os.path.join(work, "policies", "versioned.wasm")
        os.makedirs(os.path.dirname(wasm))
        land(wasm, version_bytes(base, 1))
        gw = Gateway(sluice, work, wasm)
        try:
            next_version = 2
            for _ in range(repeat):
                # Miss: a version never compiled.
                v = next_version
                next_version += 1
                t = land(wasm, version_bytes(base, v))
                rows["watch, cache miss"].append(wait_version(gw.port, f"version {v}", t))
                # Hit: back to version 1, compiled at start.
                t = land(wasm, version_bytes(base, 1))
                rows["watch, cache hit"].append(wait_version(gw.port, "version 1", t))
            # SIGHUP: the watcher is still on, so land first, let the
            # watcher's reload finish, then time the signal alone (it
            # finds the file unchanged: the figure is the reload itself).
            for _ in range(repeat):
                v = next_version
                next_version += 1
                land(wasm, version_bytes(base, v))
                wait_version(gw.port, f"version {v}", time.monotonic())
                t = land(wasm, version_bytes(base, 1))
                gw.proc.send_signal(signal.SIGHUP)
                rows["SIGHUP, cache hit"].append(wait_version(gw.port, "version 1", t))
        finally:
            gw.stop()
    return rows


def throughput(sluice: str, base: bytes, n: int, repeat: int) -> dict:
    out = {"no swap": [], "a swap every 0.5 s": []}
    for rep in range(repeat):
        for case in out:
            with tempfile.TemporaryDirectory(prefix="sluice-swap-") as work:
                wasm = os.path.join(work, "policies", "versioned.wasm")
                os.makedirs(os.path.dirname(wasm))
                land(wasm, version_bytes(base, 1))
                gw = Gateway(sluice, work, wasm)
                try:
                    # Warm the cache with version 2 so swaps are cache hits.
                    land(wasm, version_bytes(base, 2))
                    wait_version(gw.port, "version 2", time.monotonic())
                    t0 = time.monotonic()
                    src = subprocess.Popen(
                        ["smtp-source", "-s", "20", "-m", str(n), "-l", "1024",
                         "-f", "a@example.com", "-t", "b@example.com",
                         f"127.0.0.1:{gw.port}"],
                        stdout=subprocess.DEVNULL,
                    )
                    swaps = 0
                    while src.poll() is None:
                        time.sleep(0.5)
                        if case != "no swap" and src.poll() is None:
                            land(wasm, version_bytes(base, 1 + swaps % 2))
                            swaps += 1
                    secs = time.monotonic() - t0
                    if src.returncode != 0:
                        raise SystemExit(f"smtp-source failed: {src.returncode}")
                    out[case].append((n / secs, swaps))
                finally:
                    gw.stop()
    return out


def main():
    sluice, guest = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv
    base = open(guest, "rb").read()
    repeat = 3 if quick else 7
    n = 2000 if quick else 10000
    print(f"## Hot swap ({'quick' if quick else 'full'} run; load average {os.getloadavg()[0]:.2f})\n")
    print("Time from the new file landing to the first new session served by it:\n")
    print("| trigger | runs | median | min | max |")
    print("|---|---|---|---|---|")
    for name, xs in latency(sluice, base, repeat).items():
        ms = [x * 1000 for x in xs]
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | {max(ms):.0f} ms |")
    print(f"\nThroughput into the spool, smtp-source 20 sessions x {n} messages of 1 KB:\n")
    print("| case | runs | msgs/s (median) | swaps per run |")
    print("|---|---|---|---|")
    res = throughput(sluice, base, n, 1 if quick else 3)
    rates = {}
    for name, xs in res.items():
        rates[name] = statistics.median(r for r, _ in xs)
        print(f"| {name} | {len(xs)} | {rates[name]:.0f} | {statistics.median(s for _, s in xs):.0f} |")
    a, b = rates["no swap"], rates["a swap every 0.5 s"]
    print(f"\nDip with swaps: {100 * (a - b) / a:+.1f} % (positive = slower)")


if __name__ == "__main__":
    main()
