#!/usr/bin/env python3
"""Resident memory per idle SMTP connection.

    python3 bench/idle_rss.py [--bin target/release/sluice] [--connections 5000]
                              [--policy path/to/policy.wasm ...]

Starts the gateway on loopback with a private data directory, opens
N connections from distinct addresses of 127.3.0.0/16 (100 per /24, under
the default per-network cap), reads each greeting and then holds them idle.
Prints the gateway's VmRSS before and after and the cost per connection,
and how long it took to start and how much address space it reserved
(with policies, the instance pool is sized for max_connections sessions:
each idle session holds one instance per policy).
Everything started is stopped; the run is bounded in time.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--bin", default="target/release/sluice")
ap.add_argument("--connections", type=int, default=5000)
ap.add_argument("--policy", action="append", default=[], help="a policy component (repeatable)")
ap.add_argument("--cache", help="[policy_engine] cache_dir (default: in the temporary folder)")
args = ap.parse_args()


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


with tempfile.TemporaryDirectory() as tmp:
    port = free_port()
    cfg = os.path.join(tmp, "sluice.toml")
    with open(cfg, "w") as f:
        f.write(
            f"""data_dir = "{tmp}/data"
hostname = "mx.bench.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:{port}"

[limits]
max_connections = {args.connections + 1000}

[queue]
deliver = false
"""
        )
        if args.policy:
            f.write(f'\n[policy_engine]\ncache_dir = "{args.cache or tmp + "/cache"}"\n')
        for i, path in enumerate(args.policy):
            f.write(f'\n[[policy]]\nname = "p{i}"\npath = "{os.path.abspath(path)}"\non_error = "continue"\n')
    started = time.time()
    proc = subprocess.Popen(
        [args.bin, "serve", "--config", cfg],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socks = []
    try:
        deadline = time.time() + 30
        while True:
            try:
                probe = socket.create_connection(("127.0.0.1", port), timeout=1)
                probe.recv(512)
                probe.close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("gateway did not start")
                time.sleep(0.05)
        start_s = time.time() - started
        time.sleep(1)
        before = rss_kib(proc.pid)
        deadline = time.time() + 120
        for i in range(args.connections):
            if time.time() > deadline:
                sys.exit("timed out opening connections")
            src = f"127.3.{i // 100}.{i % 100 + 1}"
            s = socket.socket()
            s.bind((src, 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            greeting = s.recv(512)
            if not greeting.startswith(b"220"):
                sys.exit(f"connection {i}: {greeting!r}")
            socks.append(s)
        time.sleep(2)
        after = rss_kib(proc.pid)
        per = (after - before) / args.connections
        print(f"policies: {len(args.policy)}, started in {start_s:.2f} s")
        print(f"address space (VmSize): {status_kib(proc.pid, 'VmSize') / 2**20:.1f} GiB")
        print(f"connections: {args.connections}")
        print(f"rss before: {before} KiB, after: {after} KiB")
        print(f"per idle connection: {per:.1f} KiB")
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
