"""The quarterly access review (the spec's "Quarterly Review Checklist") as plain rules.

For each integration: what it was granted against what the request log shows it used, what
the audit trail shows changed in the window (owner changes, who had credentials issued), and
the flags an auditor asks about. Pure functions over facts, usage and audit entries; no I/O.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.logs.domain.model import AuditEntry

WINDOW_DAYS = 90
UNUSED_DAYS = 30
CREDENTIAL_MAX_AGE_DAYS = 90
# A rate limit is "far above use" when the busiest minute used less than this share of it.
RATE_LIMIT_USE_FLOOR = 0.10
MAX_NETWORKS = 64

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The non-read action of categories whose writes are named otherwise (the edge's per-route overrides).
WRITE_ACTION = {"reports": "execute", "compliance": "submit", "webhooks": "manage"}
PII_CATEGORIES = frozenset({"crm"})
FINANCIAL_CATEGORIES = frozenset({"finance"})
# Error codes of requests refused before they reached a route: they exercised no scope.
REFUSED_CODES = frozenset({
    "missing_credentials", "invalid_api_key", "invalid_token", "token_expired", "credentials_mismatch",
    "integration_inactive", "ip_not_allowed", "insufficient_scope", "rate_limit_exceeded", "quota_exceeded",
})

FLAG_UNUSED = "unused_30_days"
FLAG_SCOPES_NEVER_USED = "granted_scopes_never_used"
FLAG_PII = "pii_scope_granted"
FLAG_FINANCIAL = "financial_scope_granted"
FLAG_RATE_LIMIT = "rate_limit_far_above_use"
FLAG_OLD_CREDENTIALS = "credentials_older_than_90_days"
FLAG_ONE_NETWORK = "no_allowlist_single_network"
FLAG_OWNER_CHANGED = "owner_changed_in_window"
FLAGS = (FLAG_UNUSED, FLAG_SCOPES_NEVER_USED, FLAG_PII, FLAG_FINANCIAL, FLAG_RATE_LIMIT, FLAG_OLD_CREDENTIALS,
         FLAG_ONE_NETWORK, FLAG_OWNER_CHANGED)

# The audit actions the review reads (the registry's and the identity service's), and how many
# of each it reads from the window at most (newest first).
UPDATED_ACTION = "integration.updated"
CREDENTIALS_ISSUED_ACTION = "credentials.issued"
REVIEW_AUDIT_ENTRIES = 10_000


@dataclass(frozen=True)
class IntegrationFacts:
    """The latest state of one integration, from the registry's `IntegrationChanged` events."""

    integration_id: str
    org_id: str
    name: str
    owner: str
    vendor_id: str
    status: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int
    daily_quota: int
    ip_allowlist: tuple[str, ...]
    credentials_issued_at: dt.datetime | None
    version: int
    updated_at: dt.datetime


@dataclass(frozen=True)
class Usage:
    """What the request log shows one integration did in the review window."""

    requests: int = 0
    errors: int = 0
    last_request_at: dt.datetime | None = None   # ever, not only in the window
    peak_per_minute: int = 0
    exercised: frozenset[str] = frozenset()
    ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class OwnerChange:
    """An `integration.updated` entry that gave the integration another owner."""

    occurred_at: dt.datetime
    actor_id: str
    before: str
    after: str


@dataclass(frozen=True)
class CredentialIssue:
    """A `credentials.issued` entry: who had the integration's credentials shown to them, when."""

    occurred_at: dt.datetime
    actor_id: str


@dataclass(frozen=True)
class Trail:
    """What the audit trail shows of one integration in the review window, oldest first."""

    owner_changes: tuple[OwnerChange, ...] = ()
    credentials_issued: tuple[CredentialIssue, ...] = ()


def _owner(snapshot: str) -> str | None:
    try:
        data = json.loads(snapshot) if snapshot else None
    except ValueError:
        return None
    owner = data.get("owner") if isinstance(data, dict) else None
    return owner if isinstance(owner, str) else None


def owner_change(entry: AuditEntry) -> OwnerChange | None:
    """The owner change an `integration.updated` entry records, or None (another field changed,
    or a snapshot that names no owner)."""
    if entry.action != UPDATED_ACTION:
        return None
    before, after = _owner(entry.before_json), _owner(entry.after_json)
    if before is None or after is None or before == after:
        return None
    return OwnerChange(entry.occurred_at, entry.actor_id, before, after)


def trails(entries: Iterable[AuditEntry]) -> dict[str, Trail]:
    """Per integration id: its owner changes and credential issues among `entries` (any order)."""
    changes: dict[str, list[OwnerChange]] = {}
    issues: dict[str, list[CredentialIssue]] = {}
    for e in entries:
        if (change := owner_change(e)) is not None:
            changes.setdefault(e.object_id, []).append(change)
        elif e.action == CREDENTIALS_ISSUED_ACTION and e.object_id:
            issues.setdefault(e.object_id, []).append(CredentialIssue(e.occurred_at, e.actor_id))
    return {iid: Trail(tuple(sorted(changes.get(iid, ()), key=lambda c: c.occurred_at)),
                       tuple(sorted(issues.get(iid, ()), key=lambda c: c.occurred_at)))
            for iid in changes.keys() | issues.keys()}


@dataclass(frozen=True)
class Review:
    facts: IntegrationFacts
    usage: Usage
    exercised_scopes: tuple[str, ...]
    unused_scopes: tuple[str, ...]
    error_rate: float
    credential_age_days: int | None
    networks: tuple[str, ...]
    flags: tuple[str, ...] = field(default=())
    trail: Trail = field(default_factory=Trail)


def exercised_scope(category: str, method: str) -> str:
    """The scope a request used: `<category>:read` for reads, else the category's write action."""
    if method.upper() in READ_METHODS:
        return f"{category}:read"
    return f"{category}:{WRITE_ACTION.get(category, 'write')}"


def exercised(category: str, method: str, status: int, error_code: str) -> bool:
    """Whether a request got past authorisation, so its scope was really used."""
    return bool(category) and status not in (401, 403) and error_code not in REFUSED_CODES


def network_of(ip: str) -> str | None:
    """The /24 of an IPv4 address or the /64 of an IPv6 one; None for what is not an address."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def networks_of(ips: tuple[str, ...]) -> tuple[str, ...]:
    found = sorted({n for ip in ips if (n := network_of(ip)) is not None})
    return tuple(found[:MAX_NETWORKS])


def review(facts: IntegrationFacts, usage: Usage, *, now: dt.datetime, trail: Trail | None = None) -> Review:
    """One integration's line of the review, with its flags."""
    granted = tuple(sorted(facts.scopes))
    used = tuple(sorted(usage.exercised))
    unused = tuple(s for s in granted if s not in usage.exercised)
    age = (now - facts.credentials_issued_at).days if facts.credentials_issued_at else None
    networks = networks_of(usage.ips)
    error_rate = usage.errors / usage.requests if usage.requests else 0.0
    categories = {s.partition(":")[0] for s in granted}
    live = facts.status == "active"
    # A fresh integration has not had the chance to be unused for 30 days. Its scopes are
    # flagged all the same: a scope it has not used is one the review lists as unused.
    settled = age is None or age >= UNUSED_DAYS

    flags: list[str] = []
    if live and settled and (usage.last_request_at is None or now - usage.last_request_at > dt.timedelta(days=UNUSED_DAYS)):
        flags.append(FLAG_UNUSED)
    if live and unused:
        flags.append(FLAG_SCOPES_NEVER_USED)
    if facts.status != "revoked" and categories & PII_CATEGORIES:
        flags.append(FLAG_PII)
    if facts.status != "revoked" and categories & FINANCIAL_CATEGORIES:
        flags.append(FLAG_FINANCIAL)
    if live and usage.requests and usage.peak_per_minute < RATE_LIMIT_USE_FLOOR * facts.rate_limit_per_minute:
        flags.append(FLAG_RATE_LIMIT)
    if facts.status != "revoked" and age is not None and age > CREDENTIAL_MAX_AGE_DAYS:
        flags.append(FLAG_OLD_CREDENTIALS)
    if facts.status != "revoked" and not facts.ip_allowlist and usage.requests and len(networks) == 1:
        flags.append(FLAG_ONE_NETWORK)
    trail = trail or Trail()
    if trail.owner_changes:
        flags.append(FLAG_OWNER_CHANGED)
    return Review(facts, usage, used, unused, error_rate, age, networks, tuple(flags), trail)
