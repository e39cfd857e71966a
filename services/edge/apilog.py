"""One `ApiRequestLogged` record per partner request, published to JetStream off the response path.

`record()` only appends to a bounded in-memory queue; a background task drains it in batches of
up to `max_batch` (or whatever arrived within `flush_interval`), publishes the batch with many
publishes in flight at once (nats-py's `publish_async`) and awaits the PubAcks. Each message
carries `Nats-Msg-Id = request_id`, so a record sent again after a lost ack is stored once
(within the APILOG stream's duplicate window, see services.kit.bus).

What can be lost, and how it shows:
- the queue is full (`max_queue` records waiting): the new record is dropped and counted;
- the server refused a record `max_attempts` times (for example no stream is bound to the
  subject): dropped, counted and logged;
- `close()` ran out of time: what was left is dropped and counted.
A record that was taken off the queue is never dropped because NATS was unreachable or an ack
was late: those failures are retried, first one record at a time as a probe (so an outage
does not fill the client's reconnect buffer with copies), then the rest once the probe lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from services.contracts.trellis.events.v1 import events_pb2

log = logging.getLogger(__name__)

_Record = tuple[str, bytes]  # (request id, serialized ApiRequestLogged)


class ApiLogPublisher:
    """Queues request-log records and publishes them to `subject` in the background."""

    def __init__(self, js: JetStreamContext, *, subject: str = "apilog.request", max_queue: int = 50_000,
                 max_batch: int = 500, flush_interval: float = 0.05, ack_timeout: float = 2.0,
                 max_attempts: int = 5, max_backoff: float = 2.0) -> None:
        self._js = js
        self._subject = subject
        self._max_queue = max_queue
        self._max_batch = max(1, max_batch)
        self._flush_interval = flush_interval
        self._ack_timeout = ack_timeout
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff
        self._queue: deque[_Record] = deque()
        self._inflight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._dropped = 0
        self._published = 0

    @property
    def dropped(self) -> int:
        """Records lost: queue full, refused by the server, or left over at close."""
        return self._dropped

    @property
    def published(self) -> int:
        """Records the stream acknowledged (it stores one per request id)."""
        return self._published

    @property
    def queued(self) -> int:
        """Records waiting or in flight."""
        return len(self._queue) + self._inflight

    def record(self, entry: events_pb2.ApiRequestLogged) -> None:
        """Queue one record; never blocks and never raises (drops and counts when full)."""
        try:
            if self._closing or len(self._queue) >= self._max_queue:
                self._dropped += 1
                return
            self._queue.append((entry.request_id, entry.SerializeToString()))
            if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
                self._wake.set()
        except Exception:  # a log record must never fail the request it describes
            self._dropped += 1
            log.exception("could not queue an API log record")

    async def start(self) -> None:
        """Start the background publisher."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="apilog-publisher")

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued, for at most `timeout` seconds; count the rest as dropped."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            await self.start()
        assert self._task is not None
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
            self._inflight = 0

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < self._max_batch and not self._closing:
                # Give a batch a moment to fill; record() wakes us early once it is full.
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            self._inflight = len(batch)
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not stop the publisher; the batch is lost and counted.
                log.exception("API log batch failed; %d records lost", self._inflight)
                self._dropped += self._inflight
            finally:
                self._inflight = 0

    async def _deliver(self, batch: list[_Record]) -> None:
        """Publish `batch` until every record is acked or refused `max_attempts` times."""
        pending = batch
        refusals: dict[str, int] = {}
        backoff = 0.05
        probing = False
        while pending:
            sending, waiting = (pending[:1], pending[1:]) if probing else (pending, [])
            retry, unreachable = await self._send(sending)
            kept = []
            for rec, refused in retry:
                if refused:
                    refusals[rec[0]] = refusals.get(rec[0], 0) + 1
                    if refusals[rec[0]] >= self._max_attempts:
                        self._dropped += 1
                        log.error("API log record %s refused %d times; dropped", rec[0], self._max_attempts)
                        continue
                kept.append(rec)
            pending = kept + waiting
            self._inflight = len(pending)
            probing = unreachable
            if kept:
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff, backoff * 2)
            else:
                backoff = 0.05

    async def _send(self, records: list[_Record]) -> tuple[list[tuple[_Record, bool]], bool]:
        """Publish `records` concurrently; returns (failed record, server refused it) pairs and
        whether NATS looked unreachable."""
        futures: list[tuple[_Record, asyncio.Future[PubAck]]] = []
        failed: list[tuple[_Record, bool]] = []
        unreachable = False
        for i, rec in enumerate(records):
            try:
                # No wait_stall: with one, nats-py waits through a task and flushes every message
                # alone; a batch is far below its 4,000 in-flight bound anyway.
                fut = await self._js.publish_async(self._subject, rec[1], headers={"Nats-Msg-Id": rec[0]})
            except nats.errors.Error:
                # Disconnected with a full reconnect buffer, or the connection is closed.
                failed.extend((r, False) for r in records[i:])
                unreachable = True
                break
            futures.append((rec, fut))
        if futures:
            await asyncio.wait([f for _, f in futures], timeout=self._ack_timeout)
        for rec, fut in futures:
            if not fut.done():
                fut.cancel()
                failed.append((rec, False))
                unreachable = True
            elif fut.cancelled():
                failed.append((rec, False))
            elif (exc := fut.exception()) is not None:
                refused = isinstance(exc, (APIError, NoStreamResponseError))
                unreachable = unreachable or not refused
                failed.append((rec, refused))
            else:
                self._published += 1
        return failed, unreachable
