#!/usr/bin/env python3
"""Parse a delivery status notification (RFC 3464 inside an RFC 6522
multipart/report; RFC 6533 global types too) and print what it says as one
JSON object. The standard `email` package reads the structure and the
outer header; the parts' contents are read from the octets between the
boundary lines, because the package mangles 8-bit octets inside message/*
parts.

Used by Sluice's delivery tests (tests/e2e). Standard library only.

    dsn.py FILE        # "-" reads standard input

A Maildir file's own leading Return-Path:/Delivered-To: fields are simply
header fields of the outer message. Output (field names in lower case):

  {"headers": {name: value, ...},            outer header fields (first of each)
   "content_type": "multipart/report",
   "report_type": "delivery-status",
   "parts": ["text/plain", "message/delivery-status", ...],
   "text": "...",                            the first text/plain part
   "per_message": {name: value},             first block of the report
   "recipients": [{name: value}, ...],       one per recipient block
   "returned_headers": {name: value} | null, text/rfc822-headers or
                                             message/global-headers part
   "returned_message": {"headers": {...}, "body": "..."} | null
                                             message/rfc822 or message/global
  }
"""

import email
import email.policy
import json
import sys


def text(value):
    """A header value or payload as proper text: the parser keeps 8-bit
    octets as surrogate escapes; turn them back into UTF-8."""
    raw = str(value).encode("utf-8", errors="surrogateescape")
    return raw.decode("utf-8", errors="replace")


def fields(items):
    """Header (name, value) pairs as a dict of the first value per lower-case
    name, folding undone."""
    out = {}
    for name, value in items:
        key = name.lower()
        if key not in out:
            out[key] = " ".join(text(value).split())
    return out


def blocks(body):
    """Header-style blocks separated by empty lines, as dicts."""
    result = []
    current = []
    for line in body.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                result.append(current)
                current = []
            continue
        if line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            current.append((name.strip(), value.strip()))
    if current:
        result.append(current)
    return [fields(b) for b in result]


def raw_parts(data, boundary):
    """The bodies of the top-level parts of a multipart message, as octets,
    split at the boundary lines (RFC 2046 section 5.1.1). The email package
    replaces 8-bit octets inside message/* parts, so the report parts are
    read from these instead."""
    delimiter = b"\r\n--" + boundary.encode("ascii")
    wire = b"\r\n" + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    pieces = wire.split(delimiter)
    bodies = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        # The rest of the boundary line, then the part's header section.
        _, _, part = piece.partition(b"\r\n")
        if part.startswith(b"\r\n"):
            bodies.append(part[2:])
            continue
        _, _, body = part.partition(b"\r\n\r\n")
        bodies.append(body)
    return bodies


def part_text(part, raw):
    """The content of a non-multipart part as text: decoded when it has a
    transfer encoding, the raw octets as UTF-8 otherwise."""
    cte = (part.get("Content-Transfer-Encoding") or "").strip().lower()
    if cte in ("base64", "quoted-printable"):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", errors="replace")
    return raw.decode("utf-8", errors="replace")


def main():
    path = sys.argv[1]
    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    out = {
        "headers": fields(msg.items()),
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "parts": [],
        "text": None,
        "per_message": None,
        "recipients": [],
        "returned_headers": None,
        "returned_message": None,
    }
    parts = list(msg.iter_parts()) if msg.is_multipart() else []
    bodies = raw_parts(data, msg.get_boundary() or "") if parts else []
    for part, raw in zip(parts, bodies):
        ctype = part.get_content_type()
        out["parts"].append(ctype)
        body = part_text(part, raw)
        if ctype == "text/plain" and out["text"] is None:
            out["text"] = body
        elif ctype in ("message/delivery-status", "message/global-delivery-status"):
            found = blocks(body)
            if found:
                out["per_message"] = found[0]
                out["recipients"] = found[1:]
        elif ctype in ("text/rfc822-headers", "message/global-headers"):
            found = blocks(body.split("\r\n\r\n", 1)[0])
            out["returned_headers"] = found[0] if found else {}
        elif ctype in ("message/rfc822", "message/global"):
            head, _, rest = body.partition("\r\n\r\n")
            found = blocks(head)
            out["returned_message"] = {"headers": found[0] if found else {}, "body": rest}
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    sys.exit(main())
