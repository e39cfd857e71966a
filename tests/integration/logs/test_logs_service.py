"""The logs service end to end: records published on JetStream (as the edge and the other
services do), read back through real gRPC with real actor tokens."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable

import grpc
import pytest
from nats.js import JetStreamContext

from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, QA_PERMISSION
from tests.integration.logs.conftest import (
    LogsRunner,
    consumed,
    publish_audit,
    publish_integration,
    publish_request,
    ts,
    unique,
)
from tests.support.waiting import eventually

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
MINUTE = NOW.replace(second=0)  # requests counted "per minute" must not straddle two minutes
QA = [QA_PERMISSION]

Metadata = Callable[..., tuple[tuple[str, str], ...]]


async def all_records(stub: logs_pb2_grpc.LogsStub, md: tuple[tuple[str, str], ...], **filters: object) -> list[pb.RequestRecord]:
    records: list[pb.RequestRecord] = []
    token = ""
    while True:
        page = await stub.QueryRequests(pb.QueryRequestsRequest(page_size=500, page_token=token, **filters), metadata=md)
        records += page.records
        token = page.next_page_token
        if not token:
            return records


async def arrived(stub: logs_pb2_grpc.LogsStub, md: tuple[tuple[str, str], ...], n: int) -> list[pb.RequestRecord]:
    async def check() -> list[pb.RequestRecord] | None:
        records = await all_records(stub, md)
        return records if len(records) >= n else None

    return await eventually(check, timeout=20, what=f"{n} request records")


async def test_records_published_while_logs_is_down_arrive_once_when_it_is_back(
    logs_runner: Callable[..., LogsRunner], js: JetStreamContext, as_actor: Metadata
) -> None:
    org = unique("org")
    md = as_actor("quinn", org, QA)
    runner = logs_runner()
    stub = await runner.start()
    for i in range(10):
        await publish_request(js, org=org, request_id=f"{org}-a{i}", when=NOW - dt.timedelta(seconds=i))
    await arrived(stub, md, 10)

    await runner.stop()
    for i in range(300):
        await publish_request(js, org=org, request_id=f"{org}-b{i}", when=NOW - dt.timedelta(minutes=1, seconds=i))
    # The same request again after JetStream's duplicate window: the database keeps one row.
    await publish_request(js, org=org, request_id=f"{org}-a3", when=NOW - dt.timedelta(seconds=3), msg_id=unique("late-copy"))

    stub = await runner.start()
    await arrived(stub, md, 310)
    await consumed(js, "APILOG", runner.durables.apilog)  # the late copy too, published last
    ids = [r.request_id for r in await all_records(stub, md)]
    assert len(ids) == len(set(ids)) == 310


async def test_a_request_is_shown_with_its_integration_name_and_every_column(
    logs_stub: logs_pb2_grpc.LogsStub, js: JetStreamContext, as_actor: Metadata
) -> None:
    org, integration, request_id = unique("org"), unique("int"), unique("req")
    await publish_integration(js, org=org, integration=integration, version=2, name="SAP Procurement Sync")
    await publish_integration(js, org=org, integration=integration, version=1, name="old name")  # stale: ignored
    await publish_request(js, org=org, request_id=request_id, when=NOW, integration=integration, method="POST",
                          endpoint="/orders/123", status=403, ip="198.51.100.4", error="insufficient_scope",
                          category="orders")
    md = as_actor("quinn", org, QA)

    async def named() -> pb.RequestRecord | None:
        try:
            record = await logs_stub.GetRequest(pb.GetRequestRequest(request_id=request_id), metadata=md)
        except grpc.aio.AioRpcError:
            return None
        return record if record.integration_name == "SAP Procurement Sync" else None

    record = await eventually(named, timeout=20, what="the request with its integration's name")
    assert (record.method, record.endpoint, record.status, record.ip, record.error_code, record.scope_category) == (
        "POST", "/orders/123", 403, "198.51.100.4", "insufficient_scope", "orders")
    assert record.timestamp.ToDatetime(tzinfo=dt.timezone.utc) == NOW
    assert record.duration_ms == pytest.approx(3.25) and record.integration_id == integration


async def test_a_partner_reusing_its_request_id_cannot_keep_later_requests_out_of_the_log(
    logs_runner: Callable[..., LogsRunner], js: JetStreamContext, as_actor: Metadata
) -> None:
    runner = logs_runner()
    logs_stub = await runner.start()
    org = unique("org")
    # The partner sends X-Request-ID: same-id on every request; the edge logs each under it.
    for i in range(3):
        await publish_request(js, org=org, request_id="same-id", when=NOW - dt.timedelta(seconds=10 - i),
                              endpoint=f"/orders/{i}", msg_id=unique("rec"))
    # One of them published again (a lost ack): the same record, stored once.
    await publish_request(js, org=org, request_id="same-id", when=NOW - dt.timedelta(seconds=8), endpoint="/orders/2",
                          msg_id=unique("again"))
    md = as_actor("quinn", org, QA)
    await arrived(logs_stub, md, 3)
    await consumed(js, "APILOG", runner.durables.apilog)  # the copy too, published last
    records = await all_records(logs_stub, md)
    assert sorted(r.endpoint for r in records) == ["/orders/0", "/orders/1", "/orders/2"]
    latest = await logs_stub.GetRequest(pb.GetRequestRequest(request_id="same-id"), metadata=md)
    assert latest.endpoint == "/orders/2"  # lookup by id shows the latest of them


async def test_another_organisations_request_is_not_found_and_never_listed(
    logs_stub: logs_pb2_grpc.LogsStub, js: JetStreamContext, as_actor: Metadata
) -> None:
    mine, theirs = unique("org"), unique("org")
    await publish_request(js, org=mine, request_id=f"{mine}-1", when=NOW)
    await publish_request(js, org=theirs, request_id=f"{theirs}-1", when=NOW)
    await arrived(logs_stub, as_actor("quinn", theirs, QA), 1)
    md = as_actor("quinn", mine, QA)
    await arrived(logs_stub, md, 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await logs_stub.GetRequest(pb.GetRequestRequest(request_id=f"{theirs}-1"), metadata=md)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert [r.request_id for r in await all_records(logs_stub, md)] == [f"{mine}-1"]


async def test_callers_without_the_qa_or_administrator_permission_are_refused(
    logs_stub: logs_pb2_grpc.LogsStub, as_actor: Metadata
) -> None:
    md = as_actor("dev", unique("org"), ["integrations_read"])
    calls = [
        logs_stub.QueryRequests(pb.QueryRequestsRequest(), metadata=md),
        logs_stub.GetRequest(pb.GetRequestRequest(request_id="req_1"), metadata=md),
        logs_stub.QueryAudit(pb.QueryAuditRequest(), metadata=md),
        logs_stub.VerifyAudit(pb.VerifyAuditRequest(), metadata=md),
        logs_stub.GetAuditCheckpoint(pb.GetAuditCheckpointRequest(), metadata=md),
        logs_stub.QuarterlyReview(pb.QuarterlyReviewRequest(), metadata=md),
        logs_stub.RequestHistogram(pb.RequestHistogramRequest(), metadata=md),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in logs_stub.ExportRequests(pb.ExportRequestsRequest(), metadata=md):
            pass
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # The administrator permission alone is enough too.
    await logs_stub.QueryRequests(pb.QueryRequestsRequest(), metadata=as_actor("ada", unique("org"), [ADMIN_PERMISSION]))


async def test_filters_combine_and_pages_cover_every_match_once(
    logs_stub: logs_pb2_grpc.LogsStub, js: JetStreamContext, as_actor: Metadata
) -> None:
    org = unique("org")
    for i in range(120):
        status = (200, 404, 429, 503)[i % 4]
        await publish_request(
            js, org=org, request_id=f"{org}-{i:03d}", when=NOW - dt.timedelta(minutes=i), integration=f"int_{i % 2}",
            endpoint=f"/{'lots' if i % 3 else 'orders'}/{i}", status=status, ip=f"10.0.0.{i % 5}",
            error={404: "not_found", 429: "rate_limit_exceeded", 503: "upstream_unavailable"}.get(status, ""),
        )
    md = as_actor("quinn", org, QA)
    await arrived(logs_stub, md, 120)

    async def ids(**filters: object) -> list[int]:
        return [int(r.request_id.rsplit("-", 1)[1]) for r in await all_records(logs_stub, md, **filters)]

    assert await ids(integration_id="int_0", status="error") == [i for i in range(120) if i % 4 == 2]
    assert await ids(status="4xx", endpoint="ORDERS") == [i for i in range(120) if i % 4 in (1, 2) and i % 3 == 0]
    assert await ids(status="success", ip="10.0.0.3") == [i for i in range(120) if i % 4 == 0 and i % 5 == 3]
    assert await ids(status="429") == [i for i in range(120) if i % 4 == 2]
    assert await ids(error_code="upstream_unavailable", since=ts(NOW - dt.timedelta(minutes=30)),
                     until=ts(NOW - dt.timedelta(minutes=10))) == [i for i in range(11, 31) if i % 4 == 3]

    seen: list[str] = []
    token = ""
    while True:
        page = await logs_stub.QueryRequests(pb.QueryRequestsRequest(page_size=7, page_token=token, status="error"),
                                             metadata=md)
        assert len(page.records) <= 7
        seen += [r.request_id for r in page.records]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"{org}-{i:03d}" for i in range(120) if i % 4]

    big = await logs_stub.QueryRequests(pb.QueryRequestsRequest(page_size=100_000), metadata=md)
    assert len(big.records) == 120  # capped at 500 per page; all 120 fit
    for bad in (pb.QueryRequestsRequest(status="teapot"), pb.QueryRequestsRequest(page_token="not-a-token")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await logs_stub.QueryRequests(bad, metadata=md)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_histogram_counts_one_organisations_matching_requests_over_grpc(
    logs_stub: logs_pb2_grpc.LogsStub, js: JetStreamContext, as_actor: Metadata
) -> None:
    org, other = unique("org"), unique("org")
    for i in range(60):
        await publish_request(js, org=org, request_id=f"{org}-{i:03d}", when=MINUTE - dt.timedelta(minutes=i),
                              integration=f"int_{i % 3}", status=429 if i % 5 == 0 else 200,
                              error="rate_limit_exceeded" if i % 5 == 0 else "")
    await publish_request(js, org=other, request_id=f"{other}-1", when=MINUTE, integration="int_0")
    md = as_actor("quinn", org, QA)
    await arrived(logs_stub, md, 60)
    # The other organisation's request came last and may be stored in a later batch.
    await arrived(logs_stub, as_actor("quinn", other, QA), 1)

    h = await logs_stub.RequestHistogram(pb.RequestHistogramRequest(), metadata=md)
    assert h.requests == 60 == sum(c.requests for c in h.cells) and h.integrations == 3
    assert sum(c.limited for c in h.cells) == 12 == sum(c.errors for c in h.cells)
    assert h.bucket_seconds == 60 and h.start.seconds == int((MINUTE - dt.timedelta(minutes=59)).timestamp())
    one = await logs_stub.RequestHistogram(pb.RequestHistogramRequest(
        integration_id="int_1", status="429", since=ts(MINUTE - dt.timedelta(hours=2)), until=ts(MINUTE),
        bucket_seconds=3600), metadata=md)
    assert one.requests == sum(1 for i in range(1, 60) if i % 3 == 1 and i % 5 == 0) and one.bucket_seconds == 3600
    assert {c.integration_id for c in one.cells} == {"int_1"}
    # Another organisation sees its own request only.
    theirs = await logs_stub.RequestHistogram(pb.RequestHistogramRequest(), metadata=as_actor("quinn", other, QA))
    assert theirs.requests == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await logs_stub.RequestHistogram(pb.RequestHistogramRequest(bucket_seconds=1), metadata=md)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "bucket_seconds" in (caught.value.details() or "")


async def test_export_streams_every_matching_row_as_csv_or_json_lines(
    logs_stub: logs_pb2_grpc.LogsStub, js: JetStreamContext, as_actor: Metadata
) -> None:
    org = unique("org")
    for i in range(2_345):
        await publish_request(js, org=org, request_id=f"{org}-{i:05d}", when=NOW - dt.timedelta(seconds=i),
                              status=500 if i % 10 == 0 else 200, endpoint="=cmd|' /C calc'!A0" if i == 1 else "/lots")
    md = as_actor("quinn", org, QA)
    await arrived(logs_stub, md, 2_345)

    chunks = [c async for c in logs_stub.ExportRequests(pb.ExportRequestsRequest(format=pb.EXPORT_FORMAT_CSV), metadata=md)]
    assert len(chunks) > 1 and all(c.total_rows == 2_345 for c in chunks)
    rows = list(csv.DictReader(io.StringIO(b"".join(c.data for c in chunks).decode())))
    assert [r["request_id"] for r in rows] == [f"{org}-{i:05d}" for i in range(2_345)]
    assert rows[1]["endpoint"].startswith("'=")  # no formula runs when the file is opened in a spreadsheet

    chunks = [c async for c in logs_stub.ExportRequests(
        pb.ExportRequestsRequest(format=pb.EXPORT_FORMAT_JSONL, status="5xx"), metadata=md)]
    lines = [json.loads(line) for line in b"".join(c.data for c in chunks).decode().splitlines()]
    assert [line["request_id"] for line in lines] == [f"{org}-{i:05d}" for i in range(0, 2_345, 10)]
    assert sum(c.rows for c in chunks) == len(lines) == chunks[0].total_rows
    assert set(lines[0]) == {"timestamp", "integration_id", "integration_name", "method", "endpoint", "status",
                             "duration_ms", "ip", "request_id", "error_code", "scope_category"}


async def test_audit_events_are_stored_once_and_the_chain_verifies(
    logs_runner: Callable[..., LogsRunner], js: JetStreamContext, as_actor: Metadata
) -> None:
    runner = logs_runner()
    logs_stub = await runner.start()
    org = unique("org")
    md = as_actor("ada", org, [ADMIN_PERMISSION])
    for i in range(5):
        await publish_audit(js, org=org, event_id=f"{org}-e{i}", action="integration.suspended" if i == 4 else "integration.updated")
    await publish_audit(js, org=org, event_id=f"{org}-e2")  # a redelivered copy

    async def five() -> pb.QueryAuditResponse | None:
        found = await logs_stub.QueryAudit(pb.QueryAuditRequest(), metadata=md)
        return found if len(found.entries) == 5 else None

    await eventually(five, timeout=20, what="five audit entries")
    await consumed(js, "TRELLIS", runner.durables.audit)  # the copy too, published last
    entries = (await logs_stub.QueryAudit(pb.QueryAuditRequest(), metadata=md)).entries
    assert [e.event_id for e in entries] == [f"{org}-e{i}" for i in reversed(range(5))]
    suspended = await logs_stub.QueryAudit(pb.QueryAuditRequest(action="integration.suspended"), metadata=md)
    assert [e.event_id for e in suspended.entries] == [f"{org}-e4"]

    checkpoint = await logs_stub.GetAuditCheckpoint(pb.GetAuditCheckpointRequest(), metadata=md)
    assert (checkpoint.count, checkpoint.last_seq) == (5, 5)
    verified = await logs_stub.VerifyAudit(pb.VerifyAuditRequest(checkpoint=checkpoint), metadata=md)
    assert verified.intact and verified.entries_checked == 5
    forged = pb.AuditCheckpoint()
    forged.CopyFrom(checkpoint)
    forged.last_seq = 9
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await logs_stub.VerifyAudit(pb.VerifyAuditRequest(checkpoint=forged), metadata=md)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_quarterly_review_reports_usage_against_grants_with_flags(
    logs_stub: logs_pb2_grpc.LogsStub, js: JetStreamContext, as_actor: Metadata
) -> None:
    org = unique("org")
    busy, idle = unique("int"), unique("int")
    await publish_integration(js, org=org, integration=busy, version=3, name="ERP sync", rate_limit=1000,
                              scopes=("inventory:read", "inventory:write", "crm:read", "reports:execute"),
                              credentials_issued_at=NOW - dt.timedelta(days=120))
    await publish_integration(js, org=org, integration=idle, version=1, name="Old dashboard",
                              scopes=("finance:read",), allowlist=("192.0.2.0/24",),
                              credentials_issued_at=NOW - dt.timedelta(days=40))
    n = 0
    for minute, per_minute in ((1, 12), (3, 4)):
        for i in range(per_minute):
            n += 1
            await publish_request(js, org=org, request_id=f"{org}-{n}", integration=busy, ip=f"203.0.113.{i + 1}",
                                  when=MINUTE - dt.timedelta(minutes=minute) + dt.timedelta(seconds=i),
                                  status=200 if i % 4 else 500,
                                  method="GET", category="inventory")
    await publish_request(js, org=org, request_id=f"{org}-w", integration=busy, ip="203.0.113.200",
                          when=NOW - dt.timedelta(minutes=10), method="POST", category="reports")
    await publish_request(js, org=org, request_id=f"{org}-refused", integration=busy, ip="203.0.113.201",
                          when=NOW - dt.timedelta(minutes=11), method="GET", category="crm", status=403,
                          error="insufficient_scope")
    md = as_actor("ada", org, [ADMIN_PERMISSION])
    await arrived(logs_stub, md, n + 2)

    async def both() -> pb.QuarterlyReviewResponse | None:
        report = await logs_stub.QuarterlyReview(pb.QuarterlyReviewRequest(), metadata=md)
        # Named: each integration's facts have arrived, not only its requests (another stream).
        return report if len(report.integrations) == 2 and all(r.name for r in report.integrations) else None

    report = await eventually(both, timeout=20, what="both integrations and their facts in the review")
    by_id = {r.integration_id: r for r in report.integrations}
    b = by_id[busy]
    assert b.name == "ERP sync" and b.status == "active" and b.owner == "olivia"
    assert list(b.exercised_scopes) == ["inventory:read", "reports:execute"]
    assert list(b.unused_scopes) == ["crm:read", "inventory:write"]
    assert b.requests == n + 2 and b.errors == 5 and b.error_rate == pytest.approx(5 / (n + 2))  # four 500s, one 403
    assert b.peak_requests_per_minute == 12 and b.rate_limit_per_minute == 1000
    assert b.credential_age_days == 120 and not b.allowlist_set
    assert list(b.networks) == ["203.0.113.0/24"]
    assert set(b.flags) == {"granted_scopes_never_used", "pii_scope_granted", "rate_limit_far_above_use",
                            "credentials_older_than_90_days", "no_allowlist_single_network"}
    i = by_id[idle]
    assert i.requests == 0 and not i.HasField("last_request_at") and i.allowlist_set
    assert set(i.flags) == {"unused_30_days", "granted_scopes_never_used", "financial_scope_granted"}
