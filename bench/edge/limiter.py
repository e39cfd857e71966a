"""What the shared rate limiter costs per call, measured in-process (the edge's RateLimiter
against a real nats-server): on one hot integration with leases of up to 100 positions, with a
NATS round trip on every call, and in CPU time when every call takes a lease while the event
loop is busy, as the edge's is under load."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from bench.edge.load import two_cores

MAX_CALLS = 2_000_000


async def call_rate(call: Callable[[], Awaitable[object]], seconds: float) -> float:
    for _ in range(1000):
        await call()
    done, start = 0, time.perf_counter()
    deadline = start + seconds
    while done < MAX_CALLS and time.perf_counter() < deadline:
        for _ in range(100):
            await call()
        done += 100
    return done / (time.perf_counter() - start)


async def limiter_rates(nats_url: str, seconds: float) -> dict[str, float]:
    """RateLimiter.check calls per second on one hot integration, beside a no-op coroutine."""
    from services.edge.adapters.ratelimit import RateLimiter
    from services.kit.bus import connect

    nc = await connect(nats_url, name="bench-limiter")
    try:
        leased = RateLimiter(nc.jetstream())
        every_call = RateLimiter(nc.jetstream(), max_lease=1)
        await leased.start()

        async def noop(integration_id: str, limit: int, quota: int) -> None:
            return None

        rates = {
            "no-op coroutine": await call_rate(lambda: noop("int_hot", 10**9, 0), seconds),
            "check, leased (max_lease 100)": await call_rate(lambda: leased.check("int_hot", 10**9, 0), seconds),
            "check + daily quota, leased": await call_rate(lambda: leased.check("int_hotq", 10**9, 10**9), seconds),
            "check, a NATS round trip each (max_lease 1)": await call_rate(
                lambda: every_call.check("int_hot1", 10**9, 0), seconds),
        }
        await leased.close()
        await every_call.close()
        return rates
    finally:
        await nc.close()


def in_process_on(cpu: int, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    before = os.sched_getaffinity(0)
    if two_cores():
        os.sched_setaffinity(0, {cpu})
    try:
        return run()
    finally:
        os.sched_setaffinity(0, before)


async def lease_cpu(nats_url: str, seconds: float, callers: int = 32) -> float:
    """CPU µs per RateLimiter.check when every call takes a lease (a JetStream counter publish
    and its ack), with `callers` concurrent callers so the event loop stays busy, as the edge's
    does under load (a lone caller would also pay for waking an idle loop on every ack)."""
    from services.edge.adapters.ratelimit import RateLimiter
    from services.kit.bus import connect

    nc = await connect(nats_url, name="bench-limiter-leases")
    limiter = RateLimiter(nc.jetstream(), max_lease=1)
    await limiter.start()
    run, count, deadline = uuid.uuid4().hex[:8], 0, 0.0

    async def caller(n: int) -> None:
        nonlocal count
        while count < MAX_CALLS and time.perf_counter() < deadline:
            await limiter.check(f"int_{run}_{n}", 10**9, 0)
            count += 1

    try:
        deadline = time.perf_counter() + 0.5  # warm-up
        await asyncio.gather(*(caller(n) for n in range(callers)))
        count, deadline, cpu = 0, time.perf_counter() + seconds, time.process_time()
        await asyncio.gather(*(caller(n) for n in range(callers)))
        return (time.process_time() - cpu) / max(count, 1) * 1e6
    finally:
        await limiter.close()
        await nc.close()
