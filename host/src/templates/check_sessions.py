#!/usr/bin/env python3
"""Run the SMTP sessions of sessions.toml through a real Sluice gateway
with this policy loaded, and check every reply.

    python3 check_sessions.py [COMPONENT]

COMPONENT defaults to target/<folder name>.wasm (what `sluice policy build .`
makes). The gateway is `sluice` on PATH, or the binary named by $SLUICE.
It listens on 127.0.0.1 only and is stopped at the end. Prints
"N passed, N failed" and exits non-zero on a failure. Made by
`sluice policy new`; standard library only (Python 3.11+).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
STARTUP = 300  # seconds: a first start compiles the component (Python: long)
REPLY = 30


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError(f"connection closed (so far {lines})")
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if line[3:4] != "-":
            return line[:3] + " " + " ".join(l[4:] for l in lines)


def matches(got, want):
    return got.startswith(str(want))


def start(sluice, component, table, work):
    cache = os.path.join(HERE, "target", "engine-cache")
    policy = table.get("policy", {})
    config = {
        "data_dir": os.path.join(work, "data"),
        "hostname": "mx.test.example",
        "local_domains": ["example.com"],
        "relay_networks": ["127.0.0.0/8"],
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    lines += ['[[listener]]', 'address = "127.0.0.1:0"']
    lines += ["[queue]", "deliver = false"]
    lines += ["[policy_engine]", f"cache_dir = {json.dumps(cache)}", "max_instances = 32"]
    lines += ["[[policy]]", f"name = {json.dumps(policy.get('name', 'policy'))}"]
    lines += [f"path = {json.dumps(component)}"]
    lines += [f"capabilities = {json.dumps(policy.get('capabilities', []))}"]
    for key in ("on_error", "max_memory", "timeout"):
        if key in policy:
            lines.append(f"{key} = {json.dumps(policy[key])}")
    lines.append("[policy.config]")
    for k, v in policy.get("config", {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    path = os.path.join(work, "sluice.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [sluice, "serve", "--config", path, "--log-format", "json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    found, log = [], []

    def drain():
        for raw in proc.stderr:
            log.append(raw.decode("utf-8", "replace"))
            try:
                fields = json.loads(raw).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "listening":
                host, port = fields["address"].rsplit(":", 1)
                found.append((host, int(port)))

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + STARTUP
    while not found:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the gateway did not start:\n" + "".join(log[-30:]))
        time.sleep(0.05)
    return proc, found[0], log


def run_session(addr, session):
    with socket.create_connection(addr, timeout=REPLY) as s:
        f = s.makefile("rb")
        greeting = reply(f)
        want = session.get("greeting", 220)
        if not matches(greeting, want):
            return f"greeting: got {greeting!r}, want {want}"
        for send, want in session["steps"]:
            s.sendall(send.encode() + b"\r\n")
            got = reply(f)
            if not matches(got, want):
                return f"{send!r}: got {got!r}, want {want}"
    return None


def main():
    with open(os.path.join(HERE, "sessions.toml"), "rb") as f:
        table = tomllib.load(f)
    name = os.path.basename(HERE)
    component = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "target", f"{name}.wasm"))
    if not os.path.isfile(component):
        sys.exit(f"{component} is missing: build it first with `sluice policy build {HERE}`")
    sluice = os.environ.get("SLUICE") or shutil.which("sluice")
    if not sluice:
        sys.exit("sluice not found: put it on PATH or set SLUICE to the gateway binary")
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="sluice-sessions-") as work:
        proc, addr, log = start(sluice, component, table, work)
        try:
            for session in table.get("session", []):
                problem = run_session(addr, session)
                if problem is None:
                    passed += 1
                    print(f"ok: {session.get('name', '?')}")
                else:
                    failed += 1
                    print(f"FAILED: {session.get('name', '?')}: {problem}")
        finally:
            proc.kill()
            proc.wait()
        if failed:
            print("gateway log (last lines):\n" + "".join(log[-20:]))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
