"""The logs service's use cases at the unit-of-work seam, in memory (tests/unit/logs/memory.py):
what each commits, rolls back and returns. The SQL side runs the same use cases on SQLite and
PostgreSQL in tests/integration/logs."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from services.kit.auth import (
    PLATFORM_PERMISSION,
    QA_PERMISSION,
    Actor,
)
from services.kit.errors import InvalidArgument, NotFound, PermissionDenied
from services.kit.uow import MemoryStore
from services.logs.application import handlers as handlers_module
from services.logs.application.commands import (
    ExportRequests,
    GetRequest,
    QuarterlyReview,
    QueryAudit,
    QueryRequests,
    RequestHistogram,
    VerifyAudit,
)
from services.logs.application.handlers import LogsHandlers
from services.logs.domain.model import (
    ApiRequest,
    MAX_BUCKETS,
    MAX_HISTOGRAM_INTEGRATIONS,
    OTHER_INTEGRATIONS,
    AuditRecord,
    Problem,
    RequestFilter,
    StatusFilter,
)
from services.logs.domain.review import IntegrationFacts
from tests.unit.logs.memory import units

T0 = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.timezone.utc)
KEY = b"k" * 32
QA = Actor("quinn", "org_a", frozenset({QA_PERMISSION}))
OPERATOR = Actor("pat", "org_p", frozenset({PLATFORM_PERMISSION}))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def handlers(store: MemoryStore) -> LogsHandlers:
    return LogsHandlers(units(store), KEY, clock=lambda: T0)


def request(i: int, *, org: str = "org_a", status: int = 200, seconds: float | None = None,
            integration: str = "int_a") -> ApiRequest:
    return ApiRequest.normalised(
        org_id=org, request_id=f"req_{org}_{i:05d}", timestamp=T0 - dt.timedelta(seconds=i if seconds is None else seconds),
        integration_id=integration, method="GET", endpoint=f"/lots/{i}", status=status, duration_ms=3.0,
        ip="203.0.113.7", error_code="" if status < 400 else "upstream_error", scope_category="inventory",
    )


def record(i: int, org: str = "org_a") -> AuditRecord:
    return AuditRecord.normalised(
        event_id=f"evt_{org}_{i}", occurred_at=T0 + dt.timedelta(seconds=i), service="registry", org_id=org,
        actor_id="alice", action="integration.updated", object_type="integration", object_id="int_a",
        before_json="{}", after_json="{}", reason="", request_id=f"req_{i}",
    )


async def test_a_batch_of_requests_is_one_commit_and_a_record_sent_twice_is_kept_once(
    handlers: LogsHandlers, store: MemoryStore
) -> None:
    await handlers.record_requests([request(1), request(2), request(1)])
    await handlers.record_requests([request(2), request(3)])
    assert store.commits == 2
    page = await handlers.query_requests(QA, QueryRequests())
    assert [r.request_id for r in page.records] == [request(i).request_id for i in (1, 2, 3)]
    assert page.next_cursor is None


async def test_readers_see_their_own_organisation_and_the_platform_log_is_for_operators(handlers: LogsHandlers) -> None:
    await handlers.record_requests([request(1), request(2, org="org_b"), request(3, org="")])
    assert (await handlers.get_request(QA, GetRequest(request(1).request_id))).org_id == "org_a"
    with pytest.raises(NotFound):
        await handlers.get_request(QA, GetRequest(request(2, org="org_b").request_id))
    with pytest.raises(PermissionDenied):
        await handlers.query_requests(QA, QueryRequests(platform=True))
    with pytest.raises(PermissionDenied):
        await handlers.query_requests(Actor("ian", "org_a", frozenset({"integrations_read"})), QueryRequests())
    platform = await handlers.query_requests(OPERATOR, QueryRequests(platform=True))
    assert [r.request_id for r in platform.records] == [request(3, org="").request_id]


async def test_pages_follow_one_another_by_their_tokens(handlers: LogsHandlers) -> None:
    await handlers.record_requests([request(i, status=503 if i % 3 == 0 else 200) for i in range(25)])
    seen, token = [], ""
    while True:
        page = await handlers.query_requests(QA, QueryRequests(RequestFilter(status=StatusFilter.parse("error")),
                                                               page_size=4, page_token=token))
        seen += [r.request_id for r in page.records]
        if page.next_cursor is None:
            break
        token = page.next_cursor.encode()
    assert seen == [request(i).request_id for i in range(0, 25, 3)]
    with pytest.raises(InvalidArgument):
        await handlers.query_requests(QA, QueryRequests(page_token="not-a-token"))


async def test_an_export_reads_one_bounded_page_per_unit(handlers: LogsHandlers, store: MemoryStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers_module, "EXPORT_PAGE", 10)
    await handlers.record_requests([request(i) for i in range(25)])
    rollbacks = store.rollbacks
    total, pages = await handlers.export_requests(QA, ExportRequests())
    sizes = [len(p) async for p in pages]
    assert total == 25 and sizes == [10, 10, 5]
    assert store.rollbacks - rollbacks == 4  # the count, then one read unit per page, none committed
    assert store.commits == 1


async def test_the_histogram_counts_the_whole_range_per_bucket_and_integration(handlers: LogsHandlers,
                                                                              store: MemoryStore) -> None:
    # Three days of requests a minute apart, every 10th a 429, every 7th a 503, two integrations.
    rows = [request(i, seconds=60 * i, status=429 if i % 10 == 0 else 503 if i % 7 == 0 else 200,
                    integration="int_b" if i % 3 == 0 else "int_a") for i in range(3 * 24 * 60)]
    rows.append(request(1, org="org_b"))  # another organisation's never counts
    await handlers.record_requests(rows)
    commits = store.commits
    h = await handlers.request_histogram(QA, RequestHistogram())
    assert store.commits == commits  # a read
    assert h.requests == len(rows) - 1 == sum(c.requests for c in h.cells)
    assert sum(c.limited for c in h.cells) == sum(1 for r in rows[:-1] if r.status == 429)
    assert sum(c.errors for c in h.cells) == sum(1 for r in rows[:-1] if r.status >= 400)
    assert h.integrations == 2 and {c.integration_id for c in h.cells} == {"int_a", "int_b"}
    assert h.bucket_seconds == 1800 and h.start == rows[-2].timestamp and h.end is not None
    assert len({c.bucket_start for c in h.cells}) <= MAX_BUCKETS
    assert all(int(c.bucket_start.timestamp()) % h.bucket_seconds == 0 for c in h.cells)

    # The filter's range and filters, a width asked for, and one too narrow for the range.
    since = T0 - dt.timedelta(hours=2)
    hour = await handlers.request_histogram(QA, RequestHistogram(
        RequestFilter(since=since, until=T0, status=StatusFilter.parse("429")), bucket_seconds=600))
    assert hour.start == since and hour.end == T0 and hour.bucket_seconds == 600
    assert hour.requests == 12 and all(c.limited == c.requests for c in hour.cells)
    with pytest.raises(InvalidArgument) as refused:
        await handlers.request_histogram(QA, RequestHistogram(bucket_seconds=60))
    assert refused.value.fields["field"] == "bucket_seconds"
    with pytest.raises(PermissionDenied):
        await handlers.request_histogram(QA, RequestHistogram(platform=True))
    empty = await handlers.request_histogram(QA, RequestHistogram(RequestFilter(integration_id="int_zzz")))
    assert empty.requests == 0 and empty.cells == ()


async def test_the_histogram_keeps_the_busiest_integrations_and_counts_the_rest_together(handlers: LogsHandlers) -> None:
    n = MAX_HISTOGRAM_INTEGRATIONS + 3
    await handlers.record_requests([request(100 * k + j, seconds=j, integration=f"int_{k:02d}")
                                    for k in range(n) for j in range(n - k)])
    h = await handlers.request_histogram(QA, RequestHistogram())
    kept = {c.integration_id for c in h.cells} - {OTHER_INTEGRATIONS}
    assert kept == {f"int_{k:02d}" for k in range(MAX_HISTOGRAM_INTEGRATIONS)} and h.integrations == n
    assert sum(c.requests for c in h.cells if c.integration_id == OTHER_INTEGRATIONS) == 3 + 2 + 1
    assert h.requests == sum(range(1, n + 1))


async def test_audit_records_join_their_chain_once_in_order_and_verify(handlers: LogsHandlers, store: MemoryStore) -> None:
    assert await handlers.record_audit([record(3), record(1), record(1), record(2)]) == 3
    assert await handlers.record_audit([record(2), record(4)]) == 1
    entries, _ = await handlers.query_audit(QA, QueryAudit())
    assert [(e.seq, e.event_id) for e in entries] == [(4, "evt_org_a_4"), (3, "evt_org_a_2"), (2, "evt_org_a_1"),
                                                      (1, "evt_org_a_3")]
    result = await handlers.verify_audit(QA)
    assert result.finding is None and result.verified == 4 and result.head.last_seq == 4


async def test_an_audit_batch_that_fails_to_commit_leaves_the_chain_as_it_was(handlers: LogsHandlers,
                                                                              store: MemoryStore) -> None:
    await handlers.record_audit([record(1)])
    store.fail_next_commit = RuntimeError("database down")
    with pytest.raises(RuntimeError):
        await handlers.record_audit([record(2), record(3)])
    checkpoint = await handlers.checkpoint(QA)
    assert (checkpoint.count, checkpoint.last_seq) == (1, 1)
    assert await handlers.record_audit([record(2)]) == 1
    assert (await handlers.verify_audit(QA)).finding is None


async def test_an_altered_entry_is_named_and_a_forged_checkpoint_refused(handlers: LogsHandlers,
                                                                         store: MemoryStore) -> None:
    await handlers.record_audit([record(i) for i in range(1, 6)])
    checkpoint = await handlers.checkpoint(QA)
    entries = store.tables["entries"]
    entries[("org_a", 3)] = dataclasses.replace(entries[("org_a", 3)], reason="nothing to see here")
    finding = (await handlers.verify_audit(QA)).finding
    assert finding is not None and (finding.problem, finding.seq) == (Problem.ALTERED, 3)
    with pytest.raises(InvalidArgument):
        await handlers.verify_audit(QA, VerifyAudit(dataclasses.replace(checkpoint, count=2, last_seq=2)))
    with pytest.raises(InvalidArgument):
        await handlers.verify_audit(dataclasses.replace(QA, org_id="org_b"), VerifyAudit(checkpoint))


async def test_audit_pages_and_their_refusals(handlers: LogsHandlers) -> None:
    await handlers.record_audit([record(i) for i in range(1, 8)])
    first, token = await handlers.query_audit(QA, QueryAudit(page_size=3))
    rest, last = await handlers.query_audit(QA, QueryAudit(page_size=5, page_token=token))
    assert [e.seq for e in first + rest] == [7, 6, 5, 4, 3, 2, 1] and last == ""
    with pytest.raises(InvalidArgument):
        await handlers.query_audit(QA, QueryAudit(since=T0, until=T0))
    with pytest.raises(PermissionDenied):
        await handlers.checkpoint(Actor("ian", "org_a", frozenset({"integrations_read"})))


async def test_retention_deletes_in_batches_each_its_own_commit(store: MemoryStore) -> None:
    handlers = LogsHandlers(units(store), KEY, clock=lambda: T0 + dt.timedelta(days=30))
    old = [request(i, seconds=40 * 86400 + i) for i in range(12)]
    platform = [request(100 + i, org="", seconds=i) for i in range(8)]
    await handlers.record_requests(old + [request(50)] + platform)
    commits = store.commits
    assert await handlers.enforce_retention(60, platform_max_rows=5, batch=5) == 12 + 3
    # The platform log by age (nothing old: one batch of none); org_a 5, 5, 2; the platform log by its bound, 3.
    assert store.commits - commits == 1 + 3 + 1
    left = await handlers.query_requests(QA, QueryRequests())
    assert [r.request_id for r in left.records] == [request(50).request_id]
    kept = await handlers.query_requests(OPERATOR, QueryRequests(platform=True))
    assert [r.request_id for r in kept.records] == [r.request_id for r in platform[:5]]


async def test_the_review_lists_integrations_whose_facts_never_arrived(handlers: LogsHandlers) -> None:
    facts = IntegrationFacts("int_a", "org_a", name="Ledger", owner="olga", vendor_id="xero", status="active",
                             scopes=("inventory:read", "crm:read"), rate_limit_per_minute=600, daily_quota=0,
                             ip_allowlist=(), credentials_issued_at=T0 - dt.timedelta(days=100), version=3,
                             updated_at=T0)
    await handlers.apply_integrations([facts, dataclasses.replace(facts, name="Stale", version=2)])
    await handlers.record_requests([request(1), request(2, integration="int_ghost")])
    report = await handlers.quarterly_review(QA)
    assert report.window_days == 90 and report.org_id == "org_a"
    by_id = {r.facts.integration_id: r for r in report.reviews}
    assert by_id["int_a"].facts.name == "Ledger"
    assert by_id["int_a"].exercised_scopes == ("inventory:read",) and by_id["int_a"].unused_scopes == ("crm:read",)
    assert by_id["int_ghost"].facts.status == "unknown" and by_id["int_ghost"].usage.requests == 1
    with pytest.raises(InvalidArgument):
        await handlers.quarterly_review(QA, QuarterlyReview(window_days=400))


async def test_the_review_reads_owner_changes_and_credential_issues_in_the_window_from_the_trail(
        store: MemoryStore) -> None:
    facts = IntegrationFacts("int_a", "org_a", name="Ledger", owner="oscar", vendor_id="xero", status="active",
                             scopes=("inventory:read",), rate_limit_per_minute=60, daily_quota=0, ip_allowlist=(),
                             credentials_issued_at=T0 - dt.timedelta(days=5), version=3, updated_at=T0)

    def change(i: int, days: int, *, org: str = "org_a", action: str = "integration.updated", actor: str = "alice",
               owner: tuple[str, str] = ("olivia", "oscar")) -> AuditRecord:
        return AuditRecord.normalised(
            event_id=f"evt_{org}_{i}", occurred_at=T0 - dt.timedelta(days=days), service="registry", org_id=org,
            actor_id=actor, action=action, object_type="integration", object_id="int_a",
            before_json=f'{{"owner": "{owner[0]}"}}', after_json=f'{{"owner": "{owner[1]}"}}', reason="", request_id="")

    handlers = LogsHandlers(units(store), KEY, clock=lambda: T0)
    await handlers.apply_integrations([facts])
    await handlers.record_audit([
        change(1, 120, owner=("ophelia", "olivia")),          # before the window
        change(2, 30), change(3, 20, owner=("oscar", "oscar")),  # the change; then another field
        change(4, 5, action="credentials.issued", actor="bob"),
        change(5, 2, org="org_b", owner=("x", "y")),            # another organisation's
    ])
    (line,) = (await handlers.quarterly_review(QA)).reviews
    assert [(c.actor_id, c.before, c.after) for c in line.trail.owner_changes] == [("alice", "olivia", "oscar")]
    assert [c.actor_id for c in line.trail.credentials_issued] == ["bob"]
    assert "owner_changed_in_window" in line.flags
    (later,) = (await handlers.quarterly_review(QA, QuarterlyReview(window_days=10))).reviews
    assert later.trail.owner_changes == () and "owner_changed_in_window" not in later.flags
