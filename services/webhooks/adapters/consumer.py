"""What webhooks takes from NATS.

- `activity.>` (stream ACTIVITY): platform activity. A durable pull consumer takes batches,
  stores each batch's activities and deliveries in one transaction, and acks only after that
  commit; an event id already stored is dropped. Payload: `trellis.events.v1.ActivityEvent`
  protobuf, or the same fields as a JSON object (for platform publishers without protobuf).
  An activity whose `data` does not fit its type's schema is stored and delivered all the same
  (a producer's mistake never loses an event), logged, and counted (`on_nonconforming`).
- `trellis.integration.>` (stream TRELLIS): the owning integration's lifecycle, durable too.
- `trellis.subscription.>`: this service's own events, heard by every replica (plain NATS
  subscription, no durable state): a replica drops what it holds of a changed subscription.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2
from services.kit.bus import context_from_headers
from services.kit.consumer import LoopConsumer, PullLoop
from services.kit.errors import TrellisError
from services.kit.prototime import field_datetime
from services.kit.telemetry import current_span, tracer
from services.webhooks.application.commands import ApplyIntegrationChange
from services.webhooks.domain.model import IncomingActivity, check_published_type, check_sender, parse_data
from services.webhooks.domain.schemas import data_problem
from services.webhooks.application.handlers import ActivityIngest, WebhookHandlers

log = logging.getLogger(__name__)

ACTIVITY_SUBJECT = "activity.>"
ACTIVITY_STREAM = "ACTIVITY"
INTEGRATION_SUBJECT = "trellis.integration.>"
SUBSCRIPTION_SUBJECT = "trellis.subscription.>"
TRELLIS_STREAM = "TRELLIS"
RETRY_DELAY_SECONDS = 1.0
# Activities: a batch closes this soon after its first message (latency), or when full.
BATCH_WAIT_SECONDS = 0.02
_TRACE_KEYS = ("traceparent", "tracestate")


class MalformedActivity(ValueError):
    """A message that can never become an activity: terminated, not retried."""


def activity_from_message(msg: Msg) -> IncomingActivity:
    """The activity a message carries (protobuf ActivityEvent, or the same fields in JSON)."""
    headers = msg.headers or {}
    subject_type = msg.subject.removeprefix("activity.")
    try:
        if msg.data[:1] == b"{":
            fields = json.loads(msg.data)
            data: object = fields.get("data", parse_data(fields.get("data_json", "") or ""))
            occurred_text = fields.get("occurred_at") or ""
            occurred = dt.datetime.fromisoformat(occurred_text.replace("Z", "+00:00")) if occurred_text else None
            event_id, type_, org_id = fields.get("event_id", ""), fields.get("type", ""), fields.get("org_id", "")
            sender_type, sender_id = fields.get("sender_type", ""), fields.get("sender_id", "")
        else:
            event = events_pb2.ActivityEvent.FromString(msg.data)
            data = parse_data(event.data_json)
            occurred = field_datetime(event, "occurred_at")
            event_id, type_, org_id = event.event_id, event.type, event.org_id
            sender_type, sender_id = event.sender_type, event.sender_id
        if not org_id:
            raise MalformedActivity("no org_id")
        if occurred is not None and occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=dt.timezone.utc)
        sender = check_sender(str(sender_type), str(sender_id))
        activity_type = check_published_type(str(type_ or subject_type))
    except (DecodeError, ValueError, TypeError, AttributeError, TrellisError) as exc:
        raise MalformedActivity(str(exc)) from exc
    # The message's metadata (parsed from its reply subject) only when the event lacks a field.
    if not event_id:
        event_id = headers.get("Nats-Msg-Id") or f"{ACTIVITY_STREAM}-{msg.metadata.sequence.stream}"
    return IncomingActivity(
        event_id=str(event_id)[:128], type=activity_type, org_id=str(org_id),
        occurred_at=(occurred or msg.metadata.timestamp).astimezone(dt.timezone.utc), sender_type=sender[0],
        sender_id=sender[1], data=data, trace_headers={k: v for k, v in headers.items() if k in _TRACE_KEYS},
    )


class ActivityConsumer(LoopConsumer):
    """`activity.>` into activities and deliveries; acks after the commit."""

    def __init__(self, js: JetStreamContext, ingest: ActivityIngest, *, durable: str, replay_history: bool = True,
                 batch: int = 256, ack_wait_seconds: float = 30.0,
                 on_nonconforming: Callable[[str], None] = lambda activity_type: None) -> None:
        self._ingest = ingest
        self._nonconforming = on_nonconforming
        self._spans = tracer(__name__)
        # Public: its stream and durable name are what the service's metrics watch.
        self.loop = PullLoop(js, subject=ACTIVITY_SUBJECT, stream=ACTIVITY_STREAM, durable=durable,
                               replay_history=replay_history, batch=batch, ack_wait_seconds=ack_wait_seconds,
                               wait_seconds=BATCH_WAIT_SECONDS)

    async def handle_batch(self, messages: list[Msg]) -> None:
        good: list[tuple[Msg, IncomingActivity]] = []
        for msg in messages:
            try:
                activity = activity_from_message(msg)
            except MalformedActivity as exc:
                log.warning("dropping malformed activity on %s: %s", msg.subject, exc)
                await msg.term()
                continue
            problem = data_problem(activity.type, activity.data)
            if problem is not None:
                log.warning("activity %s (%s) does not fit its schema at %s; delivering it anyway",
                            activity.event_id, activity.type, problem[0])
                self._nonconforming(activity.type)
            good.append((msg, activity))
        if not good:
            return
        parent = context_from_headers(good[0][1].trace_headers)
        with current_span(self._spans, "webhooks.ingest", context=parent) as span:
            span.set_attribute("messaging.batch.message_count", len(good))
            try:
                await self._ingest.accept([activity for _, activity in good])
            except Exception:  # noqa: BLE001 - a database hiccup: let JetStream redeliver
                log.warning("storing %d activities failed; they will be redelivered", len(good), exc_info=True)
                for msg, _ in good:
                    await msg.nak(delay=RETRY_DELAY_SECONDS)
                return
        for msg, _ in good:
            await msg.ack()


class IntegrationEventsConsumer(LoopConsumer):
    """`trellis.integration.>`: the owning integration's status, applied to its subscriptions."""

    def __init__(self, js: JetStreamContext, handlers: WebhookHandlers, *, durable: str, replay_history: bool = True,
                 ack_wait_seconds: float = 30.0) -> None:
        self._handlers = handlers
        # Public: its stream and durable name are what the service's metrics watch.
        self.loop = PullLoop(js, subject=INTEGRATION_SUBJECT, stream=TRELLIS_STREAM, durable=durable,
                               replay_history=replay_history, batch=50, ack_wait_seconds=ack_wait_seconds)

    async def handle_batch(self, messages: list[Msg]) -> None:
        for msg in messages:
            try:
                event = events_pb2.IntegrationChanged.FromString(msg.data)
            except DecodeError:
                log.warning("dropping undecodable message on %s", msg.subject)
                await msg.term()
                continue
            fallback_id = (msg.headers or {}).get("Nats-Msg-Id") or f"{TRELLIS_STREAM}-{msg.metadata.sequence.stream}"
            change = ApplyIntegrationChange(event_id=event.event_id or fallback_id, org_id=event.org_id,
                                            integration_id=event.integration_id, status=event.status, version=event.version)
            if not change.integration_id or not change.status:
                await msg.ack()
                continue
            try:
                await self._handlers.apply_integration_change(change)
            except Exception:  # noqa: BLE001 - retried by JetStream
                log.warning("applying integration event %s failed; will retry", change.event_id, exc_info=True)
                await msg.nak(delay=RETRY_DELAY_SECONDS)
                continue
            await msg.ack()


class SubscriptionEventsListener:
    """Every replica hears `trellis.subscription.>` and drops its stale claims at once."""

    def __init__(self, nc: NATS, on_change: Callable[[str, int], None]) -> None:
        self._nc = nc
        self._on_change = on_change
        self._sub: NatsSubscription | None = None

    async def start(self) -> None:
        async def heard(msg: Msg) -> None:
            try:
                event = webhooks_pb2.SubscriptionChanged.FromString(msg.data)
            except DecodeError:
                return
            if event.subscription_id:
                self._on_change(event.subscription_id, event.version)

        self._sub = await self._nc.subscribe(SUBSCRIPTION_SUBJECT, cb=heard)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001
                log.debug("unsubscribe failed while stopping", exc_info=True)
            self._sub = None
