#!/usr/bin/env python3
"""Clients of switchboard's event stream (GET /api/v1/events), one per
token in TOKENS_FILE (one per line), in one process: each reads and
counts its events. Prints "connected N" once all are streaming; on
SIGTERM (or after MAX_SECONDS, whichever comes first) prints
"events TOTAL" and exits.

    sse_clients.py HOST PORT TOKENS_FILE
"""
import asyncio
import signal
import sys

MAX_SECONDS = 900


async def client(host, port, token, counts, i, ready):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise SystemExit(f"client {i}: {status!r}")
    ready.release()
    while True:
        data = await reader.read(65536)
        if not data:
            return
        counts[i] += data.count(b"data:")


async def main():
    host, port = sys.argv[1], int(sys.argv[2])
    with open(sys.argv[3]) as f:
        tokens = [line.strip() for line in f if line.strip()]
    n = len(tokens)
    counts = [0] * n
    ready = asyncio.Semaphore(0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(client(host, port, tokens[i], counts, i, ready)) for i in range(n)]
    for _ in range(n):
        await ready.acquire()
    print(f"connected {n}", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), MAX_SECONDS)
    except asyncio.TimeoutError:
        pass
    for t in tasks:
        t.cancel()
    print(f"events {sum(counts)}", flush=True)


asyncio.run(main())
