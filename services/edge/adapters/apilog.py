"""Partner request records, published to JetStream off the response path, many per message.

`record()` only appends to a bounded in-memory queue; a background task drains it in batches of
up to `max_batch` records and `max_bytes` bytes (or whatever arrived within `flush_interval`)
and publishes each batch as ONE `ApiRequestBatch` message on `subject` (`apilog.batch`). A NATS
message costs the edge (publish and PubAck) and the logs consumer (parse, decode, ack) far more
than a record does, so records travel together. Each batch carries `Nats-Msg-Id` = its own id,
drawn once and kept through every retry of that batch, so a batch sent again after a lost ack
is stored once (within the APILOG stream's duplicate window, see services.kit.bus); the logs
service stores each request id once whichever batch brings it.

What can be lost, and how it shows:
- the queue is full (`max_queue` records waiting): the new record is dropped and counted;
- one record is larger than `max_bytes` by itself: dropped, counted and logged;
- the server refused a batch `max_attempts` times (for example no stream is bound to the
  subject): its records are dropped, counted and logged;
- `close()` ran out of time: what was left is dropped and counted.
A record that was taken off the queue is never dropped because NATS was unreachable or an ack
was late: those failures are retried. After a failure that looked like an outage, each retry
first probes with a small JetStream API request (it stores nothing) and sends the batch again
only once the probe is answered, so an outage does not fill the client's reconnect buffer with
copies of the batch.

A record without an organisation (`org_id` empty: no known key, client or token said whose the
request was) belongs to the platform log. Anyone can send such requests as fast as they like, so
with a `PlatformBudget` they are bounded before they cost a queue slot: each source gets a few
records per minute one by one, and one record that stands for the rest (`repeats`); see
PlatformBudget for the arithmetic. Whatever builds records (the app, the HTTP layer for requests
it answers itself) calls `record()` alike; the budget applies by the empty `org_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.ids import new_id

log = logging.getLogger(__name__)

SUBJECT = "apilog.batch"
# Well under NATS's default max_payload (1 MiB), so a batch is never refused for its size.
MAX_BATCH_BYTES = 256 * 1024
# `ApiRequestBatch.records` is field 1, length-delimited: each record goes on the wire as this
# tag, its length as a varint, then its own bytes. Framing records as they are queued lets a
# batch be joined from bytes instead of re-parsed into a message and serialized again.
_RECORDS_TAG = b"\x0a"


def _framed(record: bytes) -> bytes:
    size, prefix = len(record), bytearray(_RECORDS_TAG)
    while size > 0x7F:
        prefix.append((size & 0x7F) | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + record


# The platform log's budget, per edge: see PlatformBudget.
PLATFORM_WINDOW_SECONDS = 60.0
PLATFORM_PER_SOURCE = 5
PLATFORM_PER_WINDOW = 100
PLATFORM_SOURCES = 500
# A source that is not told apart from the others once PLATFORM_SOURCES are tracked.
ANY_SOURCE = "*"


@functools.lru_cache(maxsize=4096)
def source_of(ip: str) -> str:
    """Who a request counts against: its IPv4 address, or the /64 of its IPv6 address (one host
    is given a whole /64, so addresses within it are one source)."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class _Fold:
    __slots__ = ("sent", "folded", "last")

    def __init__(self) -> None:
        self.sent = 0                                      # records that went one by one this window
        self.folded = 0                                    # requests counted instead
        self.last: events_pb2.ApiRequestLogged | None = None  # the latest of those


class PlatformBudget:
    """Bounds what unattributable requests cost the platform log, whatever arrives.

    Within each window (a minute), the first `per_source` records of each (source, error code)
    and the first `per_window` of all go as they are; further requests are counted, and when the
    window ends one record per (source, error code) stands for them: the latest of them, with
    `repeats` = how many. Once `max_sources` pairs are tracked in a window, requests of further
    sources are counted by error code alone (ip empty: many sources). So a window publishes at
    most per_window + max_sources + one record per error code, and holds at most that many
    counters and records; work per request is one dictionary lookup.
    """

    def __init__(self, *, per_source: int = PLATFORM_PER_SOURCE, per_window: int = PLATFORM_PER_WINDOW,
                 max_sources: int = PLATFORM_SOURCES, window: float = PLATFORM_WINDOW_SECONDS) -> None:
        self.window = window
        self._per_source = per_source
        self._per_window = per_window
        self._max_sources = max_sources
        self._folds: dict[tuple[str, str], _Fold] = {}
        self._sent = 0

    def admit(self, entry: events_pb2.ApiRequestLogged) -> bool:
        """True: publish `entry` now. False: it is counted, and stood for when the window ends."""
        key = (source_of(entry.ip), entry.error_code)
        fold = self._folds.get(key)
        if fold is None:
            if len(self._folds) >= self._max_sources:
                key = (ANY_SOURCE, entry.error_code)
                fold = self._folds.get(key)
            if fold is None:
                fold = self._folds[key] = _Fold()
        if key[0] != ANY_SOURCE and fold.sent < self._per_source and self._sent < self._per_window:
            fold.sent += 1
            self._sent += 1
            return True
        fold.folded += 1
        fold.last = entry
        return False

    def roll(self) -> list[events_pb2.ApiRequestLogged]:
        """End the window: one record for each (source, error code) whose requests were counted."""
        standing: list[events_pb2.ApiRequestLogged] = []
        for (source, _), fold in self._folds.items():
            if fold.last is not None:
                fold.last.repeats = fold.folded
                if source == ANY_SOURCE:
                    fold.last.ip = ""
                standing.append(fold.last)
        self._folds.clear()
        self._sent = 0
        return standing


@dataclass(frozen=True)
class _Batch:
    msg_id: str
    payload: bytes  # a serialized ApiRequestBatch
    count: int


class _Outcome(Enum):
    ACKED = "acked"
    REFUSED = "refused"          # the server answered no: counts towards max_attempts
    UNREACHABLE = "unreachable"  # no answer in time or no connection: retried without limit


class ApiLogPublisher:
    """Queues request-log records and publishes them in batches to `subject` in the background."""

    def __init__(self, js: JetStreamContext, *, subject: str = SUBJECT, max_queue: int = 50_000,
                 max_batch: int = 500, max_bytes: int = MAX_BATCH_BYTES, flush_interval: float = 0.05,
                 ack_timeout: float = 2.0, max_attempts: int = 5, max_backoff: float = 2.0,
                 platform: PlatformBudget | None = None) -> None:
        self._js = js
        self._platform = platform
        self._roller: asyncio.Task[None] | None = None
        self._subject = subject
        self._max_queue = max_queue
        self._max_batch = max(1, max_batch)
        self._max_bytes = max_bytes
        self._flush_interval = flush_interval
        self._ack_timeout = ack_timeout
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff
        self._queue: deque[bytes] = deque()  # framed records
        self._queued_bytes = 0
        self._inflight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._dropped = 0
        self._published = 0

    @property
    def dropped(self) -> int:
        """Records lost: queue full, too large, refused by the server, or left over at close."""
        return self._dropped

    @property
    def published(self) -> int:
        """Records in batches the stream acknowledged (it stores each batch id once)."""
        return self._published

    @property
    def queued(self) -> int:
        """Records waiting or in flight."""
        return len(self._queue) + self._inflight

    def record(self, entry: events_pb2.ApiRequestLogged) -> None:
        """Queue one record; never blocks and never raises (drops and counts when full). A record
        with no organisation is the platform log's and passes its budget first, if there is one."""
        if self._platform is not None:
            try:
                if not entry.org_id and not self._platform.admit(entry):
                    return
            except Exception:  # a log record must never fail the request it describes
                self._dropped += 1
                log.exception("could not count an API log record against the platform budget")
                return
        self._enqueue(entry)

    def _enqueue(self, entry: events_pb2.ApiRequestLogged) -> None:
        try:
            if self._closing or len(self._queue) >= self._max_queue:
                self._dropped += 1
                return
            frame = _framed(entry.SerializeToString())
            if len(frame) > self._max_bytes:
                self._dropped += 1
                log.error("API log record %s is %d bytes, over the %d-byte batch limit; dropped",
                          entry.request_id, len(frame), self._max_bytes)
                return
            self._queue.append(frame)
            self._queued_bytes += len(frame)
            if len(self._queue) == 1 or self._full():
                self._wake.set()
        except Exception:  # a log record must never fail the request it describes
            self._dropped += 1
            log.exception("could not queue an API log record")

    async def start(self) -> None:
        """Start the background publisher."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="apilog-publisher")
        if self._platform is not None and self._roller is None:
            self._roller = asyncio.get_running_loop().create_task(self._roll_windows(), name="apilog-platform-windows")

    async def _roll_windows(self) -> None:
        assert self._platform is not None
        while True:
            await asyncio.sleep(self._platform.window)
            self._roll()

    def _roll(self) -> None:
        if self._platform is not None:
            for entry in self._platform.roll():
                self._enqueue(entry)

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued, for at most `timeout` seconds; count the rest as dropped."""
        if self._roller is not None:
            self._roller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._roller
            self._roller = None
        self._roll()  # the window so far: its counted requests are stood for before the end
        self._closing = True
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="apilog-publisher")
        left = 0
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            left = self.queued  # before cancelling, which forgets what was in flight
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if left:
            log.warning("dropping %d API log records left at close", left)
            self._dropped += left
            self._queue.clear()
            self._queued_bytes = 0
            self._inflight = 0

    def _full(self) -> bool:
        return len(self._queue) >= self._max_batch or self._queued_bytes >= self._max_bytes

    def _take_batch(self) -> _Batch:
        """The oldest records that fit in one message (always at least one)."""
        frames = [self._queue.popleft()]
        size = len(frames[0])
        while self._queue and len(frames) < self._max_batch and size + len(self._queue[0]) <= self._max_bytes:
            frames.append(self._queue.popleft())
            size += len(frames[-1])
        self._queued_bytes -= size
        return _Batch(new_id("alb"), b"".join(frames), len(frames))

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._full() and not self._closing:
                # Give a batch a moment to fill; record() wakes us early once it is full.
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            batch = self._take_batch()
            self._inflight = batch.count
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not stop the publisher; the batch is lost and counted.
                log.exception("API log batch %s failed; %d records lost", batch.msg_id, batch.count)
                self._dropped += batch.count
            finally:
                self._inflight = 0

    async def _deliver(self, batch: _Batch) -> None:
        """Publish `batch` until it is acked or refused `max_attempts` times."""
        refusals = 0
        backoff = 0.05
        probing = False
        while True:
            if probing and not await self._reachable():
                outcome = _Outcome.UNREACHABLE
            else:
                outcome = await self._send(batch)
            if outcome is _Outcome.ACKED:
                self._published += batch.count
                return
            if outcome is _Outcome.REFUSED:
                refusals += 1
                if refusals >= self._max_attempts:
                    self._dropped += batch.count
                    log.error("API log batch %s (%d records) refused %d times; dropped", batch.msg_id, batch.count,
                              refusals)
                    return
            probing = outcome is _Outcome.UNREACHABLE
            await asyncio.sleep(backoff)
            backoff = min(self._max_backoff, backoff * 2)

    async def _send(self, batch: _Batch) -> _Outcome:
        try:
            await self._js.publish(self._subject, batch.payload, timeout=self._ack_timeout,
                                   headers={"Nats-Msg-Id": batch.msg_id})
        except NoStreamResponseError as exc:
            # No stream answered. A replicated stream electing a new leader (a nats-server of
            # the cluster died) answers so for seconds; only a subject no stream takes is refused.
            if await self._stream_exists():
                return _Outcome.UNREACHABLE
            log.warning("API log batch %s refused: %r", batch.msg_id, exc)
            return _Outcome.REFUSED
        except ServiceUnavailableError:
            # JetStream said "temporarily unavailable" (503): an outage, not a refusal.
            return _Outcome.UNREACHABLE
        except (APIError, nats.errors.MaxPayloadError) as exc:
            log.warning("API log batch %s refused: %r", batch.msg_id, exc)
            return _Outcome.REFUSED
        except nats.errors.Error:
            # No ack in time, disconnected with a full reconnect buffer, or the connection closed.
            return _Outcome.UNREACHABLE
        return _Outcome.ACKED

    async def _stream_exists(self) -> bool:
        """Whether a stream takes `subject` (the cluster's metadata leader answers this even
        while that stream has no leader); no answer counts as yes: an outage, not a refusal."""
        try:
            await asyncio.wait_for(self._js.find_stream_name_by_subject(self._subject), self._ack_timeout)
        except NotFoundError:
            return False
        except (nats.errors.Error, asyncio.TimeoutError):
            pass
        return True

    async def _reachable(self) -> bool:
        """Whether the server answers a small JetStream request that stores nothing."""
        try:
            await asyncio.wait_for(self._js.account_info(), self._ack_timeout)
        except APIError:
            return True  # an answer, even a refusal: the next send will tell what it is
        except (nats.errors.Error, asyncio.TimeoutError):
            return False
        return True
