"""The logs service's use cases: ingest what the consumers bring, and answer readers, each in
a unit of work (application/ports.py): ingest commits, a read is a unit that never commits.

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

from services.kit.auth import Actor
from services.kit.clock import utcnow
from services.kit.errors import InvalidArgument, NotFound
from services.logs.application import commands
from services.logs.application.access import log_of, require_reader
from services.logs.application.ports import LogsUnitOfWork, RequestPage, UnitsOfWork
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
    Histogram,
    SeqCursor,
    append,
    bucket_width,
    check_text,
    empty_head,
    fold_histogram,
    page_size,
)
from services.logs.domain.review import (
    CREDENTIALS_ISSUED_ACTION,
    REVIEW_AUDIT_ENTRIES,
    UPDATED_ACTION,
    WINDOW_DAYS,
    IntegrationFacts,
    Review,
    Usage,
    review,
    trails,
)

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

    def __init__(self, units: UnitsOfWork, audit_key: bytes, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._uow = units
        self._key = audit_key
        self._clock = clock

    # --- ingest -----------------------------------------------------------------------------

    async def record_requests(self, records: Sequence[ApiRequest]) -> None:
        """Store a batch of request records in one transaction; duplicates are skipped."""
        async with self._uow() as uow:
            await uow.requests.add_requests(records)
            await uow.commit()

    async def record_audit(self, records: Sequence[AuditRecord]) -> int:
        """Append each new record to its organisation's chain, in the order given; returns how
        many were new. One transaction: the batch lands whole or not at all."""
        now = self._clock()
        orgs = sorted({r.org_id for r in records})  # one lock order, so two replicas cannot deadlock
        async with self._uow() as uow:
            heads = {org: await uow.audit.lock_chain(org, empty_head(self._key, org), now) for org in orgs}
            seen = await uow.audit.stored_event_ids([r.event_id for r in records])
            entries: list[AuditEntry] = []
            for record in records:
                if record.event_id in seen:
                    continue
                seen.add(record.event_id)
                entry, heads[record.org_id] = append(self._key, heads[record.org_id], record, now)
                entries.append(entry)
            await uow.audit.add_audit_entries(entries)
            for org in {e.org_id for e in entries}:
                await uow.audit.save_chain(heads[org], now)
            await uow.commit()
        return len(entries)

    async def apply_integrations(self, facts: Sequence[IntegrationFacts]) -> None:
        async with self._uow() as uow:
            for f in facts:
                await uow.integrations.upsert_integration(f)
            await uow.commit()

    async def enforce_retention(self, days: int, *, platform_max_rows: int = PLATFORM_MAX_ROWS,
                                batch: int = RETENTION_BATCH) -> int:
        """Delete requests older than `days`, and the platform log's oldest beyond its newest
        `platform_max_rows`, `batch` rows per transaction, so ingest never waits long for the
        writer; returns how many went."""
        cutoff = self._clock() - dt.timedelta(days=days)
        async with self._uow() as uow:
            orgs = await uow.requests.request_orgs()
        total = 0
        for org in orgs:
            total += await self._in_batches(self._older_than(org, cutoff, batch), batch)
        async with self._uow() as uow:
            last = await uow.requests.oldest_kept(PLATFORM_LOG, platform_max_rows)
        if last is not None:
            total += await self._in_batches(
                lambda uow: uow.requests.delete_requests_through(PLATFORM_LOG, last, limit=batch), batch)
        return total

    @staticmethod
    def _older_than(org: str, cutoff: dt.datetime, batch: int) -> Callable[[LogsUnitOfWork], Awaitable[int]]:
        return lambda uow: uow.requests.delete_requests_before(org, cutoff, limit=batch)

    async def _in_batches(self, delete: Callable[[LogsUnitOfWork], Awaitable[int]], batch: int) -> int:
        total = 0
        while True:
            async with self._uow() as uow:
                deleted = await delete(uow)
                await uow.commit()
            total += deleted
            await asyncio.sleep(0)  # let ingest in between batches
            if deleted < batch:
                return total

    # --- the request log --------------------------------------------------------------------

    async def query_requests(self, actor: Actor, q: commands.QueryRequests) -> RequestPage:
        org = log_of(actor.org_id, actor.permissions, platform=q.platform)
        after = Cursor.decode(q.page_token) if q.page_token else None
        async with self._uow() as uow:
            return await uow.requests.query_requests(org, q.filter, size=page_size(q.page_size), after=after)

    async def get_request(self, actor: Actor, q: commands.GetRequest) -> ApiRequest:
        org = log_of(actor.org_id, actor.permissions, platform=q.platform)
        if not q.request_id:
            raise InvalidArgument("request_id is required", field="request_id")
        check_text(q.request_id, "request_id")
        async with self._uow() as uow:
            found = await uow.requests.get_request(org, q.request_id)
        if found is None:
            raise NotFound(f"no request {q.request_id}", request_id=q.request_id)
        return found

    async def export_requests(self, actor: Actor,
                              q: commands.ExportRequests) -> tuple[int, AsyncIterator[list[ApiRequest]]]:
        """How many rows match now, and the matching rows newest first, a page at a time: one
        keyset-paged read unit per page, so an export of any size holds one page in memory."""
        org = log_of(actor.org_id, actor.permissions, platform=q.platform)
        async with self._uow() as uow:
            total = await uow.requests.count_requests(org, q.filter)

        async def pages() -> AsyncIterator[list[ApiRequest]]:
            after: Cursor | None = None
            while True:
                async with self._uow() as uow:
                    page = await uow.requests.query_requests(org, q.filter, size=EXPORT_PAGE, after=after)
                if page.records:
                    yield page.records
                if page.next_cursor is None:
                    return
                after = page.next_cursor

        return total, pages()

    async def request_histogram(self, actor: Actor, q: commands.RequestHistogram) -> Histogram:
        """Requests, errors and 429s per bucket and integration over the filter's whole range
        (from the oldest to the newest matching request where the filter leaves an end open),
        counted by the store in one read unit: at most MAX_BUCKETS buckets of the busiest
        integrations and the rest together, whatever the number of rows."""
        org = log_of(actor.org_id, actor.permissions, platform=q.platform)
        if q.bucket_seconds < 0:
            raise InvalidArgument("bucket_seconds must not be negative", field="bucket_seconds")
        start, end = q.filter.since, q.filter.until
        async with self._uow() as uow:
            if start is None or end is None:
                span = await uow.requests.request_span(org, q.filter)
                if span is None:
                    return Histogram(q.bucket_seconds, start, end, (), 0, 0)
                start = start if start is not None else span[0]
                # `end` is exclusive: the newest request's own bucket is in the range.
                end = end if end is not None else span[1] + dt.timedelta(microseconds=1)
            step = bucket_width(start, end, q.bucket_seconds)
            cells = await uow.requests.histogram(org, q.filter, step)
        return fold_histogram(cells, step=step, start=start, end=end)

    # --- the audit trail --------------------------------------------------------------------

    async def query_audit(self, actor: Actor, q: commands.QueryAudit) -> tuple[list[AuditEntry], str]:
        require_reader(actor.permissions)
        if q.since and q.until and q.since >= q.until:
            raise InvalidArgument("since must be before until", field="since")
        for name in ("object_type", "object_id", "actor_id", "action"):
            check_text(getattr(q, name), name)
        before = SeqCursor.decode(q.page_token).seq if q.page_token else None
        n = page_size(q.page_size)
        async with self._uow() as uow:
            entries = await uow.audit.query_audit(actor.org_id, q, size=n + 1, before_seq=before)
        more = len(entries) > n
        entries = entries[:n]
        return entries, SeqCursor(entries[-1].seq).encode() if more and entries else ""

    async def checkpoint(self, actor: Actor) -> Checkpoint:
        """The organisation's chain head now, signed, to keep outside the database."""
        require_reader(actor.permissions)
        async with self._uow() as uow:
            head = await uow.audit.chain_head(actor.org_id) or empty_head(self._key, actor.org_id)
        return self._signed(head)

    async def verify_audit(self, actor: Actor, q: commands.VerifyAudit | None = None) -> Verification:
        """Walk the organisation's chain from its first entry; name the first problem found."""
        require_reader(actor.permissions)
        checkpoint = q.checkpoint if q is not None else None
        if checkpoint is not None:
            checkpoint.verify_signature(self._key)
            if checkpoint.org_id != actor.org_id:
                raise InvalidArgument("the checkpoint belongs to another organisation", field="checkpoint")
        walker = ChainWalker(self._key, actor.org_id, checkpoint)
        async with self._uow() as uow:
            await uow.audit.snapshot()
            head = await uow.audit.chain_head(actor.org_id)
            async for entry in uow.audit.walk_chain(actor.org_id):
                if not walker.push(entry):
                    break
        finding = walker.finish(head)
        walked = ChainHead(actor.org_id, walker.verified, walker.last_seq, walker.last_mac)
        return Verification(finding, walker.verified, self._signed(walked))

    def _signed(self, head: ChainHead) -> Checkpoint:
        return Checkpoint(head.org_id, head.count, head.last_seq, head.head_mac, self._clock()).signed(self._key)

    # --- the quarterly review ---------------------------------------------------------------

    async def quarterly_review(self, actor: Actor, q: commands.QuarterlyReview | None = None) -> ReviewReport:
        require_reader(actor.permissions)
        days = (q.window_days if q is not None else 0) or WINDOW_DAYS
        if not 1 <= days <= 366:
            raise InvalidArgument("window_days must be between 1 and 366", field="window_days")
        now = self._clock()
        since = now - dt.timedelta(days=days)
        async with self._uow() as uow:
            facts = await uow.integrations.integration_facts(actor.org_id)
            usage = await uow.requests.usage(actor.org_id, since)
            known = {f.integration_id for f in facts}
            # Requests of an integration whose facts never arrived still belong in the review.
            facts += [_unknown(iid, actor.org_id, now) for iid in sorted(usage) if iid and iid not in known]
            # Owner changes and credential issues in the window, from the organisation's audit trail.
            entries: list[AuditEntry] = []
            for action in (UPDATED_ACTION, CREDENTIALS_ISSUED_ACTION):
                entries += await uow.audit.query_audit(actor.org_id, commands.QueryAudit(action=action, since=since),
                                                       size=REVIEW_AUDIT_ENTRIES)
            trail = trails(entries)
            reviews = []
            for f in facts:
                used = usage.get(f.integration_id, Usage())
                last = await uow.requests.last_request_at(actor.org_id, f.integration_id)
                reviews.append(review(f, Usage(used.requests, used.errors, last, used.peak_per_minute, used.exercised,
                                               used.ips), now=now, trail=trail.get(f.integration_id)))
        return ReviewReport(actor.org_id, now, since, days, reviews)


def _unknown(integration_id: str, org_id: str, now: dt.datetime) -> IntegrationFacts:
    return IntegrationFacts(integration_id, org_id, name="", owner="", vendor_id="", status="unknown", scopes=(),
                            rate_limit_per_minute=0, daily_quota=0, ip_allowlist=(), credentials_issued_at=None,
                            version=0, updated_at=now)
