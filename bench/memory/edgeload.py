"""Partner requests through the edge for the memory benchmarks: `--connections` keep-alive
HTTP/1.1 connections (bench.edge.paced's), each carrying one request at a time, every request
with the next credential pair of `--rotate` in turn. With `--rate 0` each connection sends its
next request as soon as the last is answered (closed loop: what the edge manages while the rest
of the suite runs beside it); with `--rate R` request i is due at i/R (bench.edge.paced's
pacing, without its latency record, which a run of minutes does not need). Stops sending after
`--seconds`, waits at most 10 s for what is in flight.

    python -m bench.memory.edgeload URL --seconds 60 [--rate 0] [--connections 32] --rotate FILE

Prints one JSON object: requests, rps, statuses (answers by status code).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter, deque
from pathlib import Path
from urllib.parse import urlsplit

from bench.edge.paced import Connection

DRAIN_SECONDS = 10.0


async def run(url: str, seconds: float, rate: float, connections: int,
              rotate: list[dict[str, str]]) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    requests = [(head + "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n").encode() for extra in rotate]
    loop = asyncio.get_running_loop()
    done: asyncio.Queue[tuple[Connection, int]] = asyncio.Queue()
    idle: deque[Connection] = deque()
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: Connection(done), host, port)
        idle.append(conn)
    statuses: Counter[int] = Counter()
    sent = 0

    def answered(conn: Connection, status: int) -> None:
        statuses[status] += 1
        idle.append(conn)

    start = time.perf_counter()
    deadline = start + seconds
    while (now := time.perf_counter()) < deadline:
        while not done.empty():
            answered(*done.get_nowait())
        if rate:
            due = start + sent / rate
            if due > now:
                await asyncio.sleep(min(due, deadline) - now)
                continue
        if not idle:
            with contextlib.suppress(asyncio.TimeoutError):
                answered(*await asyncio.wait_for(done.get(), timeout=max(deadline - now, 0.001)))
            continue
        conn = idle.popleft()
        assert conn.transport is not None
        conn.transport.write(requests[sent % len(requests)])
        sent += 1
    elapsed = time.perf_counter() - start
    drain_until = time.perf_counter() + DRAIN_SECONDS
    while sum(statuses.values()) < sent and time.perf_counter() < drain_until:
        with contextlib.suppress(asyncio.TimeoutError):
            answered(*await asyncio.wait_for(done.get(), timeout=drain_until - time.perf_counter()))
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    answers = sum(statuses.values())
    return {"requests": answers, "rps": answers / elapsed, "statuses": dict(statuses), "unanswered": sent - answers}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory.edgeload", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second; 0: closed loop")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rotate", type=Path, required=True, help="JSON list of header sets, one per request in turn")
    args = parser.parse_args()
    rotate = json.loads(args.rotate.read_text())
    print(json.dumps(asyncio.run(run(args.url, min(args.seconds, 3600.0), args.rate, args.connections, rotate))))


if __name__ == "__main__":
    main()
