"""How integrations are shown: status names, which buttons a state offers, scope groups,
times. Presentation only: the registry decides every action (a button shown is still refused
there when the rules say so). tests/unit/console/test_views.py holds ACTIONS to the registry's
transition table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from services.contracts.trellis.registry.v1 import registry_pb2 as pb

STATUS_NAMES = {
    pb.INTEGRATION_STATUS_REQUESTED: "Requested",
    pb.INTEGRATION_STATUS_APPROVED: "Approved",
    pb.INTEGRATION_STATUS_ACTIVE: "Active",
    pb.INTEGRATION_STATUS_SUSPENDED: "Suspended",
    pb.INTEGRATION_STATUS_REVOKED: "Revoked",
}
STATUS_BY_SLUG = {name.lower(): value for value, name in STATUS_NAMES.items()}
LIVE = (pb.INTEGRATION_STATUS_ACTIVE, pb.INTEGRATION_STATUS_SUSPENDED)

# The buttons each state offers, mirroring the registry's lifecycle (services/registry/domain.py
# TRANSITIONS): update and revoke from every state but Revoked; the rest from one state each.
ACTIONS: dict[int, tuple[str, ...]] = {
    pb.INTEGRATION_STATUS_REQUESTED: ("approve", "edit", "revoke"),
    pb.INTEGRATION_STATUS_APPROVED: ("activate", "edit", "revoke"),
    pb.INTEGRATION_STATUS_ACTIVE: ("edit", "regenerate-key", "suspend", "revoke"),
    pb.INTEGRATION_STATUS_SUSPENDED: ("reactivate", "edit", "revoke"),
    pb.INTEGRATION_STATUS_REVOKED: (),
}
HISTORY_ACTIONS = {
    "created": "Requested", "approved": "Approved", "activated": "Activated", "updated": "Updated",
    "suspended": "Suspended", "reactivated": "Reactivated", "revoked": "Revoked",
    "api_key_regenerated": "API key regenerated",
}
# The spec's warnings, shown beside the categories they are about.
WARNINGS = {
    "crm": ("PII", "The CRM scope grants access to personally identifiable information (PII), including contact "
            "names, emails, and phone numbers. Grant it only when the integration has a legitimate business "
            "need, and review it during quarterly audits."),
    "finance": ("Financial data", "The Finance scope exposes transaction and invoice data. Grant it only when the "
                "integration has a legitimate business need, and review it during quarterly audits."),
}


def status_name(status: pb.IntegrationStatus) -> str:
    return STATUS_NAMES.get(status, "Unknown")


def actions(status: int) -> tuple[str, ...]:
    return ACTIONS.get(status, ())


def when(ts: object) -> str:
    """A protobuf Timestamp as `2026-04-01 09:30 UTC`, or "" when unset."""
    seconds = getattr(ts, "seconds", 0)
    if not seconds:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def when_iso(ts: object) -> str:
    seconds = getattr(ts, "seconds", 0)
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat() if seconds else ""


@dataclass(frozen=True)
class ScopeChoice:
    scope: str
    action: str
    checked: bool


@dataclass(frozen=True)
class ScopeGroup:
    """One category of the catalogue, with its actions as choices."""

    id: str
    name: str
    grants: str
    sensitivity: str
    choices: tuple[ScopeChoice, ...]
    warning: tuple[str, str] | None


def scope_groups(categories: Iterable[pb.ScopeCategory], chosen: Iterable[str]) -> list[ScopeGroup]:
    picked = set(chosen)
    return [ScopeGroup(c.id, c.name, c.grants, c.sensitivity,
                       tuple(ScopeChoice(f"{c.id}:{a}", a, f"{c.id}:{a}" in picked) for a in c.actions),
                       WARNINGS.get(c.id)) for c in categories]


def sensitivity_of(categories: Iterable[pb.ScopeCategory]) -> dict[str, str]:
    """scope category id -> its sensitivity label."""
    return {c.id: c.sensitivity for c in categories}
