"""The events webhooks publishes, written to its outbox in the caller's transaction.

`trellis.subscription.<kind>` (SubscriptionChanged) tells every webhooks replica to drop what
it holds of a changed subscription; `trellis.audit.webhooks.subscription.<kind>` (AuditEvent)
is the audit trail of what administrators and partners changed. Neither carries a secret.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy.ext.asyncio import AsyncSession

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.ids import new_id
from services.kit.outbox import add_event
from services.kit.prototime import timestamp
from services.webhooks.domain.model import Subscription, SubscriptionStatus
from services.webhooks.adapters.store import outbox

SERVICE = "webhooks"
SYSTEM_ACTOR = "system"

STATUS_TO_PROTO = {status: pb.SubscriptionStatus.Value(f"SUBSCRIPTION_STATUS_{status.name}") for status in SubscriptionStatus}


async def subscription_changed(session: AsyncSession, kind: str, *, subscription_id: str, org_id: str,
                               integration_id: str, status: SubscriptionStatus, version: int, actor_id: str,
                               now: dt.datetime) -> str:
    """Write `trellis.subscription.<kind>`."""
    event_id = new_id("evt")
    payload = pb.SubscriptionChanged(
        event_id=event_id, occurred_at=timestamp(now), kind=kind, org_id=org_id, subscription_id=subscription_id,
        integration_id=integration_id, status=STATUS_TO_PROTO[status], version=version, actor_id=actor_id,
    )
    return await add_event(session, outbox, f"trellis.subscription.{kind}", payload.SerializeToString(), event_id=event_id)


async def changed(session: AsyncSession, kind: str, subscription: Subscription, *, actor_id: str, now: dt.datetime) -> str:
    return await subscription_changed(
        session, kind, subscription_id=subscription.id, org_id=subscription.org_id,
        integration_id=subscription.integration_id, status=subscription.status, version=subscription.version,
        actor_id=actor_id, now=now,
    )


async def audit(session: AsyncSession, kind: str, *, before: Subscription | None, after: Subscription, actor_id: str,
                now: dt.datetime, request_id: str = "") -> str:
    """Write `trellis.audit.webhooks.subscription.<kind>`; the views hold no secret."""
    event_id = new_id("evt")
    payload = events_pb2.AuditEvent(
        event_id=event_id, occurred_at=timestamp(now), service=SERVICE, org_id=after.org_id, actor_id=actor_id,
        action=f"subscription.{kind}", object_type="subscription", object_id=after.id,
        before_json=json.dumps(before.audit_view(), sort_keys=True) if before is not None else "",
        after_json=json.dumps(after.audit_view(), sort_keys=True), request_id=request_id,
    )
    return await add_event(session, outbox, f"trellis.audit.{SERVICE}.subscription.{kind}", payload.SerializeToString(),
                           event_id=event_id)


async def changed_and_audited(session: AsyncSession, kind: str, *, before: Subscription | None, after: Subscription,
                              actor_id: str, now: dt.datetime, request_id: str = "") -> None:
    """A change an actor made: the subscription event and its audit record."""
    await changed(session, kind, after, actor_id=actor_id, now=now)
    await audit(session, kind, before=before, after=after, actor_id=actor_id, now=now, request_id=request_id)
