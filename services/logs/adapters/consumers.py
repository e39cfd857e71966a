"""Durable JetStream pull consumers: API request records (`apilog.>`), audit events
(`trellis.audit.>`) and integration facts (`trellis.integration.>`).

A message may carry several items: the edge sends its request records many to a message on
`apilog.batch` (an `ApiRequestBatch`); `apilog.request` (and any other `apilog.` subject)
carries one `ApiRequestLogged`. Each consumer fetches a batch of messages, bounded in count
and, for request records, in bytes (so a fetch of batches stays a reasonable commit), decodes
it, stores every item in one transaction, and acks the messages only after the commit. While
the logs service is down the records wait in their stream under the durable name and arrive
when it is back. A batch that fails is retried one message at a time, so
one undecodable or unstorable message cannot hold the rest back: when none of a batch
can be stored the database is taken to be down and everything is redelivered later; when
only some fail, those are redelivered a few times and then dropped with an error logged.
A batch is processed in stream order, so audit entries join their chain in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.bus import while_electing
from services.kit.prototime import field_datetime, is_unset, to_datetime
from services.logs.domain.model import LIMITS, ApiRequest, AuditRecord, clean
from services.logs.domain.review import IntegrationFacts

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_SUBJECT = "apilog.batch"
# What one API-log fetch (and so one commit) takes at most: some 8,000 records of a typical size.
# A message larger than this by itself is still delivered, alone (see Puller).
APILOG_FETCH_BYTES = 1024 * 1024

RETRY_DELAY_SECONDS = 2.0
FETCH_TIMEOUT_SECONDS = 0.5
STOP_GRACE_SECONDS = 3.0
REQUEST_GRACE_SECONDS = 2.0
# A message that fails on its own this many times is dropped (logged), not retried forever.
MAX_DELIVERIES = 5
# `repeats` is a uint32 on the wire and an int4 column.
MAX_REPEATS = 2**31 - 1


@dataclass(frozen=True)
class Durables:
    """The durable consumer names; tests sharing one nats-server give each service its own."""

    apilog: str = "logs-apilog"
    audit: str = "logs-audit"
    integrations: str = "logs-integrations"

    @classmethod
    def prefixed(cls, prefix: str) -> "Durables":
        return cls(f"{prefix}-apilog", f"{prefix}-audit", f"{prefix}-integrations")


def _when(msg: Msg, event_ts: Timestamp) -> dt.datetime:
    if not is_unset(event_ts):
        return to_datetime(event_ts, "occurred_at")
    return msg.metadata.timestamp.astimezone(dt.timezone.utc)


def _msg_id(msg: Msg, stream: str) -> str:
    return (msg.headers or {}).get("Nats-Msg-Id") or f"{stream}-{msg.metadata.sequence.stream}"


def _fallback_id(msg: Msg, index: int | None) -> str:
    msg_id = _msg_id(msg, "APILOG")
    return msg_id if index is None else f"{msg_id}-{index}"


def decode_requests(msg: Msg) -> list[ApiRequest]:
    """The records a message carries: many on `apilog.batch`, one on any other subject."""
    if msg.subject == BATCH_SUBJECT:
        records = events_pb2.ApiRequestBatch.FromString(msg.data).records
        return [_request(msg, e, i) for i, e in enumerate(records)]
    return [_request(msg, events_pb2.ApiRequestLogged.FromString(msg.data))]


def _request(msg: Msg, e: events_pb2.ApiRequestLogged, index: int | None = None) -> ApiRequest:
    """One record, each text cut to its column (the hot path: no generic loop). A record without
    a request id is named after its message (and its place in the batch); one without an
    organisation belongs to the platform log (domain.PLATFORM_LOG)."""
    return ApiRequest(
        org_id=clean(e.org_id, LIMITS["org_id"]),
        request_id=clean(e.request_id or _fallback_id(msg, index), LIMITS["request_id"]),
        timestamp=_when(msg, e.occurred_at), integration_id=clean(e.integration_id, LIMITS["integration_id"]),
        method=clean(e.method, LIMITS["method"]).upper(), endpoint=clean(e.endpoint, LIMITS["endpoint"]),
        status=e.status, duration_ms=e.duration_ms, ip=clean(e.ip, LIMITS["ip"]),
        error_code=clean(e.error_code, LIMITS["error_code"]), scope_category=clean(e.scope_category, LIMITS["scope_category"]),
        repeats=min(e.repeats, MAX_REPEATS) or 1,
    )


def single(decode: Callable[[Msg], T]) -> Callable[[Msg], list[T]]:
    """A BatchConsumer decoder for messages that carry one item each."""
    return lambda msg: [decode(msg)]


def decode_audit(msg: Msg) -> AuditRecord:
    e = events_pb2.AuditEvent.FromString(msg.data)
    action = e.action or msg.subject.split(".", 3)[-1]
    return AuditRecord.normalised(
        event_id=e.event_id or _msg_id(msg, "TRELLIS"), occurred_at=_when(msg, e.occurred_at),
        service=e.service or msg.subject.split(".")[2], org_id=e.org_id, actor_id=e.actor_id, action=action,
        object_type=e.object_type, object_id=e.object_id, before_json=e.before_json, after_json=e.after_json,
        reason=e.reason, request_id=e.request_id,
    )


def decode_integration(msg: Msg) -> IntegrationFacts:
    e = events_pb2.IntegrationChanged.FromString(msg.data)
    if not e.integration_id:
        raise DecodeError("IntegrationChanged without an integration id")
    return IntegrationFacts(
        integration_id=e.integration_id[:64], org_id=e.org_id[:200], name=e.name[:200], owner=e.owner[:200],
        vendor_id=e.vendor_id[:64], status=e.status[:20], scopes=tuple(e.scopes),
        rate_limit_per_minute=e.rate_limit_per_minute, daily_quota=e.daily_quota, ip_allowlist=tuple(e.ip_allowlist),
        credentials_issued_at=field_datetime(e, "credentials_issued_at"),
        version=e.version, updated_at=_when(msg, e.occurred_at),
    )


class Puller:
    """Pull requests answered into one inbox subscription whose callback buffers the messages.

    nats-py's `fetch` spends a task and a timer on every message, which caps a consumer at a
    few thousand messages a second; here a batch costs one request. After a batch is taken the
    next request goes out at once, so the next batch streams in while this one is stored.
    With `max_bytes` each request also asks the server for at most that many bytes; should a
    single message be larger, the server refuses the request (409) rather than send it, so the
    next request asks for that one message with no byte bound.
    """

    def __init__(self, nc: NATS, *, stream: str, durable: str, max_bytes: int | None = None) -> None:
        self._nc = nc
        self._max_bytes = max_bytes
        self._oversized = False      # the last request was refused for a message over max_bytes
        self._received = 0           # messages the open request has brought
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._buffer: list[Msg] = []
        self._wake = asyncio.Event()
        self._remaining = 0          # messages the open request may still bring
        self._open_until = 0.0       # a request lost in a reconnect counts as over after this

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            self._buffer.append(msg)
            self._remaining -= 1
            self._received += 1
        elif status != "100":  # 404 no messages, 408 expired, 409 limits: the request is over
            self._remaining = 0
            self._oversized = (status == "409" and self._received == 0 and self._max_bytes is not None
                               and (msg.headers or {}).get("Description") == "Message Size Exceeds MaxBytes")
        self._wake.set()

    def _open(self) -> bool:
        return self._remaining > 0 and time.monotonic() < self._open_until

    async def _request(self, batch: int, expires: float | None) -> None:
        body: dict[str, object] = {"batch": batch}
        if self._oversized:
            body["batch"] = batch = 1  # the message too large for max_bytes, alone
        elif self._max_bytes is not None:
            body["max_bytes"] = self._max_bytes
        self._oversized = False
        self._received = 0
        if expires is None:
            body["no_wait"] = True
        else:
            body["expires"] = int(expires * 1_000_000_000)
        self._remaining = batch
        self._open_until = time.monotonic() + (expires or 0.0) + REQUEST_GRACE_SECONDS
        self._wake.clear()
        await self._nc.publish(self._api, json.dumps(body).encode(), reply=self._inbox)

    async def take(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages; waits at most about `timeout` for the first one."""
        deadline = time.monotonic() + timeout
        if not self._buffer and not self._open():
            await self._request(batch, None)  # whatever is waiting now
        while not self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            if not self._open():
                await self._request(batch, left)  # nothing waiting: wait for the next one
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        if self._remaining > 0 and len(self._buffer) < batch:
            await asyncio.sleep(0)  # let a burst in flight finish landing
        taken, self._buffer = self._buffer[:batch], self._buffer[batch:]
        if not self._buffer and not self._open():
            await self._request(batch, None)  # prefetch the next batch while this one is stored
        return taken


class BatchConsumer(Generic[T]):
    """Pulls `subject` under a durable name; `decode(msg)` gives the items a message carries and
    `store(items)` must commit them before it returns. `stored` counts items, not messages.

    A fetch takes at most `batch` messages and, when `max_bytes` is set, about that many bytes.
    """

    def __init__(self, nc: NATS, *, subject: str, stream: str, durable: str,
                 decode: Callable[[Msg], Sequence[T]], store: Callable[[Sequence[T]], Awaitable[object]],
                 batch: int = 1000, max_bytes: int | None = None, ack_wait_seconds: float = 60.0) -> None:
        self._nc = nc
        self.subject, self.stream, self.durable = subject, stream, durable
        self._decode = decode
        self._store = store
        self._batch = batch
        self._max_bytes = max_bytes
        self._ack_wait = ack_wait_seconds
        self._puller: Puller | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stored = 0

    async def start(self) -> None:
        js = self._nc.jetstream()

        async def ensure_consumer() -> None:
            try:
                await js.consumer_info(self.stream, self.durable)
            except NotFoundError:
                await js.add_consumer(self.stream, ConsumerConfig(
                    name=self.durable,
                    durable_name=self.durable,
                    filter_subject=self.subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self._ack_wait,
                    max_deliver=-1,
                    # The batch being stored, the one prefetched, and room for redeliveries.
                    max_ack_pending=self._batch * 4,
                ))

        await while_electing(ensure_consumer, what=f"consumer {self.durable}")
        self._puller = Puller(self._nc, stream=self.stream, durable=self.durable, max_bytes=self._max_bytes)
        await self._puller.start()
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.durable}")

    async def stop(self) -> None:
        """Finish the batch in hand and stop; waiting for messages ends within a fetch timeout."""
        self._stopping = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
            self._task = None
        if self._puller is not None:
            try:
                await self._puller.stop()
            except Exception:  # noqa: BLE001 - the connection may already be closing
                log.debug("unsubscribe failed while stopping %s", self.durable, exc_info=True)
            self._puller = None

    async def _run(self) -> None:
        assert self._puller is not None
        while not self._stopping:
            try:
                messages = await self._puller.take(self._batch, FETCH_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep consuming through a NATS outage
                if self._stopping:
                    return
                log.warning("fetching %s failed; retrying", self.subject, exc_info=True)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            if not messages:
                continue
            try:
                await self.handle(messages)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - never let the loop die; JetStream redelivers
                log.exception("handling a batch of %s failed", self.subject)
                await asyncio.sleep(RETRY_DELAY_SECONDS)

    async def handle(self, messages: Sequence[Msg]) -> None:
        """Store one fetched batch and ack it; see the module doc for failures."""
        decoded: list[tuple[Msg, Sequence[T]]] = []
        for msg in messages:
            try:
                decoded.append((msg, self._decode(msg)))
            except (DecodeError, ValueError, IndexError, OverflowError) as exc:  # Overflow: a time out of range
                log.warning("dropping an undecodable message on %s: %s", msg.subject, exc)
                await msg.term()
        if not decoded:
            return
        items = [item for _, carried in decoded for item in carried]
        try:
            await self._store(items)
        except Exception:  # noqa: BLE001 - find out whether one message or the database is at fault
            log.warning("storing %d items of %d messages from %s failed; retrying one message at a time", len(items),
                        len(decoded), self.subject, exc_info=True)
            await self._one_by_one(decoded)
            return
        self.stored += len(items)
        for msg, _ in decoded:
            await msg.ack()

    async def _one_by_one(self, decoded: list[tuple[Msg, Sequence[T]]]) -> None:
        failed: list[Msg] = []
        for msg, carried in decoded:
            try:
                await self._store(carried)
            except Exception:  # noqa: BLE001 - a failure of this one message
                failed.append(msg)
                continue
            self.stored += len(carried)
            await msg.ack()
        if len(failed) == len(decoded):
            # Nothing could be stored: the database is down, not the messages. Redeliver all.
            for msg in failed:
                await msg.nak(delay=RETRY_DELAY_SECONDS)
            await asyncio.sleep(RETRY_DELAY_SECONDS)
            return
        for msg in failed:
            if msg.metadata.num_delivered >= MAX_DELIVERIES:
                log.error("dropping a message on %s (stream seq %d) that failed %d times", msg.subject,
                          msg.metadata.sequence.stream, msg.metadata.num_delivered)
                await msg.term()
            else:
                await msg.nak(delay=RETRY_DELAY_SECONDS)
