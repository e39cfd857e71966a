"""Request ids, integration ids and audit filters that are not ours (non-ASCII, NUL, spaces,
line breaks, 100 kB) get a clean answer from the logs service, on SQLite and PostgreSQL, over a
real channel: NOT_FOUND or INVALID_ARGUMENT, or nothing found; never INTERNAL (`Invalid metadata`)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.kit import errors
from services.kit.auth import QA_PERMISSION
from services.kit.rpc_errors import from_rpc_error
from tests.integration.logs.conftest import LogsRunner, unique
from tests.support.odd_ids import answered_or_refused, expected, odd_ids, refusal

Metadata = Callable[..., tuple[tuple[str, str], ...]]


async def test_odd_ids_are_not_found_and_odd_filters_find_nothing(logs_runner: Callable[..., LogsRunner], database_url: str,
                                                                 as_actor: Metadata) -> None:
    stub = await logs_runner(logs_database_url=database_url).start()
    md = as_actor("quinn", unique("org"), [QA_PERMISSION])
    for label, odd in odd_ids("req").items():
        error = await refusal(stub.GetRequest(pb.GetRequestRequest(request_id=odd), metadata=md, timeout=20),
                              what=f"GetRequest {label}")
        assert error.code() in expected(odd), label
        for request in (pb.QueryRequestsRequest(integration_id=odd), pb.QueryRequestsRequest(endpoint=odd),
                        pb.QueryRequestsRequest(page_token=odd)):
            found = await answered_or_refused(stub.QueryRequests(request, metadata=md, timeout=20), what=f"QueryRequests {label}")
            assert found is None or list(found.records) == [], label
        for request in (pb.QueryAuditRequest(object_id=odd), pb.QueryAuditRequest(actor_id=odd),
                        pb.QueryAuditRequest(page_token=odd)):
            found = await answered_or_refused(stub.QueryAudit(request, metadata=md, timeout=20), what=f"QueryAudit {label}")
            assert found is None or list(found.entries) == [], label

        async def export(odd: str = odd) -> list[pb.ExportChunk]:
            return [chunk async for chunk in stub.ExportRequests(pb.ExportRequestsRequest(integration_id=odd),
                                                                 metadata=md, timeout=20)]

        await answered_or_refused(export(), what=f"ExportRequests {label}")
    error = await refusal(stub.GetRequest(pb.GetRequestRequest(request_id="é"), metadata=md))
    refused = from_rpc_error(error)
    assert isinstance(refused, errors.NotFound) and refused.fields == {"request_id": "é"}


async def test_a_time_no_datetime_holds_is_invalid_argument(logs_stub, as_actor: Metadata) -> None:  # type: ignore[no-untyped-def]
    md = as_actor("quinn", unique("org"), [QA_PERMISSION])
    far = Timestamp(seconds=10**15)

    async def export() -> list[pb.ExportChunk]:
        return [chunk async for chunk in logs_stub.ExportRequests(pb.ExportRequestsRequest(until=far), metadata=md, timeout=20)]

    for call in (logs_stub.QueryRequests(pb.QueryRequestsRequest(since=far), metadata=md, timeout=20),
                 logs_stub.QueryAudit(pb.QueryAuditRequest(until=far), metadata=md, timeout=20), export()):
        error = await refusal(call, frozenset({grpc.StatusCode.INVALID_ARGUMENT}))
        assert "since" in (error.details() or "") or "until" in (error.details() or "")


async def test_a_streaming_request_that_is_not_a_valid_message_is_invalid_argument(logs_runner: Callable[..., LogsRunner],
                                                                                   as_actor: Metadata) -> None:
    runner = logs_runner()
    await runner.start()
    assert runner.channel is not None
    md = as_actor("quinn", unique("org"), [QA_PERMISSION])
    export = runner.channel.unary_stream("/trellis.logs.v1.Logs/ExportRequests")

    async def chunks() -> list[bytes]:
        return [chunk async for chunk in export(b"\x0a\x02\xff\xfe", metadata=md, timeout=20)]

    error = await refusal(chunks(), frozenset({grpc.StatusCode.INVALID_ARGUMENT}))
    assert "not a valid message" in (error.details() or "")
