#!/usr/bin/env python3
"""A slow-connection attack on an SMTP server, for the hostile-load tests.

Opens COUNT connections from many source addresses of a loopback network
(127.N.x.y, 250 addresses per /24), each sending one byte of a command
line now and then and never finishing it, for HOLD seconds; a connection
the server closes is opened again (with --reconnect) until the time is
up. Prints one JSON object: how many connections were opened, refused
with 421 at once, closed by the server later, and open at the end.
Bounded in count and time; talks only to the loopback address it is given.
"""

import argparse
import asyncio
import json
import resource
import time


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--hold", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--net", type=int, default=1, help="the N of 127.N.x.y")
    ap.add_argument("--reconnect", action="store_true")
    args = ap.parse_args()
    assert args.host.startswith("127.") or args.host == "::1", "loopback only"
    assert 1 <= args.count <= 20000 and 0 < args.hold <= 300
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 1000), hard))
    stats = {"opened": 0, "refused_421": 0, "closed_by_server": 0, "connect_failed": 0, "open_at_end": 0}
    deadline = time.monotonic() + args.hold
    gate = asyncio.Semaphore(200)  # connects in flight at once

    async def one(i):
        src = f"127.{args.net}.{i // 250}.{i % 250 + 1}"
        while time.monotonic() < deadline:
            try:
                async with gate:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(args.host, args.port, local_addr=(src, 0)), 10
                    )
            except (OSError, asyncio.TimeoutError):
                stats["connect_failed"] += 1
                await asyncio.sleep(1)
                continue
            stats["opened"] += 1
            closed = False
            try:
                first = await asyncio.wait_for(reader.read(512), min(5, max(0.1, deadline - time.monotonic())))
                if first.startswith(b"421"):
                    stats["refused_421"] += 1
                    closed = True
                elif not first:
                    stats["closed_by_server"] += 1
                    closed = True
            except asyncio.TimeoutError:
                pass
            except OSError:
                stats["closed_by_server"] += 1
                closed = True
            # One byte of "EHLO ..." now and then, never a whole line.
            while not closed and time.monotonic() < deadline:
                try:
                    writer.write(b"E")
                    await writer.drain()
                    got = await asyncio.wait_for(
                        reader.read(512), min(args.interval, max(0.05, deadline - time.monotonic()))
                    )
                    if not got:
                        stats["closed_by_server"] += 1
                        closed = True
                except asyncio.TimeoutError:
                    continue
                except OSError:
                    stats["closed_by_server"] += 1
                    closed = True
            if not closed:
                stats["open_at_end"] += 1
            writer.close()
            if not closed or not args.reconnect:
                return
            await asyncio.sleep(1.0)

    await asyncio.gather(*(one(i) for i in range(args.count)))
    print(json.dumps(stats))


asyncio.run(main())
