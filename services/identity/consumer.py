"""A durable JetStream consumer of the registry's `trellis.integration.>` events.

Suspension and revocation call RevokeCredentials synchronously; this consumer is the safety net
should that call have been lost, and it keeps each client's granted scopes in step with the
registry's `updated` events. A message is acked only after identity's own commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.contracts.trellis.events.v1 import events_pb2
from services.identity.handlers import ApplyIntegrationChange, CredentialHandlers
from services.kit.bus import context_from_headers
from services.kit.errors import TrellisError
from services.kit.telemetry import tracer

log = logging.getLogger(__name__)

SUBJECT = "trellis.integration.>"
STREAM = "TRELLIS"
RETRY_DELAY_SECONDS = 2.0
STOP_GRACE_SECONDS = 5.0


def change_from_message(msg: Msg) -> ApplyIntegrationChange:
    """The event a message carries; raises DecodeError for a payload that is not IntegrationChanged."""
    event = events_pb2.IntegrationChanged.FromString(msg.data)
    fallback_id = (msg.headers or {}).get("Nats-Msg-Id") or f"{STREAM}-{msg.metadata.sequence.stream}"
    occurred = event.occurred_at.ToDatetime(tzinfo=dt.timezone.utc) if event.HasField("occurred_at") else msg.metadata.timestamp
    kind = event.kind or msg.subject.rsplit(".", 1)[-1]
    return ApplyIntegrationChange(
        event_id=event.event_id or fallback_id,
        kind=kind,
        org_id=event.org_id,
        integration_id=event.integration_id,
        scopes=tuple(event.scopes),
        occurred_at=occurred.astimezone(dt.timezone.utc),
        actor_id=event.actor_id,
    )


class IntegrationEventsConsumer:
    """Pulls integration events under a durable name and applies each through the handlers."""

    def __init__(self, js: JetStreamContext, handlers: CredentialHandlers, *, durable: str = "identity",
                 batch: int = 20, ack_wait_seconds: float = 30.0) -> None:
        self._js = js
        self._handlers = handlers
        self._durable = durable
        self._batch = batch
        self._ack_wait = ack_wait_seconds
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        config = ConsumerConfig(
            durable_name=self._durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._ack_wait,
            max_deliver=-1,
        )
        self._sub = await self._js.pull_subscribe(SUBJECT, durable=self._durable, stream=STREAM, config=config)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._durable}")

    async def stop(self) -> None:
        if self._task is not None:
            # The flag ends the loop even when nats-py's fetch (asyncio.wait_for on Python 3.11)
            # swallows the cancel; the bounded wait keeps a stuck fetch from hanging shutdown.
            self._stopping = True
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
            if not done:
                log.warning("integration events consumer did not stop within %.0fs", STOP_GRACE_SECONDS)
            elif not self._task.cancelled() and self._task.exception() is not None:
                log.warning("integration events consumer ended with an error", exc_info=self._task.exception())
            self._task = None
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be closing
                log.debug("unsubscribe failed while stopping", exc_info=True)
            self._sub = None

    async def _run(self) -> None:
        assert self._sub is not None
        while not self._stopping:
            try:
                messages = await self._sub.fetch(self._batch, timeout=1.0)
            except TimeoutError:  # nothing to fetch (nats.errors.TimeoutError is a TimeoutError too)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep consuming through a NATS outage
                log.warning("fetching integration events failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            for msg in messages:
                await self.handle(msg)

    async def handle(self, msg: Msg) -> None:
        """Apply one message and ack it; a transient failure is redelivered later."""
        with tracer(__name__).start_as_current_span("identity.integration_event", context=context_from_headers(msg.headers)) as span:
            span.set_attribute("messaging.destination.name", msg.subject)
            try:
                change = change_from_message(msg)
            except DecodeError:
                log.warning("dropping undecodable message on %s", msg.subject)
                await msg.term()
                return
            try:
                await self._handlers.apply_integration_change(change)
            except TrellisError as exc:
                # A rule refused the event (say, a malformed scope): retrying cannot help.
                log.warning("integration event %s refused: %s", change.event_id, exc)
                await msg.term()
                return
            except Exception:  # noqa: BLE001 - a database hiccup: let JetStream redeliver
                log.warning("applying integration event %s failed; will retry", change.event_id, exc_info=True)
                await msg.nak(delay=RETRY_DELAY_SECONDS)
                return
            await msg.ack()
