#!/usr/bin/env python3
"""Run a scripted raw SMTP dialog that can switch to TLS, and print a JSON
transcript. Used by the Sluice end-to-end tests (tests/e2e) for protocol
cases that need TLS on a raw socket (STARTTLS injection, implicit TLS).
Standard library only; certificates are not verified.

    tls_session.py HOST PORT [--implicit] < steps.json

steps.json is a list of steps:
    ["send", "TEXT"]   write TEXT (latin-1) in one write
    ["reply"]          read one (possibly multi-line) reply
    ["tls"]            start TLS on the connection (after a 220 to STARTTLS)
    ["idle", MS]       read for MS milliseconds; any octets are recorded
    ["close"]          close the connection

Output: {"events": [...], "tls": {"version", "cipher"} | null, "error": str | null}
where an event is ["reply", code, [lines]] or ["idle", "octets received"].
"""

import argparse
import json
import socket
import ssl
import sys
import time

TIMEOUT = 10.0


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_line(self, deadline):
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete reply line")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def read_reply(self):
        deadline = time.monotonic() + TIMEOUT
        lines = []
        while True:
            line = self.read_line(deadline)
            if len(line) < 3 or not line[:3].isdigit():
                raise ValueError(f"malformed reply line {line!r}")
            lines.append(line)
            if len(line) == 3 or line[3] != "-":
                return int(line[:3]), lines

    def idle(self, ms):
        end = time.monotonic() + ms / 1000.0
        got = self.buf
        self.buf = b""
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
        return got.decode("utf-8", "replace")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--implicit", action="store_true")
    args = p.parse_args()
    steps = json.load(sys.stdin)

    events = []
    tls = None
    error = None
    sock = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
    try:
        if args.implicit:
            sock = insecure_context().wrap_socket(sock)
            tls = {"version": sock.version(), "cipher": sock.cipher()[0]}
        conn = Conn(sock)
        for step in steps:
            kind = step[0]
            if kind == "send":
                conn.sock.sendall(step[1].encode("latin-1"))
            elif kind == "reply":
                code, lines = conn.read_reply()
                events.append(["reply", code, lines])
            elif kind == "tls":
                if conn.buf:
                    raise ValueError(f"plaintext left before TLS: {conn.buf!r}")
                conn.sock = insecure_context().wrap_socket(conn.sock)
                tls = {"version": conn.sock.version(), "cipher": conn.sock.cipher()[0]}
            elif kind == "idle":
                events.append(["idle", conn.idle(step[1])])
            elif kind == "close":
                conn.sock.close()
            else:
                raise ValueError(f"unknown step {step!r}")
    except Exception as e:  # reported to the test, which decides
        error = f"{type(e).__name__}: {e}"
    finally:
        sock.close()
    print(json.dumps({"events": events, "tls": tls, "error": error}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
