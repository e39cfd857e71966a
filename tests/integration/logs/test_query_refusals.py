"""Filters that could never match are refused over gRPC, on SQLite and PostgreSQL, instead of
answering "no requests match"; filters that can match are compared in the form records are
stored in."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.kit.auth import QA_PERMISSION
from tests.integration.logs.conftest import LogsRunner, publish_request, unique
from tests.support.waiting import eventually

Metadata = tuple[tuple[str, str], ...]
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@pytest.fixture
async def logs_on(logs_runner: Callable[..., LogsRunner], database_url: str) -> logs_pb2_grpc.LogsStub:
    return await logs_runner(logs_database_url=database_url).start()


BAD_FILTERS = [
    ({"ip": "999.1.1.1"}, "'999.1.1.1' is not an IP address"),
    ({"ip": "203.0.113.0/24"}, "is not an IP address"),
    ({"error_code": "nope"}, "error code 'nope' is not one a request can carry"),
    ({"integration_id": "SAP Procurement Sync"}, "is not an integration id"),
    ({"integration_id": "int_é"}, "is not an integration id"),
    ({"status": "6xx"}, "must be success, error, a class such as 4xx"),
    ({"endpoint": "/lots\x00"}, "endpoint must not contain NUL characters"),
    ({"since": Timestamp(seconds=253402300800)}, "since is not a time between the years 1 and 9999"),
    ({"until": Timestamp(seconds=0, nanos=-1)}, "until is not a time between the years 1 and 9999"),
    ({"since": Timestamp(seconds=2_000_000_000), "until": Timestamp(seconds=1_000_000_000)}, "since must be before until"),
    ({"page_size": -1}, "page_size must not be negative"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_FILTERS, ids=[m for _, m in BAD_FILTERS])
async def test_a_request_filter_that_could_never_match_is_invalid_argument(
    logs_on: logs_pb2_grpc.LogsStub, as_actor: Callable[..., Metadata], fields: dict[str, object], message: str
) -> None:
    md = as_actor("quinn", unique("org"), [QA_PERMISSION])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await logs_on.QueryRequests(pb.QueryRequestsRequest(**fields), metadata=md)  # type: ignore[arg-type]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")
    if "page_size" in fields:
        return  # exports have no pages
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in logs_on.ExportRequests(pb.ExportRequestsRequest(**fields), metadata=md):  # type: ignore[arg-type]
            pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_an_unknown_export_format_is_invalid_argument(logs_on: logs_pb2_grpc.LogsStub,
                                                           as_actor: Callable[..., Metadata]) -> None:
    md = as_actor("quinn", unique("org"), [QA_PERMISSION])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in logs_on.ExportRequests(pb.ExportRequestsRequest(format=9), metadata=md):  # type: ignore[arg-type]
            pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "unknown export format 9" in (caught.value.details() or "")


async def test_audit_and_request_lookups_with_a_nul_character_are_invalid_argument(
    logs_on: logs_pb2_grpc.LogsStub, as_actor: Callable[..., Metadata]
) -> None:
    md = as_actor("quinn", unique("org"), [QA_PERMISSION])
    calls = [
        logs_on.QueryAudit(pb.QueryAuditRequest(object_id="int_\x00"), metadata=md),
        logs_on.QueryAudit(pb.QueryAuditRequest(actor_id="alice\x00"), metadata=md),
        logs_on.QueryAudit(pb.QueryAuditRequest(since=Timestamp(seconds=-62135596801)), metadata=md),
        logs_on.GetRequest(pb.GetRequestRequest(request_id="req\x00"), metadata=md),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


async def test_filters_match_records_whatever_case_or_ipv6_spelling_they_are_given_in(
    logs_on: logs_pb2_grpc.LogsStub, js: JetStreamContext, as_actor: Callable[..., Metadata]
) -> None:
    org = unique("org")
    integration = f"int_{secrets.token_hex(8)}"
    await publish_request(js, org=org, request_id=f"{org}-1", when=NOW, integration=integration, status=429,
                          ip="2001:db8::7", error="rate_limit_exceeded")
    await publish_request(js, org=org, request_id=f"{org}-2", when=NOW, integration=integration, ip="203.0.113.9")
    md = as_actor("quinn", org, [QA_PERMISSION])

    async def both() -> bool:
        return len((await logs_on.QueryRequests(pb.QueryRequestsRequest(), metadata=md)).records) == 2

    await eventually(both, timeout=20, what="both records")
    found = await logs_on.QueryRequests(pb.QueryRequestsRequest(
        integration_id=integration.upper(), ip="2001:DB8:0::7", error_code=" Rate_Limit_Exceeded"), metadata=md)
    assert [r.request_id for r in found.records] == [f"{org}-1"]
    none = await logs_on.QueryRequests(pb.QueryRequestsRequest(error_code="ip_not_allowed"), metadata=md)
    assert list(none.records) == []  # a real code that never happened: no match, no error
