"""A fixed-rate HTTP/1.1 load generator (wrk2-style) for latency at a given request rate.

Request i is due at t0 + i/rate whatever happened before it, and its latency is measured from
that due time, so a stall in the server shows in the percentiles instead of silently lowering
the rate (no coordinated omission). Requests go over `--connections` keep-alive connections;
a due request waits for a free one. wrk has no such mode, and hey's per-worker pacing fires
all its workers in the same instant, which measures bursts rather than a rate.

    python -m bench.edge.paced URL --rate 2000 --seconds 5 [--connections 64] [-H "Name: value"]
                               [--rotate FILE]   # a JSON list of header sets, one per request in turn
                               [--dump FILE]     # each request's due time and latency, one a line

Prints one JSON object: rps, p50_ms, p99_ms, requests, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import httptools


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, done: asyncio.Queue[tuple["Connection", int]]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.done.put_nowait((self, self.parser.get_status_code()))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def run(url: str, rate: float, seconds: float, connections: int, headers: dict[str, str],
              rotate: list[dict[str, str]] | None = None, dump: Path | None = None) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    requests = [(head + "".join(f"{k}: {v}\r\n" for k, v in {**headers, **extra}.items()) + "\r\n").encode()
                for extra in (rotate or [{}])]
    sent = 0

    loop = asyncio.get_running_loop()
    done: asyncio.Queue[tuple[Connection, int]] = asyncio.Queue()
    idle: deque[Connection] = deque()
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: Connection(done), host, port)
        idle.append(conn)

    total = int(rate * seconds)
    due_of: dict[Connection, float] = {}
    waiting: deque[float] = deque()
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (due, latency) of each request, for --dump
    errors = 0

    def send(due: float) -> None:
        nonlocal sent
        conn = idle.popleft()
        due_of[conn] = due
        assert conn.transport is not None
        conn.transport.write(requests[sent % len(requests)])
        sent += 1

    async def collect() -> None:
        nonlocal errors
        while len(latencies) < total:
            conn, status = await done.get()
            finished = time.perf_counter()
            due = due_of.pop(conn)
            latencies.append(finished - due)
            timeline.append((due, finished - due))
            if not 200 <= status < 300:
                errors += 1
            idle.append(conn)
            if waiting:
                send(waiting.popleft())

    collector = loop.create_task(collect())
    start = time.perf_counter() + 0.01
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            send(due)
        else:
            waiting.append(due)
    await asyncio.wait_for(collector, timeout=30)
    elapsed = time.perf_counter() - start
    for conn in list(idle):
        if conn.transport is not None:
            conn.transport.close()
    if dump is not None:
        dump.write_text("".join(f"{due - start:.6f} {latency * 1000:.3f}\n" for due, latency in sorted(timeline)))
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "requests": len(latencies),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge.paced", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("-H", dest="headers", action="append", default=[], help='"Name: value"')
    parser.add_argument("--rotate", type=Path, help="JSON list of header sets, used one per request in turn")
    parser.add_argument("--dump", type=Path, help="write each request's due time (s) and latency (ms) to this file")
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.headers)
    rotate = json.loads(args.rotate.read_text()) if args.rotate else None
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, args.connections, headers, rotate, args.dump))))


if __name__ == "__main__":
    main()
