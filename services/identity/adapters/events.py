"""The events identity publishes, in the wire formats of protos/trellis/events/v1; the unit of
work (adapters/store.py) writes them to the outbox in its transaction.

`trellis.credentials.<kind>` (CredentialsChanged) tells edge replicas which key hashes and
client ids stopped working; `trellis.audit.identity.<action>` (AuditEvent) is the audit trail.
Neither ever carries a plain-text secret.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.ids import new_id
from services.kit.prototime import timestamp

SERVICE = "identity"


@dataclass(frozen=True)
class OutgoingEvent:
    event_id: str
    subject: str
    payload: bytes


def credentials_changed(
    kind: str,
    *,
    org_id: str,
    integration_id: str = "",
    now: dt.datetime,
    revoked_api_key_hashes: Iterable[str] = (),
    revoked_client_ids: Iterable[str] = (),
    kid: str = "",
) -> OutgoingEvent:
    """`trellis.credentials.<kind>` (issued, revoked, api_key_regenerated, signing_key_rotated)."""
    event_id = new_id("evt")
    payload = events_pb2.CredentialsChanged(
        event_id=event_id,
        occurred_at=timestamp(now),
        kind=kind,
        org_id=org_id,
        integration_id=integration_id,
        revoked_api_key_hashes=list(revoked_api_key_hashes),
        revoked_client_ids=list(revoked_client_ids),
        kid=kid,
    )
    return OutgoingEvent(event_id, f"trellis.credentials.{kind}", payload.SerializeToString())


def audit(
    action: str,
    *,
    org_id: str,
    actor_id: str,
    object_type: str,
    object_id: str,
    now: dt.datetime,
    before: Mapping[str, object] | None = None,
    after: Mapping[str, object] | None = None,
    reason: str = "",
    request_id: str = "",
) -> OutgoingEvent:
    """`trellis.audit.identity.<action>`; `before`/`after` must hold no secret."""
    event_id = new_id("evt")
    payload = events_pb2.AuditEvent(
        event_id=event_id,
        occurred_at=timestamp(now),
        service=SERVICE,
        org_id=org_id,
        actor_id=actor_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        before_json=json.dumps(before, sort_keys=True) if before is not None else "",
        after_json=json.dumps(after, sort_keys=True) if after is not None else "",
        reason=reason,
        request_id=request_id,
    )
    return OutgoingEvent(event_id, f"trellis.audit.{SERVICE}.{action}", payload.SerializeToString())
