"""The logs service's ports in memory, for handler tests: the request log, the audit trail and
the integration facts on a unit of work over services.kit.uow's MemoryStore. The SQL ones are
tested on SQLite and PostgreSQL (tests/integration/logs/test_store.py, test_audit_chain.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self

from services.kit.uow import InMemoryUnitOfWork, MemoryStore, WriteConflict
from services.logs.application.commands import QueryAudit
from services.logs.application.ports import RequestPage
from services.logs.domain.model import (
    ApiRequest,
    AuditEntry,
    ChainHead,
    Cursor,
    HistogramCell,
    RequestFilter,
    bucket_floor,
)
from services.logs.domain.review import (
    IntegrationFacts,
    Usage,
    exercised,
    exercised_scope,
)


def _matches(r: ApiRequest, f: RequestFilter) -> bool:
    return ((not f.integration_id or r.integration_id == f.integration_id)
            and (f.since is None or r.timestamp >= f.since) and (f.until is None or r.timestamp < f.until)
            and (f.status is None or f.status.low <= r.status <= f.status.high)
            and (not f.endpoint or f.endpoint.lower() in r.endpoint.lower())
            and (not f.ip or r.ip == f.ip) and (not f.error_code or r.error_code == f.error_code))


class MemoryLogs:
    """application.ports' RequestLog, AuditTrail and Integrations over the unit's tables."""

    def __init__(self, requests: dict[Any, ApiRequest], chains: dict[str, ChainHead],
                 entries: dict[tuple[str, int], AuditEntry], facts: dict[str, IntegrationFacts]) -> None:
        self._requests, self._chains, self._entries, self._facts = requests, chains, entries, facts

    # the request log

    def _newest_first(self, org_id: str) -> list[ApiRequest]:
        return sorted((r for r in self._requests.values() if r.org_id == org_id),
                      key=lambda r: (r.timestamp, r.request_id), reverse=True)

    def _named(self, r: ApiRequest) -> ApiRequest:
        facts = self._facts.get(r.integration_id)
        name = facts.name if facts is not None and facts.org_id == r.org_id else ""
        return dataclasses.replace(r, integration_name=name)

    async def add_requests(self, records: Sequence[ApiRequest]) -> None:
        for r in records:
            self._requests.setdefault((r.org_id, r.request_id, r.timestamp), r)

    async def query_requests(self, org_id: str, f: RequestFilter, *, size: int,
                             after: Cursor | None = None) -> RequestPage:
        found = [r for r in self._newest_first(org_id) if _matches(r, f)
                 and (after is None or (r.timestamp, r.request_id) < (after.timestamp, after.request_id))]
        records = [self._named(r) for r in found[:size]]
        more = len(found) > size
        return RequestPage(records, Cursor(records[-1].timestamp, records[-1].request_id) if more else None)

    async def count_requests(self, org_id: str, f: RequestFilter) -> int:
        return sum(1 for r in self._newest_first(org_id) if _matches(r, f))

    async def request_span(self, org_id: str, f: RequestFilter) -> tuple[dt.datetime, dt.datetime] | None:
        times = [r.timestamp for r in self._newest_first(org_id) if _matches(r, f)]
        return (min(times), max(times)) if times else None

    async def histogram(self, org_id: str, f: RequestFilter, step: int) -> list[HistogramCell]:
        counts: dict[tuple[dt.datetime, str], list[int]] = {}
        for r in self._newest_first(org_id):
            if _matches(r, f):
                cell = counts.setdefault((bucket_floor(r.timestamp, step), r.integration_id), [0, 0, 0])
                cell[0] += r.repeats
                cell[1] += r.repeats if r.status >= 400 else 0
                cell[2] += r.repeats if r.status == 429 else 0
        return [HistogramCell(at, iid, n, errors, limited, self._name(org_id, iid))
                for (at, iid), (n, errors, limited) in counts.items()]

    def _name(self, org_id: str, integration_id: str) -> str:
        facts = self._facts.get(integration_id)
        return facts.name if facts is not None and facts.org_id == org_id else ""

    async def get_request(self, org_id: str, request_id: str) -> ApiRequest | None:
        found = [r for r in self._newest_first(org_id) if r.request_id == request_id]
        return self._named(found[0]) if found else None

    async def request_orgs(self) -> list[str]:
        return sorted({r.org_id for r in self._requests.values()})

    async def delete_requests_before(self, org_id: str, cutoff: dt.datetime, *, limit: int) -> int:
        old = [k for k, r in self._requests.items() if r.org_id == org_id and r.timestamp < cutoff][:limit]
        for key in old:
            del self._requests[key]
        return len(old)

    async def oldest_kept(self, org_id: str, keep: int) -> Cursor | None:
        rows = self._newest_first(org_id)
        return Cursor(rows[keep].timestamp, rows[keep].request_id) if len(rows) > keep else None

    async def delete_requests_through(self, org_id: str, last: Cursor, *, limit: int) -> int:
        oldest = [r for r in reversed(self._newest_first(org_id))
                  if (r.timestamp, r.request_id) <= (last.timestamp, last.request_id)][:limit]
        for r in oldest:
            del self._requests[(r.org_id, r.request_id, r.timestamp)]
        return len(oldest)

    async def usage(self, org_id: str, since: dt.datetime) -> dict[str, Usage]:
        found: dict[str, list[ApiRequest]] = {}
        for r in self._newest_first(org_id):
            if r.timestamp >= since:
                found.setdefault(r.integration_id, []).append(r)
        usage = {}
        for iid, rows in found.items():
            minutes: dict[dt.datetime, int] = {}
            for r in rows:
                minute = r.timestamp.replace(second=0, microsecond=0)
                minutes[minute] = minutes.get(minute, 0) + 1
            usage[iid] = Usage(
                requests=len(rows), errors=sum(1 for r in rows if r.status >= 400), peak_per_minute=max(minutes.values()),
                exercised=frozenset(exercised_scope(r.scope_category, r.method) for r in rows
                                    if exercised(r.scope_category, r.method, r.status, r.error_code)),
                ips=tuple(sorted({r.ip for r in rows})),
            )
        return usage

    async def last_request_at(self, org_id: str, integration_id: str) -> dt.datetime | None:
        return max((r.timestamp for r in self._requests.values()
                    if r.org_id == org_id and r.integration_id == integration_id), default=None)

    # the audit trail

    async def lock_chain(self, org_id: str, genesis: ChainHead, now: dt.datetime) -> ChainHead:
        return self._chains.setdefault(org_id, genesis)

    async def chain_head(self, org_id: str) -> ChainHead | None:
        return self._chains.get(org_id)

    async def save_chain(self, head: ChainHead, now: dt.datetime) -> None:
        self._chains[head.org_id] = head

    async def stored_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        return {e.event_id for e in self._entries.values()} & set(event_ids)

    async def add_audit_entries(self, entries: Sequence[AuditEntry]) -> None:
        stored = {e.event_id for e in self._entries.values()}
        for e in entries:
            if e.event_id in stored or (e.org_id, e.seq) in self._entries:
                raise WriteConflict("another request changed the same data at the same time; retry")
            self._entries[(e.org_id, e.seq)] = e
            stored.add(e.event_id)

    async def query_audit(self, org_id: str, q: QueryAudit, *, size: int,
                          before_seq: int | None = None) -> list[AuditEntry]:
        found = [e for (org, _), e in sorted(self._entries.items(), reverse=True) if org == org_id
                 and all(not want or getattr(e, name) == want
                         for name, want in (("object_type", q.object_type), ("object_id", q.object_id),
                                            ("actor_id", q.actor_id), ("action", q.action)))
                 and (q.since is None or e.occurred_at >= q.since) and (q.until is None or e.occurred_at < q.until)
                 and (before_seq is None or e.seq < before_seq)]
        return found[:size]

    async def snapshot(self) -> None:
        """A unit works on its own copy of the tables already."""

    async def walk_chain(self, org_id: str) -> AsyncIterator[AuditEntry]:
        for (org, _), entry in sorted(self._entries.items()):
            if org == org_id:
                yield entry

    # integrations

    async def upsert_integration(self, facts: IntegrationFacts) -> None:
        stored = self._facts.get(facts.integration_id)
        if stored is None or stored.version < facts.version:
            self._facts[facts.integration_id] = facts

    async def integration_facts(self, org_id: str) -> list[IntegrationFacts]:
        return sorted((f for f in self._facts.values() if f.org_id == org_id), key=lambda f: (f.name, f.integration_id))


class MemoryLogsUnitOfWork(InMemoryUnitOfWork):
    """application.ports.LogsUnitOfWork in memory."""

    requests: MemoryLogs
    audit: MemoryLogs
    integrations: MemoryLogs

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.requests = self.audit = self.integrations = MemoryLogs(
            self.table("requests"), self.table("chains"), self.table("entries"), self.table("integrations"))
        return self


def units(store: MemoryStore) -> Callable[[], MemoryLogsUnitOfWork]:
    """What LogsHandlers takes: a new unit over `store` per call."""
    return lambda: MemoryLogsUnitOfWork(store)
