#!/usr/bin/env python3
"""A scriptable SMTP/LMTP sink for Sluice's delivery tests (aiosmtpd).

Stores every accepted message as OUT/NNNN.eml plus OUT/NNNN.json (the
envelope as this server saw it) and answers recipients by their local part:

  reject*     550 5.1.1 (permanent)
  defer*      451 4.2.0 every time
  once*       451 4.2.0 the first time, accepted after that
  anything    accepted

Options: --host, --port (0: pick one), --out DIR, --lmtp, --no-smtputf8,
--size N (SIZE limit), --delay S (seconds before answering the final dot),
--tls-cert/--tls-key (offer STARTTLS). Prints "LISTENING <port>" when ready
and runs until killed (or --max-seconds).

OUT/events.log gets one line per event as it happens ("rcpt ADDR CODE",
"data-start N RCPTS", "data-end N"), so a test can see a transaction that is
in progress (for instance one held up by --delay) before it is stored.
"""
import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, out, delay, lmtp):
        self.out = out
        self.delay = delay
        self.lmtp = lmtp
        self.seen_once = set()
        self.count = 0
        self.events = os.path.join(out, "events.log")

    def event(self, text):
        with open(self.events, "a") as f:
            f.write(text + "\n")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_reply(envelope, address, rcpt_options)
        self.event("rcpt %s %s" % (address, reply[:3]))
        return reply

    def rcpt_reply(self, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 <%s>: no such user here" % address
        if local.startswith("defer"):
            return "451 4.2.0 <%s>: try again later" % address
        if local.startswith("once") and address not in self.seen_once:
            self.seen_once.add(address)
            return "451 4.2.0 <%s>: not this time" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        # Numbered when the data arrives, so a delayed transaction does not
        # take the number of one that finishes first.
        self.count += 1
        number = self.count
        self.event("data-start %04d %s" % (number, " ".join(envelope.rcpt_tos)))
        if self.delay:
            await asyncio.sleep(self.delay)
        base = os.path.join(self.out, "%04d" % number)
        data = envelope.original_content or envelope.content
        with open(base + ".eml.tmp", "wb") as f:
            f.write(data)
        meta = {
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "tls": session.ssl is not None,
            "peer": list(session.peer) if session.peer else None,
        }
        with open(base + ".json", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        self.event("data-end %04d" % number)
        if self.lmtp:
            return "\r\n".join("250 2.0.0 <%s> delivered" % r for r in envelope.rcpt_tos)
        return "250 2.0.0 Ok: stored as %04d" % number


class LMTPController(Controller):
    def factory(self):
        return LMTP(self.handler, **self.SMTP_kwargs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--lmtp", action="store_true")
    p.add_argument("--no-smtputf8", action="store_true")
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--max-seconds", type=float, default=600.0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    handler = Handler(a.out, a.delay, a.lmtp)
    kwargs = {
        "enable_SMTPUTF8": not a.no_smtputf8,
        "data_size_limit": a.size or None,
        "hostname": "sink.test",
    }
    if a.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        kwargs["tls_context"] = ctx
    cls = LMTPController if a.lmtp else Controller
    port = a.port
    if port == 0:
        import socket
        s = socket.socket()
        s.bind((a.host, 0))
        port = s.getsockname()[1]
        s.close()
    ctl = cls(handler, hostname=a.host, port=port, server_kwargs=kwargs)
    # aiosmtpd passes server_kwargs through SMTP_kwargs on newer versions.
    ctl.SMTP_kwargs = kwargs
    ctl.start()
    print("LISTENING %d" % port, flush=True)
    try:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(asyncio.sleep(a.max_seconds))
    except KeyboardInterrupt:
        pass
    finally:
        ctl.stop()


if __name__ == "__main__":
    sys.exit(main())
