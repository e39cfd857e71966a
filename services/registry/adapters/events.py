"""The events one integration change (domain IntegrationChanged) publishes: the
IntegrationChanged message for the services that follow integrations (identity, edge) and an
AuditEvent for the audit trail (logs), in the wire formats of protos/trellis/events/v1.

Both carry only the integration's non-secret fields. A setup request of a pre-built integration
(domain/setup.py) changing publishes one AuditEvent, which names its secret fields but never
holds their values.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.ids import new_id
from services.kit.prototime import timestamp, timestamp_or_none
from services.registry.domain.model import Integration, IntegrationChanged, snapshot_json
from services.registry.domain.setup import SetupRequestChanged, setup_snapshot_json

SERVICE = "registry"


@dataclass(frozen=True)
class OutgoingEvent:
    event_id: str
    subject: str
    payload: bytes


def of_change(change: IntegrationChanged) -> tuple[OutgoingEvent, OutgoingEvent]:
    """The two messages of one change, in the order they are published."""
    return (
        integration_changed(change.kind, change.after, actor_id=change.actor_id),
        audit_event(change.kind, change.before, change.after, actor_id=change.actor_id, reason=change.reason,
                    request_id=change.request_id),
    )


def integration_changed(kind: str, after: Integration, *, actor_id: str) -> OutgoingEvent:
    event = events_pb2.IntegrationChanged(
        event_id=new_id("evt"),
        occurred_at=timestamp(after.updated_at),
        kind=kind,
        org_id=after.org_id,
        integration_id=after.id,
        status=after.status.value,
        scopes=after.scopes,
        rate_limit_per_minute=after.rate_limit_per_minute,
        daily_quota=after.daily_quota,
        ip_allowlist=after.ip_allowlist,
        version=after.version,
        actor_id=actor_id,
        name=after.name,
        owner=after.owner,
        vendor_id=after.vendor_id,
        credentials_issued_at=timestamp_or_none(after.credentials_issued_at),
    )
    return OutgoingEvent(event.event_id, f"trellis.integration.{kind}", event.SerializeToString())


def audit_event(
    kind: str,
    before: Integration | None,
    after: Integration,
    *,
    actor_id: str,
    reason: str = "",
    request_id: str = "",
) -> OutgoingEvent:
    event = events_pb2.AuditEvent(
        event_id=new_id("evt"),
        occurred_at=timestamp(after.updated_at),
        service=SERVICE,
        org_id=after.org_id,
        actor_id=actor_id,
        action=f"integration.{kind}",
        object_type="integration",
        object_id=after.id,
        before_json=snapshot_json(before),
        after_json=snapshot_json(after),
        reason=reason,
        request_id=request_id,
    )
    return OutgoingEvent(event.event_id, f"trellis.audit.{SERVICE}.integration.{kind}", event.SerializeToString())


def setup_audit_event(change: SetupRequestChanged) -> OutgoingEvent:
    """The AuditEvent of one setup request change, in the requesting organisation's trail (the
    actor may be a platform operator of another). Before and after name secret fields only."""
    after = change.after
    event = events_pb2.AuditEvent(
        event_id=new_id("evt"),
        occurred_at=timestamp(after.updated_at),
        service=SERVICE,
        org_id=after.org_id,
        actor_id=change.actor_id,
        action=f"setup_request.{change.kind}",
        object_type="setup_request",
        object_id=after.id,
        before_json=setup_snapshot_json(change.before),
        after_json=setup_snapshot_json(after),
        reason=change.reason,
        request_id=change.request_id,
    )
    return OutgoingEvent(event.event_id, f"trellis.audit.{SERVICE}.setup_request.{change.kind}",
                         event.SerializeToString())
