"""The events webhooks publishes, in the wire formats of protos/: built here, written to the
outbox in the caller's transaction (adapters/store.py's unit of work; the dispatcher's writer).

`trellis.webhooks.alert.<kind>` (SubscriptionAlert) is the operational event of a subscription
becoming Failing or recovering, with the same event id and data as the `webhook.<kind>` activity
the organisation's other subscriptions receive.
`trellis.subscription.<kind>` (SubscriptionChanged) tells every webhooks replica to drop what
it holds of a changed subscription; `trellis.audit.webhooks.subscription.<kind>` (AuditEvent)
is the audit trail of what administrators and partners changed. Neither carries a secret.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.ids import new_id
from services.kit.prototime import timestamp
from services.kit.prototime import timestamp_or_none
from services.webhooks.domain.model import SYSTEM_ACTOR, IncomingActivity, Subscription, SubscriptionStatus

SERVICE = "webhooks"
__all__ = ["SERVICE", "STATUS_TO_PROTO", "SYSTEM_ACTOR", "OutgoingEvent", "alert", "audit", "changed",
           "retention_audit", "subscription_changed"]

STATUS_TO_PROTO = {status: pb.SubscriptionStatus.Value(f"SUBSCRIPTION_STATUS_{status.name}") for status in SubscriptionStatus}


@dataclass(frozen=True)
class OutgoingEvent:
    event_id: str
    subject: str
    payload: bytes


def subscription_changed(kind: str, *, subscription_id: str, org_id: str, integration_id: str,
                         status: SubscriptionStatus, version: int, actor_id: str, now: dt.datetime) -> OutgoingEvent:
    """`trellis.subscription.<kind>`."""
    event_id = new_id("evt")
    payload = pb.SubscriptionChanged(
        event_id=event_id, occurred_at=timestamp(now), kind=kind, org_id=org_id, subscription_id=subscription_id,
        integration_id=integration_id, status=STATUS_TO_PROTO[status], version=version, actor_id=actor_id,
    )
    return OutgoingEvent(event_id, f"trellis.subscription.{kind}", payload.SerializeToString())


def changed(kind: str, subscription: Subscription, *, actor_id: str, now: dt.datetime) -> OutgoingEvent:
    return subscription_changed(
        kind, subscription_id=subscription.id, org_id=subscription.org_id,
        integration_id=subscription.integration_id, status=subscription.status, version=subscription.version,
        actor_id=actor_id, now=now,
    )


def audit(kind: str, *, before: Subscription | None, after: Subscription, actor_id: str, now: dt.datetime,
          request_id: str = "") -> OutgoingEvent:
    """`trellis.audit.webhooks.subscription.<kind>`; the views hold no secret."""
    event_id = new_id("evt")
    payload = events_pb2.AuditEvent(
        event_id=event_id, occurred_at=timestamp(now), service=SERVICE, org_id=after.org_id, actor_id=actor_id,
        action=f"subscription.{kind}", object_type="subscription", object_id=after.id,
        before_json=json.dumps(before.audit_view(), sort_keys=True) if before is not None else "",
        after_json=json.dumps(after.audit_view(), sort_keys=True), request_id=request_id,
    )
    return OutgoingEvent(event_id, f"trellis.audit.{SERVICE}.subscription.{kind}", payload.SerializeToString())


def alert(activity: IncomingActivity, *, integration_id: str, url: str, failing_since: dt.datetime | None) -> OutgoingEvent:
    """`trellis.webhooks.alert.<kind>`: the alert activity's operational twin (same event id)."""
    kind = activity.type.removeprefix("webhook.")
    payload = pb.SubscriptionAlert(
        event_id=activity.event_id, occurred_at=timestamp(activity.occurred_at), kind=kind, org_id=activity.org_id,
        subscription_id=activity.about_subscription_id, integration_id=integration_id, url=url,
        failing_since=timestamp_or_none(failing_since), data_json=json.dumps(activity.data, separators=(",", ":")),
    )
    return OutgoingEvent(activity.event_id, f"trellis.{SERVICE}.alert.{kind}", payload.SerializeToString())


def retention_audit(org_id: str, *, before: int | None, after: int | None, default_days: int, actor_id: str,
                    now: dt.datetime, request_id: str = "") -> OutgoingEvent:
    """`trellis.audit.webhooks.retention.set`: an organisation's retention override changed."""
    def view(days: int | None) -> str:
        return json.dumps({"days": days if days is not None else default_days, "overridden": days is not None},
                          sort_keys=True)

    event_id = new_id("evt")
    payload = events_pb2.AuditEvent(
        event_id=event_id, occurred_at=timestamp(now), service=SERVICE, org_id=org_id, actor_id=actor_id,
        action="retention.set", object_type="retention", object_id=org_id, before_json=view(before),
        after_json=view(after), request_id=request_id,
    )
    return OutgoingEvent(event_id, f"trellis.audit.{SERVICE}.retention.set", payload.SerializeToString())
