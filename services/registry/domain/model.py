"""The registry's rules: vendors, the scope catalogue, integration settings and the lifecycle.

Plain Python: nothing here knows about gRPC, SQL or NATS. Every rule a user can see in the
"Creating and Managing Integrations" and "Integration Security Controls" articles lives here:

    Requested ──> Approved ──> Active <──> Suspended
        └────────────┴───────────┴────────────┘
                          v
                   Revoked (terminal)

Errors are services.kit.errors classes carrying fields (`integration_id`, `state`, ...).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

from services.kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted

# --- vendors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vendor:
    id: str
    name: str
    category: str


VENDORS: tuple[Vendor, ...] = (
    Vendor("sap", "SAP", "ERP, procurement"),
    Vendor("salesforce", "Salesforce", "CRM sync"),
    Vendor("quickbooks_online", "QuickBooks Online", "Accounting"),
    Vendor("xero", "Xero", "Accounting"),
    Vendor("shopify", "Shopify", "Ecommerce"),
    Vendor("hubspot", "HubSpot", "Marketing"),
    Vendor("netsuite", "NetSuite", "ERP"),
    Vendor("sage", "Sage", "Accounting"),
    Vendor("zapier", "Zapier", "Workflow automation"),
    Vendor("microsoft_dynamics_365", "Microsoft Dynamics 365", "ERP"),
    Vendor("power_automate", "Power Automate", "Workflow automation"),
    Vendor("custom", "Custom", "Any other system"),
)
_VENDORS_BY_ID = {v.id: v for v in VENDORS}


def vendor(vendor_id: str) -> Vendor:
    """The vendor with this id; InvalidArgument naming the known ids otherwise."""
    found = _VENDORS_BY_ID.get(vendor_id)
    if found is None:
        raise InvalidArgument(
            f"unknown vendor {vendor_id!r}; vendors are: {', '.join(_VENDORS_BY_ID)}", vendor_id=vendor_id
        )
    return found


# --- scopes ------------------------------------------------------------------------------------

ACTION_ORDER = ("read", "write", "submit", "execute", "manage")
# Sensitivities that make a granted scope worth flagging in reviews (PII and Financial data).
FLAGGED_SENSITIVITIES = frozenset({"PII", "Financial", "Regulatory"})


@dataclass(frozen=True)
class ScopeCategory:
    """One row of the spec's scope table: the actions it allows and what it grants."""

    id: str
    name: str
    actions: tuple[str, ...]
    grants: str
    sensitivity: str = "Operational"

    @property
    def read_only(self) -> bool:
        return self.actions == ("read",)

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(f"{self.id}:{action}" for action in self.actions)


SCOPE_CATEGORIES: tuple[ScopeCategory, ...] = (
    ScopeCategory("inventory", "Inventory", ("read", "write"), "Lots, batches, plants, rooms, locations"),
    ScopeCategory("consumables", "Consumables", ("read", "write"), "Consumable lots and classes"),
    ScopeCategory("orders", "Orders", ("read", "write"), "Orders, order items, shipments, manifests"),
    ScopeCategory("skus", "SKUs", ("read", "write"), "SKU definitions and price tables"),
    ScopeCategory(
        "equipment", "Equipment", ("read", "write"),
        "Equipment records: sensors, controllers, actuators, monitors. Supports external IDs.",
    ),
    ScopeCategory(
        "sensors", "Sensors", ("write",), "Batch-ingest sensor readings, up to 500 per request with partial success"
    ),
    ScopeCategory("taxonomies", "Taxonomies", ("read",), "Varieties, categories, equipment types (read-only)"),
    ScopeCategory("compliance", "Compliance", ("read", "submit"), "CAPAs, deviations, recalls", "Regulatory"),
    ScopeCategory("reports", "Reports", ("read", "execute"), "Generate and download reports"),
    ScopeCategory("quality", "Quality", ("read",), "SOPs, colour grades, quality data (read-only)"),
    ScopeCategory("finance", "Finance", ("read",), "Transactions, invoices, taxes (read-only)", "Financial"),
    ScopeCategory("crm", "CRM", ("read", "write"), "Accounts and contacts (contains PII)", "PII"),
    ScopeCategory("tasks", "Tasks", ("read", "write"), "Tasks, comments, assignments"),
    ScopeCategory("activities", "Activities", ("read",), "Activity log entries (read-only)"),
    ScopeCategory("webhooks", "Webhooks", ("manage",), "Manage webhook subscriptions", "Administrative"),
)
_CATEGORIES_BY_ID = {c.id: c for c in SCOPE_CATEGORIES}
ALL_SCOPES: frozenset[str] = frozenset(s for c in SCOPE_CATEGORIES for s in c.scopes)


def _scope_problem(scope: str) -> str | None:
    category_id, sep, action = scope.partition(":")
    if not sep or not category_id or not action:
        return f"scope {scope!r} must be '<category>:<action>', e.g. inventory:read"
    category = _CATEGORIES_BY_ID.get(category_id)
    if category is None:
        return f"unknown scope category {category_id!r} in {scope!r}; categories are: {', '.join(_CATEGORIES_BY_ID)}"
    if action not in category.actions:
        return f"{category.id} allows only: {', '.join(category.scopes)}"
    return None


def normalise_scopes(scopes: Iterable[str]) -> list[str]:
    """Lower-cased, de-duplicated, sorted scopes; InvalidArgument naming each refused one."""
    cleaned = sorted({s.strip().lower() for s in scopes})
    problems = [p for p in (_scope_problem(s) for s in cleaned) if p]
    if problems:
        refused = [s for s in cleaned if _scope_problem(s)]
        raise InvalidArgument("; ".join(problems), invalid_scopes=",".join(refused))
    return cleaned


def sensitive_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes among `scopes` whose category holds PII, Financial or Regulatory data."""
    return sorted(
        s for s in scopes
        if (c := _CATEGORIES_BY_ID.get(s.partition(":")[0])) is not None and c.sensitivity in FLAGGED_SENSITIVITIES
    )


# --- settings of one integration -----------------------------------------------------------------

DEFAULT_RATE_LIMIT = 60
MIN_RATE_LIMIT, MAX_RATE_LIMIT = 1, 10_000
MAX_ALLOWLIST_ENTRIES = 50
MAX_NAME_LENGTH = 200
MAX_OWNER_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 4000


def validate_rate_limit(value: int) -> int:
    """A rate limit someone gave: 1 to 10,000 requests per minute (0 is refused, not the default)."""
    if not MIN_RATE_LIMIT <= value <= MAX_RATE_LIMIT:
        raise InvalidArgument(
            f"rate limit must be between {MIN_RATE_LIMIT} and {MAX_RATE_LIMIT:,} requests per minute, got {value}",
            rate_limit_per_minute=value,
        )
    return value


def validate_daily_quota(value: int) -> int:
    if value < 0:
        raise InvalidArgument(f"daily quota must be 0 (no quota) or more, got {value}", daily_quota=value)
    return value


class _HostBits(ValueError):
    """A CIDR entry whose address has bits set past its prefix: `network` is what it would mean."""

    def __init__(self, network: str) -> None:
        super().__init__(network)
        self.network = network


def _network(entry: str) -> str | None:
    """The normalised CIDR of one allowlist entry, or None when it is not a network; _HostBits
    when it has host bits set (10.0.0.1/8): silently widening it to 10.0.0.0/8 would allow
    16 million addresses its author may have meant as one."""
    text = entry.strip()
    if not text or "%" in text:  # IPv6 zone ids name a local interface, never a partner's address
        return None
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        pass
    try:
        widened = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    raise _HostBits(str(widened))


def _parsed(entry: str) -> tuple[str | None, str | None]:
    """(network, the network it would have meant when it has host bits set)."""
    try:
        return _network(entry), None
    except _HostBits as exc:
        return None, exc.network


def normalise_allowlist(entries: Iterable[str]) -> list[str]:
    """CIDR entries (IPv4 or IPv6; a bare address becomes /32 or /128), duplicates removed.
    InvalidArgument names every entry that is not a network, and for one with host bits set
    the network it would have meant."""
    entries = list(entries)
    parsed = [(entry, *_parsed(entry)) for entry in entries]
    host_bits = [(entry.strip(), meant) for entry, _, meant in parsed if meant is not None]
    if host_bits:
        described = "; ".join(
            f"{entry} has host bits set: write {meant} for the network, or "
            f"{entry.split('/', 1)[0]}/{32 if ':' not in entry else 128} for the one address"
            for entry, meant in host_bits
        )
        raise InvalidArgument(
            f"IP allowlist entries must be networks with no host bits set; {described}",
            invalid_entries=",".join(entry for entry, _ in host_bits),
            meant=",".join(meant for _, meant in host_bits),
        )
    bad = [entry for entry, network, _ in parsed if network is None]
    if bad:
        raise InvalidArgument(
            f"IP allowlist entries must be CIDR blocks such as 10.0.0.1/32 or 2001:db8::/48; "
            f"refused: {', '.join(repr(e) for e in bad)}",
            invalid_entries=",".join(bad),
        )
    networks = list(dict.fromkeys(network for _, network, _ in parsed if network))  # order kept, duplicates dropped
    if len(networks) > MAX_ALLOWLIST_ENTRIES:
        raise InvalidArgument(
            f"an IP allowlist holds at most {MAX_ALLOWLIST_ENTRIES} entries, got {len(networks)}",
            entries=len(networks),
        )
    return networks


def _required_text(value: str, what: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument(f"{what} is required", field=what)
    if len(text) > limit:
        raise InvalidArgument(f"{what} must be at most {limit} characters, got {len(text)}", field=what)
    return text


def validate_name(value: str) -> str:
    return _required_text(value, "name", MAX_NAME_LENGTH)


def validate_owner(value: str) -> str:
    return _required_text(value, "owner", MAX_OWNER_LENGTH)


def validate_description(value: str) -> str:
    text = value.strip()
    if len(text) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters", field="description")
    return text


# --- lifecycle -----------------------------------------------------------------------------------


class Status(str, Enum):
    REQUESTED = "requested"
    APPROVED = "approved"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"

    @property
    def is_live(self) -> bool:
        """Counts toward the organisation's limit: Active or Suspended."""
        return self in (Status.ACTIVE, Status.SUSPENDED)


class Action(str, Enum):
    APPROVE = "approve"
    ACTIVATE = "activate"
    UPDATE = "update"
    SUSPEND = "suspend"
    REACTIVATE = "reactivate"
    REVOKE = "revoke"
    REGENERATE_API_KEY = "regenerate the API key of"


_NOT_REVOKED = frozenset({Status.REQUESTED, Status.APPROVED, Status.ACTIVE, Status.SUSPENDED})

# action -> (states it may start from, state it leads to; None keeps the state)
TRANSITIONS: Mapping[Action, tuple[frozenset[Status], Status | None]] = {
    Action.APPROVE: (frozenset({Status.REQUESTED}), Status.APPROVED),
    Action.ACTIVATE: (frozenset({Status.APPROVED}), Status.ACTIVE),
    Action.UPDATE: (_NOT_REVOKED, None),
    Action.SUSPEND: (frozenset({Status.ACTIVE}), Status.SUSPENDED),
    Action.REACTIVATE: (frozenset({Status.SUSPENDED}), Status.ACTIVE),
    Action.REVOKE: (_NOT_REVOKED, Status.REVOKED),
    Action.REGENERATE_API_KEY: (frozenset({Status.ACTIVE}), None),
}


def next_status(integration_id: str, current: Status, action: Action) -> Status:
    """The state `action` leads to from `current`; FailedPrecondition naming `current` if illegal."""
    sources, target = TRANSITIONS[action]
    if current not in sources:
        if current is Status.REVOKED:
            why = "revoked is terminal; create a new integration instead"
        else:
            allowed = " or ".join(s.value for s in Status if s in sources)
            why = f"only {allowed} integrations allow this"
        raise FailedPrecondition(
            f"cannot {action.value} integration {integration_id}: it is {current.value}; {why}",
            integration_id=integration_id,
            state=current.value,
        )
    return target or current


def ensure_room_for_activation(live_count: int, limit: int) -> None:
    """ResourceExhausted when the organisation already has `limit` Active or Suspended integrations."""
    if live_count >= limit:
        raise ResourceExhausted(
            f"your organisation already has {live_count} live integrations (the limit is {limit}); "
            "to free a place, revoke an integration you no longer need; "
            "suspended integrations count toward the limit",
            live=live_count,
            limit=limit,
        )


# Fields an update may change, as `UpdateIntegrationRequest.update_mask` names them.
UPDATABLE_FIELDS = ("name", "description", "owner", "scopes", "rate_limit_per_minute", "daily_quota", "ip_allowlist")

# Each takes the value as the request gave it and returns it checked and normalised.
_VALIDATORS: dict[str, Callable[[Any], object]] = {
    "name": validate_name,
    "description": validate_description,
    "owner": validate_owner,
    "scopes": normalise_scopes,
    "rate_limit_per_minute": validate_rate_limit,
    "daily_quota": validate_daily_quota,
    "ip_allowlist": normalise_allowlist,
}


@dataclass
class Integration:
    """One custom API integration of one organisation. Holds no secret: only the key prefix."""

    id: str
    org_id: str
    vendor_id: str
    name: str
    owner: str
    requested_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    description: str = ""
    status: Status = Status.REQUESTED
    scopes: list[str] = field(default_factory=list)
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT
    daily_quota: int = 0
    ip_allowlist: list[str] = field(default_factory=list)
    approved_by: str = ""
    suspended_by: str = ""
    suspension_reason: str = ""
    api_key_prefix: str = ""
    client_id: str = ""
    activated_at: dt.datetime | None = None
    credentials_issued_at: dt.datetime | None = None
    version: int = 1

    @classmethod
    def request(
        cls,
        *,
        id: str,
        org_id: str,
        vendor_id: str,
        name: str,
        owner: str,
        requested_by: str,
        now: dt.datetime,
        description: str = "",
        scopes: Iterable[str] = (),
        rate_limit_per_minute: int | None = None,
        daily_quota: int = 0,
        ip_allowlist: Iterable[str] = (),
    ) -> "Integration":
        """A new integration in Requested state; every setting validated. A rate limit left out
        (None) is the default; one given, 0 included, must be within bounds."""
        return cls(
            id=id,
            org_id=org_id,
            vendor_id=vendor(vendor_id).id,
            name=validate_name(name),
            owner=validate_owner(owner),
            requested_by=requested_by,
            created_at=now,
            updated_at=now,
            description=validate_description(description),
            scopes=normalise_scopes(scopes),
            rate_limit_per_minute=(
                DEFAULT_RATE_LIMIT if rate_limit_per_minute is None else validate_rate_limit(rate_limit_per_minute)
            ),
            daily_quota=validate_daily_quota(daily_quota),
            ip_allowlist=normalise_allowlist(ip_allowlist),
        )

    @property
    def sensitive_scopes(self) -> list[str]:
        return sensitive_scopes(self.scopes)

    @property
    def has_credentials(self) -> bool:
        """Whether identity ever issued credentials for it (they may since have been revoked)."""
        return bool(self.client_id or self.api_key_prefix)

    def check(self, action: Action) -> Status:
        """The state `action` would lead to; FailedPrecondition if it is illegal now."""
        return next_status(self.id, self.status, action)

    def _moved(self, status: Status, now: dt.datetime) -> None:
        self.status = status
        self.updated_at = now
        self.version += 1

    def approve(self, approver: str, now: dt.datetime) -> None:
        """Requested -> Approved, by someone other than the requester."""
        target = self.check(Action.APPROVE)
        if approver == self.requested_by:
            raise PermissionDenied(
                "you requested this integration, so you cannot approve it: a different administrator "
                "must approve it (separation of duties)",
                integration_id=self.id,
            )
        self.approved_by = approver
        self._moved(target, now)

    def activate(self, *, api_key_prefix: str, client_id: str, now: dt.datetime) -> None:
        """Approved -> Active with the credentials identity just issued."""
        target = self.check(Action.ACTIVATE)
        self._credentials_issued(api_key_prefix, client_id, now)
        self.activated_at = now
        self._moved(target, now)

    def check_reactivation(self, actor: str) -> Status:
        """FailedPrecondition unless Suspended; PermissionDenied for the one who suspended it."""
        target = self.check(Action.REACTIVATE)
        if actor == self.suspended_by:
            raise PermissionDenied(
                "you suspended this integration, so you cannot reactivate it: a different administrator "
                "must reactivate it (separation of duties)",
                integration_id=self.id,
            )
        return target

    def reactivate(self, actor: str, *, api_key_prefix: str, client_id: str, now: dt.datetime) -> None:
        """Suspended -> Active with new credentials, by someone other than the suspender."""
        target = self.check_reactivation(actor)
        self._credentials_issued(api_key_prefix, client_id, now)
        self.suspended_by = ""
        self.suspension_reason = ""
        self._moved(target, now)

    def suspend(self, actor: str, reason: str, now: dt.datetime) -> None:
        """Active -> Suspended; the reason is required for the audit trail."""
        target = self.check(Action.SUSPEND)
        if not reason.strip():
            raise InvalidArgument("a reason is required to suspend an integration (it goes in the audit trail)")
        self.suspended_by = actor
        self.suspension_reason = reason.strip()
        self._moved(target, now)

    def revoke(self, now: dt.datetime) -> None:
        """Any state but Revoked -> Revoked, for good."""
        self._moved(self.check(Action.REVOKE), now)

    def api_key_regenerated(self, api_key_prefix: str, now: dt.datetime) -> None:
        """Records the prefix of the key that replaced the old one (Active only)."""
        self.check(Action.REGENERATE_API_KEY)
        self.api_key_prefix = api_key_prefix
        self.updated_at = now
        self.version += 1

    def update(self, changes: Mapping[str, Any], now: dt.datetime) -> None:
        """Apply validated changes to the named fields; every state but Revoked allows it."""
        self.check(Action.UPDATE)
        if not changes:
            raise InvalidArgument(f"name at least one field to update: {', '.join(UPDATABLE_FIELDS)}")
        unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"cannot update {', '.join(unknown)}; updatable fields are: {', '.join(UPDATABLE_FIELDS)}",
                fields=",".join(unknown),
            )
        validated = {name: _VALIDATORS[name](value) for name, value in changes.items()}
        for name, value in validated.items():
            setattr(self, name, value)
        self.updated_at = now
        self.version += 1

    def _credentials_issued(self, api_key_prefix: str, client_id: str, now: dt.datetime) -> None:
        self.api_key_prefix = api_key_prefix
        self.client_id = client_id
        self.credentials_issued_at = now

    def copy(self) -> "Integration":
        return replace(self, scopes=list(self.scopes), ip_allowlist=list(self.ip_allowlist))

    def snapshot(self) -> dict[str, Any]:
        """Every field as JSON-ready values: what audit before/after records (no secret is held here)."""
        data = asdict(self)
        data["status"] = self.status.value
        for name in ("created_at", "updated_at", "activated_at", "credentials_issued_at"):
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        return data


def snapshot_json(integration: Integration | None) -> str:
    """The integration's fields as sorted JSON; "" when there is no such state (before creation)."""
    return json.dumps(integration.snapshot(), sort_keys=True) if integration is not None else ""


# --- the record of a change ----------------------------------------------------------------------

# What a change can be; each is the `kind` of an IntegrationChanged and a history entry's action.
CHANGE_KINDS = ("created", "approved", "activated", "updated", "suspended", "reactivated", "revoked",
                "api_key_regenerated")


@dataclass(frozen=True)
class HistoryEntry:
    """One change of one integration, as the lifecycle history records it."""

    id: str
    org_id: str
    integration_id: str
    action: str
    actor_id: str
    from_status: Status | None
    to_status: Status
    reason: str
    before_json: str
    after_json: str
    at: dt.datetime


@dataclass(frozen=True)
class IntegrationChanged:
    """An integration changed: who did it, what it was before (None when it was just created)
    and after, and why. The history records it; the services that follow integrations and the
    audit trail are told of it."""

    kind: str
    before: Integration | None
    after: Integration
    actor_id: str
    reason: str = ""
    request_id: str = ""

    def history_entry(self, entry_id: str) -> HistoryEntry:
        before, after = self.before, self.after
        return HistoryEntry(
            id=entry_id, org_id=after.org_id, integration_id=after.id, action=self.kind, actor_id=self.actor_id,
            from_status=before.status if before else None, to_status=after.status, reason=self.reason,
            before_json=snapshot_json(before), after_json=snapshot_json(after), at=after.updated_at,
        )
