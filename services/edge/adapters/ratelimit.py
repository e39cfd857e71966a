"""Per-integration rate limit (requests per minute) and daily quota, shared by every edge replica.

Windows are fixed: the Unix minute for the rate limit (`X-RateLimit-Reset` is the next minute
boundary) and the UTC day for the quota. The shared state is a pair of JetStream counter
streams (ADR-49, nats-server 2.12+): a publish carrying `Nats-Incr: +k` adds k to the counter
of its subject atomically and the PubAck's `val` is the new total. Subjects are one per window,
`ratelimit.m.<integration>.<minute>` and `ratelimit.d.<integration>.<yyyymmdd>`. Counter
streams refuse per-message TTLs, so old windows expire by `max_age`: the minute stream keeps a
subject 3 minutes after its last increment (in memory: a lost minute counter only resets one
window), the day stream 25 hours on file (in two streams so that a day's 1,440 minute subjects
do not linger for a day).

Leases keep NATS off the hot path. A replica adds k to the shared counter and receives the
positions (val-k, val] of that window; it serves requests from them locally, and a position is
usable only while it is <= the current limit. Every position is handed out once across all
replicas and every accepted request uses one, so the requests accepted in a window never exceed
the limit: the overshoot is 0. The price is under-admission: positions a replica leased but
never used because its traffic stopped. A replica holds at most k + k//4 unused positions
(one lease plus the quarter left when it prefetches the next), so when demand exceeds the limit
at least `limit - replicas * (k + k//4)` requests are accepted (less another k for each lease
whose acknowledgement was lost, since the server may have counted it). When every replica keeps
receiving requests they use what they hold and the window is filled exactly.
`remaining` is what can still be sent in this minute, or today when that is less.

k adapts per integration: it starts at 1, doubles while leases run out within half a second
and halves when they last over two seconds (so a replica leases about twice a second at most
under steady load; with 0.1 s it leased 0.15 times per request in the edge benchmark), and never exceeds `max_lease` or a twentieth
of the limit (so limits up to 60 per minute are leased one request at a time, exact per call).
One lease per (integration, window) is in flight at a time; concurrent callers wait on it.
A limit changed mid-window applies at once: positions above a lowered limit are refused, a
raised limit leases again.

When NATS cannot be reached the limiter fails open by default, as Kong and Envoy do (a rate
limiter must not turn a bus outage into a partner outage): it allows the request, logs one
warning per outage and counts the decisions in `fail_open_allowed`. `fail_open=False` refuses
instead. Either way it stops asking NATS for `retry_seconds` after a failure, so an outage adds
no timeout to every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from services.edge.domain.limits import DAY, MINUTE, QUOTA_EXCEEDED, RATE_LIMIT_EXCEEDED, Decision, lease_cap
from services.kit.bus import ensure_stream

log = logging.getLogger(__name__)

LEASE_FAST_SECONDS = 0.5     # a lease used up faster than this doubles the next one
LEASE_SLOW_SECONDS = 2.0     # a lease that lasted longer than this halves the next one
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


class _Pool:
    """Positions this replica leased in one window, ascending, as [next, last] ranges."""

    __slots__ = ("window", "ranges", "held", "seen", "low_water", "refill")

    def __init__(self, window: int) -> None:
        self.window = window
        self.ranges: deque[list[int]] = deque()
        self.held = 0                # positions in `ranges`
        self.seen = 0                # the shared total at our latest lease; >= every held position
        self.low_water = -1          # prefetch the next lease when this few are left
        self.refill: asyncio.Task[None] | None = None

    def available(self, limit: int) -> int:
        """Held positions usable under `limit` (those above a lowered limit are not)."""
        if self.seen <= limit:
            return self.held
        count = 0
        for first, last in self.ranges:
            if first > limit:
                break
            count += min(last, limit) - first + 1
        return count

    def take(self) -> None:
        """Spend the lowest held position; callers check `available()` first."""
        head = self.ranges[0]
        if head[0] == head[1]:
            self.ranges.popleft()
        else:
            head[0] += 1
        self.held -= 1

    def add(self, first: int, last: int) -> None:
        self.ranges.append([first, last])
        self.held += last - first + 1
        self.seen = max(self.seen, last)

    def remaining(self, limit: int, available: int) -> int:
        return max(0, min(limit, limit - self.seen + available))


@dataclass
class _Bucket:
    minute: _Pool
    day: _Pool
    lease: int = 1
    leased_at: float | None = None


class RateLimiter:
    """Answers `check()` for every partner request; counters shared through JetStream."""

    def __init__(self, js: JetStreamContext, *, stream: str = "RATELIMIT", replicas: int = 1,
                 clock: Callable[[], float] = time.time, max_lease: int = 100, fail_open: bool = True,
                 timeout: float = 0.5, retry_seconds: float = 1.0) -> None:
        self._js = js
        self._stream = stream
        self._day_stream = f"{stream}_DAY"
        self._prefix = stream.lower()
        self._replicas = replicas
        self._clock = clock
        self._max_lease = max(1, max_lease)
        self._fail_open = fail_open
        self._timeout = timeout
        self._retry_seconds = retry_seconds
        self._buckets: dict[str, _Bucket] = {}
        self._swept_minute = 0
        self._down_until = 0.0
        self._closed = False
        self.leases = 0               # NATS round trips made
        self.failures = 0             # NATS round trips that failed
        self.fail_open_allowed = 0    # requests allowed because NATS was unreachable

    async def start(self) -> None:
        """Create the counter streams, or bring them to this configuration; safe to repeat."""
        await self._ensure(StreamConfig(
            name=self._stream, subjects=[f"{self._prefix}.m.>"], allow_msg_counter=True,
            description="Edge rate-limit counters, one subject per integration and minute",
            max_msgs_per_subject=1, max_age=3 * MINUTE, num_replicas=self._replicas,
            # A minute counter outlives nothing worth a disk write.
            storage=StorageType.MEMORY,
        ))
        await self._ensure(StreamConfig(
            name=self._day_stream, subjects=[f"{self._prefix}.d.>"], allow_msg_counter=True,
            description="Edge daily-quota counters, one subject per integration and UTC day",
            max_msgs_per_subject=1, max_age=DAY + 3600, num_replicas=self._replicas,
            storage=StorageType.FILE,
        ))

    async def _ensure(self, config: StreamConfig) -> None:
        await ensure_stream(self._js, config)

    async def close(self) -> None:
        """Stop leasing; unused leased positions are abandoned (under-admission only)."""
        self._closed = True
        tasks = [t for b in self._buckets.values() for p in (b.minute, b.day) if (t := p.refill) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._buckets.clear()

    async def check(self, integration_id: str, limit_per_minute: int, daily_quota: int) -> Decision:
        """Count one request of `integration_id` and say whether it may proceed (daily_quota 0 = none)."""
        now = self._clock()
        minute = int(now // MINUTE)
        reset_at = (minute + 1) * MINUTE
        limit = max(0, limit_per_minute)
        quota = max(0, daily_quota)
        bucket = self._bucket(integration_id, minute, int(now // DAY))
        while True:
            minute_pool, day_pool = bucket.minute, bucket.day
            minute_free = minute_pool.available(limit)
            day_free = day_pool.available(quota) if quota else 1
            if minute_free and day_free:
                return self._admit(integration_id, bucket, limit, quota, minute_free, day_free, reset_at)
            if quota and not day_free and day_pool.seen >= quota:
                return self._refuse(QUOTA_EXCEEDED, limit, reset_at, (int(now // DAY) + 1) * DAY, now)
            need_day = bool(quota) and not day_free
            need_minute = not minute_free and minute_pool.seen < limit
            if not (need_day or need_minute):
                return self._refuse(RATE_LIMIT_EXCEEDED, limit, reset_at, reset_at, now)
            if now < self._down_until:
                if not minute_free and not need_minute:
                    return self._refuse(RATE_LIMIT_EXCEEDED, limit, reset_at, reset_at, now)
                return self._unreachable(bucket, limit, quota, reset_at, now)
            # Both at once: the quota decides first when both are out, and nobody waits twice.
            waits = []
            if need_day:
                waits.append(self._refill(integration_id, bucket, day_pool, quota, day=True))
            if need_minute:
                waits.append(self._refill(integration_id, bucket, minute_pool, limit, day=False))
            await asyncio.gather(*waits)
            # Other callers may have taken what arrived, or the lease failed: look again.

    # --- decisions ------------------------------------------------------------------------------

    def _admit(self, integration_id: str, bucket: _Bucket, limit: int, quota: int, minute_free: int,
               day_free: int, reset_at: int) -> Decision:
        minute_pool = bucket.minute
        minute_pool.take()
        if minute_free - 1 <= minute_pool.low_water:
            self._prefetch(integration_id, bucket, minute_pool, limit, day=False)
        # What can still be sent before a 429: the minute window, or the day when that is less.
        remaining = minute_pool.remaining(limit, minute_free - 1)
        if quota:
            day_pool = bucket.day
            day_pool.take()
            if day_free - 1 <= day_pool.low_water:
                self._prefetch(integration_id, bucket, day_pool, quota, day=True)
            remaining = min(remaining, day_pool.remaining(quota, day_free - 1))
        return Decision(True, None, limit, remaining, reset_at, 0)

    def _refuse(self, code: str, limit: int, reset_at: int, until: int, now: float) -> Decision:
        return Decision(False, code, limit, 0, reset_at, max(1, math.ceil(until - now)))

    def _unreachable(self, bucket: _Bucket, limit: int, quota: int, reset_at: int, now: float) -> Decision:
        if not self._fail_open:
            return Decision(False, RATE_LIMIT_EXCEEDED, limit, 0, reset_at,
                            max(1, math.ceil(self._down_until - now)))
        self.fail_open_allowed += 1
        remaining = limit
        for pool, bound in ((bucket.minute, limit), (bucket.day, quota)):
            if bound:
                free = pool.available(bound)
                if free:  # whatever is still leased is spent as usual
                    pool.take()
                    free -= 1
                remaining = min(remaining, pool.remaining(bound, free))
        return Decision(True, None, limit, remaining, reset_at, 0)

    # --- leases ---------------------------------------------------------------------------------

    def _bucket(self, integration_id: str, minute: int, day: int) -> _Bucket:
        if minute != self._swept_minute:
            self._sweep(minute)
        bucket = self._buckets.get(integration_id)
        if bucket is None:
            bucket = self._buckets[integration_id] = _Bucket(_Pool(minute), _Pool(day))
        # A caller that read the clock just before a window turned counts in the newer one.
        if minute > bucket.minute.window:
            bucket.minute = _Pool(minute)
        if day > bucket.day.window:
            bucket.day = _Pool(day)
        return bucket

    def _sweep(self, minute: int) -> None:
        # Forget integrations idle for two windows; their leftovers are under-admission only.
        self._swept_minute = minute
        for key in [k for k, b in self._buckets.items()
                    if b.minute.window < minute - 1 and b.minute.refill is None and b.day.refill is None]:
            del self._buckets[key]

    def _refill(self, integration_id: str, bucket: _Bucket, pool: _Pool, limit: int, *, day: bool) -> asyncio.Future[None]:
        """The lease in flight for this pool, started if there is none; waiting does not cancel it."""
        if pool.refill is None:
            pool.refill = asyncio.get_running_loop().create_task(
                self._lease(integration_id, bucket, pool, limit, day=day))
        return asyncio.shield(pool.refill)

    def _prefetch(self, integration_id: str, bucket: _Bucket, pool: _Pool, limit: int, *, day: bool) -> None:
        # Lease the next block while a quarter of this one is left, so callers rarely wait on NATS.
        if pool.refill is None and pool.seen < limit and not self._closed and self._clock() >= self._down_until:
            self._refill(integration_id, bucket, pool, limit, day=day)

    async def _lease(self, integration_id: str, bucket: _Bucket, pool: _Pool, limit: int, *, day: bool) -> None:
        if not day:
            self._adapt(bucket)
        size = min(bucket.lease, lease_cap(limit, self._max_lease))
        subject = self._subject(integration_id, pool.window, day=day)
        self.leases += 1
        try:
            ack = await self._js.publish(subject, b"", headers={"Nats-Incr": f"+{size}"}, timeout=self._timeout)
            total = int(ack.val or "")
        except (nats.errors.Error, asyncio.TimeoutError, ValueError) as exc:
            # A lost ack may have counted our increment: that only under-admits.
            self._mark_down(exc)
            return
        finally:
            pool.refill = None
        pool.add(total - size + 1, total)
        pool.low_water = size // 4 if size >= 8 else -1

    def _adapt(self, bucket: _Bucket) -> None:
        now = self._clock()
        if bucket.leased_at is not None:
            lasted = now - bucket.leased_at
            if lasted < LEASE_FAST_SECONDS:
                bucket.lease = min(self._max_lease, bucket.lease * 2)
            elif lasted > LEASE_SLOW_SECONDS:
                bucket.lease = max(1, bucket.lease // 2)
        bucket.leased_at = now

    def _mark_down(self, exc: BaseException) -> None:
        self.failures += 1
        now = self._clock()
        if now >= self._down_until:
            log.warning("rate-limit counters unreachable (%s): %s requests for %.1fs", type(exc).__name__,
                        "allowing" if self._fail_open else "refusing", self._retry_seconds)
        self._down_until = now + self._retry_seconds

    def _subject(self, integration_id: str, window: int, *, day: bool) -> str:
        token = integration_id if _SAFE_TOKEN.fullmatch(integration_id) else (
            # '=' never occurs in a safe id, so a hashed token cannot collide with one.
            "=" + hashlib.sha256(integration_id.encode()).hexdigest()[:32])
        if day:
            return f"{self._prefix}.d.{token}.{time.strftime('%Y%m%d', time.gmtime(window * DAY))}"
        return f"{self._prefix}.m.{token}.{window}"
