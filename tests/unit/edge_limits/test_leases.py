"""Lease sizing and prefetching of the rate limiter, over an in-memory stand-in for the JetStream
counter publish (the one I/O seam the limiter has); the real counters are in tests/integration."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from nats.js.api import PubAck

from services.edge.adapters.ratelimit import RateLimiter
from services.edge.domain.limits import lease_cap, slack

NOW = 1_899_999_980.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counters:
    """`publish` with ADR-49 semantics: adds Nats-Incr to the subject's total and acks with `val`.
    While `gate` is clear, publishes wait on it (a lease in flight)."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = defaultdict(int)
        self.increments: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def publish(self, subject: str, payload: bytes = b"", timeout: float | None = None,
                      headers: dict[str, str] | None = None) -> PubAck:
        await self.gate.wait()
        increment = int(headers["Nats-Incr"])  # type: ignore[index]
        self.increments.append(increment)
        self.totals[subject] += increment
        return PubAck(stream="RATELIMIT", seq=len(self.increments), val=str(self.totals[subject]))


def test_small_limits_lease_one_position_at_a_time():
    assert [lease_cap(limit, 100) for limit in (1, 60, 61, 1000, 10_000)] == [1, 1, 3, 50, 100]


def test_slack_is_a_lease_and_a_quarter_per_replica():
    assert slack(60, 2, 100) == 2
    assert slack(10_000, 2, 100) == 250
    assert slack(10_000, 3, 20) == 75


async def test_leases_double_while_used_fast_up_to_the_cap():
    counters = Counters()
    limiter = RateLimiter(counters, clock=Clock())  # type: ignore[arg-type]
    for _ in range(1000):
        assert (await limiter.check("int_a", 10_000, 0)).allowed
    assert counters.increments[:8] == [1, 2, 4, 8, 16, 32, 64, 100]
    assert max(counters.increments) == 100


async def test_leases_shrink_when_traffic_slows():
    counters, clock = Counters(), Clock()
    limiter = RateLimiter(counters, clock=clock)  # type: ignore[arg-type]
    for _ in range(127):  # leases of 1..64
        await limiter.check("int_a", 10_000, 0)
    clock.now += 5  # the next lease comes long after the previous one
    for _ in range(2):
        await limiter.check("int_a", 10_000, 0)
    assert counters.increments[-1] == 32


async def test_the_next_lease_is_fetched_before_the_current_one_runs_out():
    counters = Counters()
    limiter = RateLimiter(counters, clock=Clock(), max_lease=16)  # type: ignore[arg-type]
    while not counters.increments or counters.increments[-1] < 16:
        await limiter.check("int_a", 10_000, 0)
    leased = sum(counters.increments)
    used = leased - 16 + 1
    counters.gate.clear()  # NATS stalls from here on
    served = 0
    while used + served < leased:  # every position still held is served without waiting
        assert (await asyncio.wait_for(limiter.check("int_a", 10_000, 0), 1)).allowed
        served += 1
    assert (limiter.leases, len(counters.increments)) == (6, 5)  # the prefetch is in flight, unanswered
    waiting = asyncio.ensure_future(limiter.check("int_a", 10_000, 0))
    await asyncio.sleep(0)
    assert not waiting.done()  # out of positions: this caller waits for the lease in flight
    counters.gate.set()
    assert (await waiting).allowed
    await limiter.close()


async def test_a_lowered_limit_refuses_positions_already_leased():
    counters = Counters()
    limiter = RateLimiter(counters, clock=Clock())  # type: ignore[arg-type]
    for _ in range(20):
        await limiter.check("int_a", 10_000, 0)
    assert sum(counters.increments) > 20  # positions beyond 20 are held locally
    refused = await limiter.check("int_a", 20, 0)
    assert not refused.allowed and refused.remaining == 0
