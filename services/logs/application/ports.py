"""What the logs service's use cases need from the world, as protocols: storage behind a unit
of work (services.kit.uow) with three repositories on it, the request log, the audit trail and
the integration facts. Ingest writes through it and commits; the query side (the request log's
search and export, the audit chain's walk, the review) reads through units that never commit.
adapters/store.py implements them over SQL; handler tests pass in-memory ones
(tests/unit/logs/memory.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.kit.uow import UnitOfWork
from services.logs.application.commands import QueryAudit
from services.logs.domain.model import (
    ApiRequest,
    AuditEntry,
    ChainHead,
    Cursor,
    HistogramCell,
    RequestFilter,
)
from services.logs.domain.review import IntegrationFacts, Usage


@dataclass(frozen=True)
class RequestPage:
    """One page of the request log, newest first, and where the next starts (None on the last).
    A page may hold fewer records than asked and still have a next cursor: its bounded search
    ran out before the page filled."""

    records: list[ApiRequest]
    next_cursor: Cursor | None


class RequestLog(Protocol):
    """The API request log, one organisation's (or the platform log, org "") at a time."""

    async def add_requests(self, records: Sequence[ApiRequest]) -> None:
        """Store a batch; a record already stored (same org, request id and time) is skipped."""
        ...

    async def query_requests(self, org_id: str, f: RequestFilter, *, size: int,
                             after: Cursor | None = None) -> RequestPage: ...

    async def count_requests(self, org_id: str, f: RequestFilter) -> int: ...

    async def request_span(self, org_id: str, f: RequestFilter) -> tuple[dt.datetime, dt.datetime] | None:
        """The oldest and the newest matching request's time; None when none matches."""
        ...

    async def histogram(self, org_id: str, f: RequestFilter, step: int) -> list[HistogramCell]:
        """Per bucket of `step` seconds (aligned on the epoch) and integration: the matching
        requests, errors (>= 400) and 429s, counted by the store (a row standing for `repeats`
        requests counts as that many)."""
        ...

    async def get_request(self, org_id: str, request_id: str) -> ApiRequest | None:
        """The latest record with this request id in the organisation's log, or None."""
        ...

    async def request_orgs(self) -> list[str]:
        """The organisations with stored requests."""
        ...

    async def delete_requests_before(self, org_id: str, cutoff: dt.datetime, *, limit: int) -> int:
        """Delete at most `limit` of the organisation's requests older than `cutoff`; how many went."""
        ...

    async def oldest_kept(self, org_id: str, keep: int) -> Cursor | None:
        """The newest row beyond the organisation's `keep` newest (None when it has no more)."""
        ...

    async def delete_requests_through(self, org_id: str, last: Cursor, *, limit: int) -> int:
        """Delete at most `limit` of the organisation's oldest requests up to and including `last`."""
        ...

    async def usage(self, org_id: str, since: dt.datetime) -> dict[str, Usage]:
        """Per integration: requests, errors, peak per minute, scopes exercised and IPs since `since`."""
        ...

    async def last_request_at(self, org_id: str, integration_id: str) -> dt.datetime | None: ...


class AuditTrail(Protocol):
    """Each organisation's hash-chained audit trail and its head."""

    async def lock_chain(self, org_id: str, genesis: ChainHead, now: dt.datetime) -> ChainHead:
        """The organisation's chain head, locked until the unit ends (created when new)."""
        ...

    async def chain_head(self, org_id: str) -> ChainHead | None: ...

    async def save_chain(self, head: ChainHead, now: dt.datetime) -> None: ...

    async def stored_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these events have an entry already (in any organisation)."""
        ...

    async def add_audit_entries(self, entries: Sequence[AuditEntry]) -> None: ...

    async def query_audit(self, org_id: str, q: QueryAudit, *, size: int,
                          before_seq: int | None = None) -> list[AuditEntry]:
        """Up to `size` entries matching `q`'s filters, newest first, before `before_seq`."""
        ...

    async def snapshot(self) -> None:
        """Make the unit's reads see one snapshot (first thing in the unit), so a walk and the
        head agree even while appends go on."""
        ...

    def walk_chain(self, org_id: str) -> AsyncIterator[AuditEntry]:
        """Every entry of the organisation's chain in position order."""
        ...


class Integrations(Protocol):
    """The latest known facts of each integration, from the registry's events."""

    async def upsert_integration(self, facts: IntegrationFacts) -> None:
        """Store the facts unless a later (or the same) version is stored already."""
        ...

    async def integration_facts(self, org_id: str) -> list[IntegrationFacts]:
        """The organisation's integrations, by name."""
        ...


class LogsUnitOfWork(UnitOfWork, Protocol):
    """One transaction of a logs use case (a read is one that never commits)."""

    @property
    def requests(self) -> RequestLog: ...

    @property
    def audit(self) -> AuditTrail: ...

    @property
    def integrations(self) -> Integrations: ...


UnitsOfWork = Callable[[], LogsUnitOfWork]
