"""The logs service's use cases: ingest what the consumers bring, and answer readers.

Readers need the QA or administrator permission and see only their own organisation: another
organisation's request id is NotFound, exactly like one that never existed. The platform log
(requests no organisation can be attributed) is read with `platform=True`, by platform
operators only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit.auth import Actor
from services.kit.db import utcnow
from services.kit.errors import InvalidArgument, NotFound
from services.logs.domain.model import (
    PLATFORM_LOG,
    ApiRequest,
    AuditEntry,
    AuditRecord,
    ChainHead,
    ChainWalker,
    Checkpoint,
    Cursor,
    Finding,
    RequestFilter,
    SeqCursor,
    append,
    check_text,
    empty_head,
    log_of,
    page_size,
    require_reader,
)
from services.logs.domain.review import WINDOW_DAYS, IntegrationFacts, Review, Usage, review
from services.logs.adapters.store import AuditQuery, LogsRepository, RequestPage

log = logging.getLogger(__name__)

RETENTION_BATCH = 5_000
EXPORT_PAGE = 1_000
# The platform log's bound in rows, whatever its age (settings.logs_platform_max_rows).
PLATFORM_MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class Verification:
    """What walking a chain showed: the first problem (None when intact) and the head walked."""

    finding: Finding | None
    verified: int
    head: Checkpoint


@dataclass(frozen=True)
class ReviewReport:
    org_id: str
    generated_at: dt.datetime
    window_start: dt.datetime
    window_days: int
    reviews: list[Review]


class LogsHandlers:
    """Ingest (called by the consumers) and queries (called by the gRPC servicer)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], repo: LogsRepository, audit_key: bytes, *,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._sessions = sessions
        self._repo = repo
        self._key = audit_key
        self._clock = clock

    # --- ingest -----------------------------------------------------------------------------

    async def record_requests(self, records: Sequence[ApiRequest]) -> None:
        """Store a batch of request records in one transaction; duplicates are skipped."""
        async with self._sessions() as session, session.begin():
            await self._repo.add_requests(session, records)

    async def record_audit(self, records: Sequence[AuditRecord]) -> int:
        """Append each new record to its organisation's chain, in the order given; returns how
        many were new. One transaction: the batch lands whole or not at all."""
        now = self._clock()
        orgs = sorted({r.org_id for r in records})  # one lock order, so two replicas cannot deadlock
        async with self._sessions() as session, session.begin():
            heads = {org: await self._repo.lock_chain(session, org, empty_head(self._key, org), now) for org in orgs}
            seen = await self._repo.stored_event_ids(session, [r.event_id for r in records])
            entries: list[AuditEntry] = []
            for record in records:
                if record.event_id in seen:
                    continue
                seen.add(record.event_id)
                entry, heads[record.org_id] = append(self._key, heads[record.org_id], record, now)
                entries.append(entry)
            await self._repo.add_audit_entries(session, entries)
            for org in {e.org_id for e in entries}:
                await self._repo.save_chain(session, heads[org], now)
        return len(entries)

    async def apply_integrations(self, facts: Sequence[IntegrationFacts]) -> None:
        async with self._sessions() as session, session.begin():
            for f in facts:
                await self._repo.upsert_integration(session, f)

    async def enforce_retention(self, days: int, *, platform_max_rows: int = PLATFORM_MAX_ROWS,
                                batch: int = RETENTION_BATCH) -> int:
        """Delete requests older than `days`, and the platform log's oldest beyond its newest
        `platform_max_rows`, `batch` rows per transaction, so ingest never waits long for the
        writer; returns how many went."""
        cutoff = self._clock() - dt.timedelta(days=days)
        async with self._sessions() as session:
            orgs = await self._repo.request_orgs(session)
        total = 0
        for org in orgs:
            total += await self._in_batches(
                lambda session, org=org: self._repo.delete_requests_before(session, org, cutoff, limit=batch), batch)
        async with self._sessions() as session:
            last = await self._repo.oldest_kept(session, PLATFORM_LOG, platform_max_rows)
        if last is not None:
            total += await self._in_batches(
                lambda session: self._repo.delete_requests_through(session, PLATFORM_LOG, last, limit=batch), batch)
        return total

    async def _in_batches(self, delete: Callable[[AsyncSession], Awaitable[int]], batch: int) -> int:
        total = 0
        while True:
            async with self._sessions() as session, session.begin():
                deleted = await delete(session)
            total += deleted
            await asyncio.sleep(0)  # let ingest in between batches
            if deleted < batch:
                return total

    # --- the request log --------------------------------------------------------------------

    async def query_requests(self, actor: Actor, f: RequestFilter, *, size: int = 0, token: str = "",
                             platform: bool = False) -> RequestPage:
        org = log_of(actor.org_id, actor.permissions, platform=platform)
        after = Cursor.decode(token) if token else None
        async with self._sessions() as session:
            return await self._repo.query_requests(session, org, f, size=page_size(size), after=after)

    async def get_request(self, actor: Actor, request_id: str, *, platform: bool = False) -> ApiRequest:
        org = log_of(actor.org_id, actor.permissions, platform=platform)
        if not request_id:
            raise InvalidArgument("request_id is required", field="request_id")
        check_text(request_id, "request_id")
        async with self._sessions() as session:
            found = await self._repo.get_request(session, org, request_id)
        if found is None:
            raise NotFound(f"no request {request_id}", request_id=request_id)
        return found

    async def export_requests(self, actor: Actor, f: RequestFilter, *,
                              platform: bool = False) -> tuple[int, AsyncIterator[list[ApiRequest]]]:
        """How many rows match now, and the matching rows newest first, a page at a time."""
        org = log_of(actor.org_id, actor.permissions, platform=platform)
        async with self._sessions() as session:
            total = await self._repo.count_requests(session, org, f)

        async def pages() -> AsyncIterator[list[ApiRequest]]:
            after: Cursor | None = None
            while True:
                async with self._sessions() as session:
                    page = await self._repo.query_requests(session, org, f, size=EXPORT_PAGE, after=after)
                if page.records:
                    yield page.records
                if page.next_cursor is None:
                    return
                after = page.next_cursor

        return total, pages()

    # --- the audit trail --------------------------------------------------------------------

    async def query_audit(self, actor: Actor, q: AuditQuery, *, size: int = 0, token: str = "") -> tuple[list[AuditEntry], str]:
        require_reader(actor.permissions)
        if q.since and q.until and q.since >= q.until:
            raise InvalidArgument("since must be before until", field="since")
        for name in ("object_type", "object_id", "actor_id", "action"):
            check_text(getattr(q, name), name)
        before = SeqCursor.decode(token).seq if token else None
        n = page_size(size)
        async with self._sessions() as session:
            entries = await self._repo.query_audit(session, actor.org_id, q, size=n + 1, before_seq=before)
        more = len(entries) > n
        entries = entries[:n]
        return entries, SeqCursor(entries[-1].seq).encode() if more and entries else ""

    async def checkpoint(self, actor: Actor) -> Checkpoint:
        """The organisation's chain head now, signed, to keep outside the database."""
        require_reader(actor.permissions)
        async with self._sessions() as session:
            head = await self._repo.chain_head(session, actor.org_id) or empty_head(self._key, actor.org_id)
        return self._signed(head)

    async def verify_audit(self, actor: Actor, checkpoint: Checkpoint | None = None) -> Verification:
        """Walk the organisation's chain from its first entry; name the first problem found."""
        require_reader(actor.permissions)
        if checkpoint is not None:
            checkpoint.verify_signature(self._key)
            if checkpoint.org_id != actor.org_id:
                raise InvalidArgument("the checkpoint belongs to another organisation", field="checkpoint")
        walker = ChainWalker(self._key, actor.org_id, checkpoint)
        async with self._sessions() as session:
            await self._repo.snapshot(session)
            head = await self._repo.chain_head(session, actor.org_id)
            async for entry in self._repo.walk_chain(session, actor.org_id):
                if not walker.push(entry):
                    break
        finding = walker.finish(head)
        walked = ChainHead(actor.org_id, walker.verified, walker.last_seq, walker.last_mac)
        return Verification(finding, walker.verified, self._signed(walked))

    def _signed(self, head: ChainHead) -> Checkpoint:
        return Checkpoint(head.org_id, head.count, head.last_seq, head.head_mac, self._clock()).signed(self._key)

    # --- the quarterly review ---------------------------------------------------------------

    async def quarterly_review(self, actor: Actor, window_days: int = 0) -> ReviewReport:
        require_reader(actor.permissions)
        days = window_days or WINDOW_DAYS
        if not 1 <= days <= 366:
            raise InvalidArgument("window_days must be between 1 and 366", field="window_days")
        now = self._clock()
        since = now - dt.timedelta(days=days)
        async with self._sessions() as session:
            facts = await self._repo.integration_facts(session, actor.org_id)
            usage = await self._repo.usage(session, actor.org_id, since)
            known = {f.integration_id for f in facts}
            # Requests of an integration whose facts never arrived still belong in the review.
            facts += [_unknown(iid, actor.org_id, now) for iid in sorted(usage) if iid and iid not in known]
            reviews = []
            for f in facts:
                used = usage.get(f.integration_id, Usage())
                last = await self._repo.last_request_at(session, actor.org_id, f.integration_id)
                reviews.append(review(f, Usage(used.requests, used.errors, last, used.peak_per_minute, used.exercised,
                                               used.ips), now=now))
        return ReviewReport(actor.org_id, now, since, days, reviews)


def _unknown(integration_id: str, org_id: str, now: dt.datetime) -> IntegrationFacts:
    return IntegrationFacts(integration_id, org_id, name="", owner="", vendor_id="", status="unknown", scopes=(),
                            rate_limit_per_minute=0, daily_quota=0, ip_allowlist=(), credentials_issued_at=None,
                            version=0, updated_at=now)
