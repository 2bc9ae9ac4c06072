#!/usr/bin/env python3
"""Send one message with smtplib and print what happened as one JSON object.

Used by the Sluice end-to-end tests (tests/e2e). Standard library only.

    send.py HOST PORT --from A --to B [--to C] --file MSG
            [--starttls | --ssl] [--helo NAME] [--send-message]
            [--expect-out PATH]

--send-message parses the file with the email package and sends it with
SMTP.send_message (which re-generates the message); without it the file's
bytes go through SMTP.sendmail-style DATA unchanged (apart from smtplib's
line-ending normalisation and dot-stuffing). --expect-out writes the octets
the server should store: the DATA payload after line-ending normalisation,
before dot-stuffing.

Output: {"data_reply": [code, text], "refused": {...}, "tls": {...} | null,
"features": [...]}. TLS certificates are not verified (the gateway under
test makes a self-signed one).
"""

import argparse
import email
import email.policy
import json
import re
import smtplib
import ssl
import sys

TIMEOUT = 20


def normalise(data: bytes) -> bytes:
    """What smtplib's DATA sends, before dot-stuffing."""
    data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Recording:
    """Mixin that remembers the DATA payload and the server's final reply."""

    data_reply = None
    payload = None

    def data(self, msg):
        if isinstance(msg, str):
            msg = msg.encode("ascii")
        self.payload = normalise(msg)
        self.data_reply = super().data(msg)
        return self.data_reply


class RecordingSMTP(Recording, smtplib.SMTP):
    pass


class RecordingSMTPSSL(Recording, smtplib.SMTP_SSL):
    pass


def tls_info(sock):
    if isinstance(sock, ssl.SSLSocket):
        return {"version": sock.version(), "cipher": sock.cipher()[0]}
    return None


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--helo", default="smtplib.client.example")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--starttls", action="store_true")
    mode.add_argument("--ssl", action="store_true")
    p.add_argument("--send-message", action="store_true")
    p.add_argument("--expect-out")
    args = p.parse_args()

    with open(args.file, "rb") as f:
        raw = f.read()

    if args.ssl:
        smtp = RecordingSMTPSSL(
            args.host, args.port, local_hostname=args.helo,
            timeout=TIMEOUT, context=insecure_context())
    else:
        smtp = RecordingSMTP(args.host, args.port, local_hostname=args.helo, timeout=TIMEOUT)
    try:
        smtp.ehlo()
        if args.starttls:
            code, text = smtp.starttls(context=insecure_context())
            if code != 220:
                raise SystemExit(f"STARTTLS refused: {code} {text!r}")
            smtp.ehlo()
        features = sorted(smtp.esmtp_features)
        if args.send_message:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            refused = smtp.send_message(msg, from_addr=args.sender, to_addrs=args.to)
        else:
            options = []
            if any(b > 127 for b in raw) and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            refused = smtp.sendmail(args.sender, args.to, raw, mail_options=options)
        tls = tls_info(smtp.sock)
        smtp.quit()
    except smtplib.SMTPException as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1

    if args.expect_out:
        with open(args.expect_out, "wb") as f:
            f.write(smtp.payload)
    code, text = smtp.data_reply
    print(json.dumps({
        "data_reply": [code, text.decode("utf-8", "replace")],
        "refused": {k: [v[0], v[1].decode("utf-8", "replace")] for k, v in refused.items()},
        "tls": tls,
        "features": features,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
