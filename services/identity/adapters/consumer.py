"""A durable JetStream consumer of the registry's `trellis.integration.>` events.

Suspension and revocation call RevokeCredentials synchronously; this consumer is the safety net
should that call have been lost, and it keeps each client's granted scopes in step with the
registry's `updated` events. A message is acked only after identity's own commit.
"""

from __future__ import annotations

import datetime as dt
import logging

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.contracts.trellis.events.v1 import events_pb2
from services.identity.application.commands import ApplyIntegrationChange
from services.identity.application.handlers import CredentialHandlers
from services.kit.bus import context_from_headers
from services.kit.consumer import LoopConsumer, PullLoop
from services.kit.errors import TrellisError
from services.kit.prototime import field_datetime
from services.kit.telemetry import current_span, tracer
from services.kit.uow import WriteConflict

log = logging.getLogger(__name__)

SUBJECT = "trellis.integration.>"
STREAM = "TRELLIS"
RETRY_DELAY_SECONDS = 2.0


def change_from_message(msg: Msg) -> ApplyIntegrationChange:
    """The event a message carries; raises DecodeError for a payload that is not IntegrationChanged."""
    event = events_pb2.IntegrationChanged.FromString(msg.data)
    fallback_id = (msg.headers or {}).get("Nats-Msg-Id") or f"{STREAM}-{msg.metadata.sequence.stream}"
    occurred = field_datetime(event, "occurred_at") or msg.metadata.timestamp
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


class IntegrationEventsConsumer(LoopConsumer):
    """Pulls integration events under a durable name and applies each through the handlers."""

    def __init__(self, js: JetStreamContext, handlers: CredentialHandlers, *, durable: str = "identity",
                 batch: int = 20, ack_wait_seconds: float = 30.0) -> None:
        self._handlers = handlers
        # Public: its stream and durable name are what the service's metrics watch.
        self.loop = PullLoop(js, subject=SUBJECT, stream=STREAM, durable=durable, batch=batch,
                              ack_wait_seconds=ack_wait_seconds)

    async def handle_batch(self, messages: list[Msg]) -> None:
        for msg in messages:
            await self.handle(msg)

    async def handle(self, msg: Msg) -> None:
        """Apply one message and ack it; a transient failure is redelivered later."""
        with current_span(tracer(__name__), "identity.integration_event", context=context_from_headers(msg.headers)) as span:
            span.set_attribute("messaging.destination.name", msg.subject)
            try:
                change = change_from_message(msg)
            except DecodeError:
                log.warning("dropping undecodable message on %s", msg.subject)
                await msg.term()
                return
            try:
                await self._handlers.apply_integration_change(change)
            except WriteConflict:
                # Another replica wrote the same rows (the same event, say): a retry settles it.
                log.warning("applying integration event %s conflicted; will retry", change.event_id, exc_info=True)
                await msg.nak(delay=RETRY_DELAY_SECONDS)
                return
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
