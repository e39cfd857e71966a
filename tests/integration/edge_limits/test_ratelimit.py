"""The shared rate limiter against the session's real nats-server; time moves by an injected clock."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.edge.adapters.ratelimit import RateLimiter
from services.edge.domain.limits import QUOTA_EXCEEDED, RATE_LIMIT_EXCEEDED, slack
from services.kit.bus import connect

MINUTE_START = 1_899_999_960  # a minute boundary, mid-afternoon UTC
DAY_END = (MINUTE_START // 86_400 + 1) * 86_400
REPO = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_integration() -> str:
    return f"int_{uuid.uuid4().hex}"


@pytest.fixture
def clock() -> Clock:
    return Clock(MINUTE_START + 20)


@pytest.fixture
async def make_limiter(nats_server, clock) -> AsyncIterator[Callable[..., Awaitable[RateLimiter]]]:
    """make_limiter(**kw): a started RateLimiter on its own NATS connection (one edge replica)."""
    opened = []

    async def _make(**kw: object) -> RateLimiter:
        nc = await connect(nats_server.url, name="ratelimit-test")
        limiter = RateLimiter(nc.jetstream(), **{"clock": clock, **kw})  # type: ignore[arg-type]
        opened.append((nc, limiter))
        if "stream" not in kw:
            await limiter.start()
        return limiter

    yield _make
    for nc, limiter in opened:
        await limiter.close()
        await nc.close()


async def offer(limiter: RateLimiter, integration: str, count: int, limit: int, quota: int = 0) -> int:
    decisions = await asyncio.gather(*(limiter.check(integration, limit, quota) for _ in range(count)))
    return sum(d.allowed for d in decisions)


@pytest.mark.parametrize("limit", [30, 1000])
async def test_replicas_hammering_one_integration_never_accept_more_than_the_limit(make_limiter, limit):
    replicas = [await make_limiter() for _ in range(4)]
    integration = new_integration()
    accepted = await asyncio.gather(*(offer(r, integration, limit, limit) for r in replicas))  # 4x the limit
    assert sum(accepted) <= limit
    assert sum(accepted) >= limit - slack(limit, len(replicas), 100)


async def test_the_next_minute_window_starts_from_zero(make_limiter, clock):
    limiter = await make_limiter()
    integration = new_integration()
    assert await offer(limiter, integration, 8, 5) == 5
    assert not (await limiter.check(integration, 5, 0)).allowed
    clock.now += 60
    decision = await limiter.check(integration, 5, 0)
    assert decision.allowed and decision.remaining == 4


async def test_remaining_counts_down_to_zero_and_reset_is_the_next_minute_boundary(make_limiter, clock):
    limiter = await make_limiter()
    integration = new_integration()
    decisions = [await limiter.check(integration, 5, 0) for _ in range(6)]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert {d.limit for d in decisions} == {5}
    assert {d.reset_at for d in decisions} == {MINUTE_START + 60}
    assert [d.allowed for d in decisions] == [True] * 5 + [False]


async def test_refusal_says_rate_limit_exceeded_and_retry_after_counts_to_the_window_end(make_limiter, clock):
    limiter = await make_limiter()
    integration = new_integration()
    assert await offer(limiter, integration, 2, 2) == 2
    refused = await limiter.check(integration, 2, 0)
    assert (refused.allowed, refused.code, refused.remaining) == (False, RATE_LIMIT_EXCEEDED, 0)
    assert refused.retry_after == 40  # 20 s into the minute
    clock.now = MINUTE_START + 59.2
    assert (await limiter.check(integration, 2, 0)).retry_after == 1  # never 0 on a refusal


async def test_daily_quota_refuses_with_quota_exceeded_across_minute_windows(make_limiter, clock):
    limiter = await make_limiter()
    integration = new_integration()
    assert await offer(limiter, integration, 2, 100, quota=3) == 2
    clock.now += 60
    assert (await limiter.check(integration, 100, 3)).allowed
    refused = await limiter.check(integration, 100, 3)
    assert (refused.allowed, refused.code) == (False, QUOTA_EXCEEDED)
    assert refused.retry_after == math.ceil(DAY_END - clock.now)
    assert refused.reset_at == MINUTE_START + 120  # the header still names the minute window
    clock.now = DAY_END + 1
    assert (await limiter.check(integration, 100, 3)).allowed


async def test_quota_exceeded_wins_when_the_minute_limit_is_out_too(make_limiter):
    limiter = await make_limiter()
    integration = new_integration()
    assert await offer(limiter, integration, 3, 3, quota=3) == 3
    refused = await limiter.check(integration, 3, 3)
    assert refused.code == QUOTA_EXCEEDED


async def test_minute_limit_refuses_while_the_quota_has_room(make_limiter):
    limiter = await make_limiter()
    integration = new_integration()
    assert await offer(limiter, integration, 2, 2, quota=100) == 2
    refused = await limiter.check(integration, 2, 100)
    assert refused.code == RATE_LIMIT_EXCEEDED
    assert refused.retry_after == 40


async def test_remaining_reports_the_quota_when_it_is_the_smaller(make_limiter):
    limiter = await make_limiter()
    decision = await limiter.check(new_integration(), 100, 3)
    assert decision.remaining == 2


async def test_a_lowered_limit_takes_effect_on_the_next_check_on_every_replica(make_limiter):
    first, second = await make_limiter(), await make_limiter()
    integration = new_integration()
    assert await offer(first, integration, 40, 5000) == 40  # leases well beyond 40 were taken
    for replica in (first, second):
        refused = await replica.check(integration, 40, 0)
        assert (refused.allowed, refused.code, refused.remaining) == (False, RATE_LIMIT_EXCEEDED, 0)
    raised = await second.check(integration, 5000, 0)
    assert raised.allowed


async def test_a_raised_limit_admits_again_in_the_same_window(make_limiter):
    limiter = await make_limiter()
    integration = new_integration()
    assert await offer(limiter, integration, 5, 3) == 3
    assert await offer(limiter, integration, 5, 6) == 3


async def test_concurrent_callers_share_the_lease_in_flight(make_limiter):
    limiter = await make_limiter()
    assert await offer(limiter, new_integration(), 200, 10_000) == 200
    # Leases double while they are used up fast: 1+2+4+...+64+128 covers 200 in 8 round trips.
    assert limiter.leases <= 10


async def test_integration_ids_that_are_not_subject_tokens_are_still_limited_apart(make_limiter):
    limiter = await make_limiter()
    odd, other = f"a.b*>{uuid.uuid4().hex} x", f"a.b*>{uuid.uuid4().hex} y"
    assert await offer(limiter, odd, 4, 2) == 2
    assert await offer(limiter, other, 4, 2) == 2


async def test_unreachable_counters_fail_open_by_default_without_asking_nats_on_every_request(make_limiter, clock):
    # No stream is bound to this prefix, so every lease fails the way an outage does.
    limiter = await make_limiter(stream=f"RLDOWN{uuid.uuid4().hex[:8].upper()}", retry_seconds=1.0)
    integration = new_integration()
    first = await limiter.check(integration, 10, 0)
    assert first.allowed and limiter.failures == 1
    assert all(d.allowed for d in [await limiter.check(integration, 10, 0) for _ in range(5)])
    assert (limiter.leases, limiter.fail_open_allowed) == (1, 6)
    clock.now += 1.5
    await limiter.check(integration, 10, 0)
    assert limiter.leases == 2  # it tries NATS again once the back-off has passed


async def test_unreachable_counters_refuse_when_fail_open_is_off(make_limiter):
    limiter = await make_limiter(stream=f"RLDOWN{uuid.uuid4().hex[:8].upper()}", fail_open=False)
    refused = await limiter.check(new_integration(), 10, 0)
    assert (refused.allowed, refused.code) == (False, RATE_LIMIT_EXCEEDED)
    assert refused.retry_after >= 1


async def test_two_edge_processes_together_accept_the_limit_and_no_more(nats_server):
    limit, integration = 3000, new_integration()
    offered_each = 3 * limit // 2
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.edge_limits.limiter_worker", nats_server.url, integration,
            str(limit), str(offered_each), str(MINUTE_START + 30),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO)
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        for proc in procs:  # both start offering together
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)) for proc in procs]
        for proc in procs:
            assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    accepted = sum(r["accepted"] for r in results)
    assert all(r["accepted"] > 0 for r in results)  # both replicas really served the integration
    assert limit - slack(limit, 2, 100) <= accepted <= limit
