"""The baseline: a bare aiohttp POST loop to the benchmark's receiver, nothing else (no signing,
no database, no bus). Prints one JSON line: {"posts": n, "seconds": s, "rate": n/s, "cpu_us": its CPU
time per POST in µs}.

    python -m bench.webhooks.bare --url https://127.0.0.1:PORT/bare --ca CA.pem [--count 10000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time

import aiohttp

MAX_SECONDS = 60.0


async def post_loop(url: str, ca: str, count: int, concurrency: int) -> dict[str, float]:
    context = ssl.create_default_context(cafile=ca)
    body = json.dumps({"id": "evt_bare", "type": "lot.created", "data": {"lot_id": "L-1"}}).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "bare-loop"}
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    done = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + MAX_SECONDS

        async def worker() -> None:
            nonlocal done
            while done < count and time.perf_counter() < deadline:
                done += 1
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"posts": done, "seconds": seconds, "rate": done / seconds, "cpu_us": cpu / done * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks.bare")
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(post_loop(args.url, args.ca, args.count, args.concurrency))), flush=True)


if __name__ == "__main__":
    main()
