"""One edge replica's rate limiter in its own process, for the two-process test.

    python -m tests.integration.edge_limits.limiter_worker NATS_URL INTEGRATION LIMIT OFFERED NOW

Connects, prints `ready`, waits for a line on stdin, then offers OFFERED checks (32 at a time,
like concurrent requests) at the fixed clock NOW and prints {"accepted": n, "leases": m}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from services.edge.adapters.ratelimit import RateLimiter
from services.kit.bus import connect

CONCURRENCY = 32


async def main(url: str, integration_id: str, limit: int, offered: int, now: float) -> None:
    nc = await connect(url, name="limiter-worker")
    limiter = RateLimiter(nc.jetstream(), clock=lambda: now)
    await limiter.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    left = offered
    accepted = 0

    async def caller() -> None:
        nonlocal left, accepted
        while left > 0:
            left -= 1
            if (await limiter.check(integration_id, limit, 0)).allowed:
                accepted += 1

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    print(json.dumps({"accepted": accepted, "leases": limiter.leases}), flush=True)
    await limiter.close()
    await nc.close()


if __name__ == "__main__":
    url, integration, limit, offered, now = sys.argv[1:6]
    asyncio.run(main(url, integration, int(limit), int(offered), float(now)))
