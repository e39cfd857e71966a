"""The one map from a service's gRPC error to what a page says, over a real gRPC call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.console.errors import refusal
from services.kit import errors
from services.kit.grpc_server import ErrorInterceptor


class _Health(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self.raise_next: Exception | None = None

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        assert self.raise_next is not None
        raise self.raise_next


@pytest.fixture
async def failing() -> AsyncIterator[tuple[_Health, health_pb2_grpc.HealthStub]]:
    """A real gRPC server whose one method raises what the test sets, through the kit's interceptor."""
    servicer = _Health()
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield servicer, health_pb2_grpc.HealthStub(channel)
    await server.stop(0)


async def _refusal_of(failing, exc: Exception):  # type: ignore[no-untyped-def]
    servicer, stub = failing
    servicer.raise_next = exc
    with pytest.raises(grpc.RpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest())
    return refusal(caught.value)


@pytest.mark.parametrize("exc, kind, status, field", [
    (errors.InvalidArgument("name is required", field="name"), "invalid", 422, "name"),
    (errors.InvalidArgument("bad", invalid_scopes="x:y"), "invalid", 422, "scopes"),
    (errors.InvalidArgument("bad", invalid_entries="10.0.0.300"), "invalid", 422, "ip_allowlist"),
    (errors.InvalidArgument("bad", entries=51), "invalid", 422, "ip_allowlist"),
    (errors.InvalidArgument("bad", rate_limit_per_minute=0), "invalid", 422, "rate_limit_per_minute"),
    (errors.InvalidArgument("a reason is required"), "invalid", 422, ""),
    (errors.NotFound("no integration int_1"), "not_found", 404, ""),
    (errors.FailedPrecondition("it is revoked", state="revoked"), "conflict", 409, ""),
    (errors.PermissionDenied("you requested this integration, so you cannot approve it"), "duties", 403, ""),
    (errors.PermissionDenied("needs it", permission="administration_integrations_access"), "permission", 403, ""),
    (errors.ResourceExhausted("limit", live=20, limit=20), "limit", 409, ""),
    (errors.Aborted("concurrent"), "busy", 409, ""),
    (errors.Unauthenticated("expired"), "signed_out", 401, ""),
    (errors.Unavailable("identity is down"), "unavailable", 503, ""),
])
async def test_each_refusal_gets_its_kind_status_and_field(failing, exc: Exception, kind: str, status: int,
                                                           field: str) -> None:
    found = await _refusal_of(failing, exc)
    assert (found.kind, found.status, found.field) == (kind, status, field)
    assert found.message and found.message[0].isupper() and found.message.endswith(".")


async def test_a_separation_of_duties_refusal_says_what_to_do(failing) -> None:
    found = await _refusal_of(failing, errors.PermissionDenied(
        "you suspended this integration, so you cannot reactivate it: a different administrator must reactivate it "
        "(separation of duties)"))
    assert found.title == "A different administrator must do this"
    assert found.message.startswith("You suspended this integration") and "ask a colleague" in found.message


async def test_an_unexpected_failure_says_nothing_of_its_insides(failing) -> None:
    found = await _refusal_of(failing, RuntimeError("password=hunter2 in a traceback"))
    assert found.kind == "unavailable" and "hunter2" not in found.message
