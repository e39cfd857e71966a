"""Ids that are not ours (non-ASCII, NUL, spaces, line breaks, 100 kB) get a clean NOT_FOUND or
INVALID_ARGUMENT from every registry method that takes one, on SQLite and PostgreSQL, over a real
channel: never INTERNAL (`Invalid metadata`), a hang, or a status gRPC made up itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit import errors
from services.kit.rpc_errors import from_rpc_error
from services.kit.service import RunningService
from tests.support.settings import Settings
from tests.integration.registry.helpers import AsActor, Metadata, new_org
from tests.support.odd_ids import expected, odd_ids, refusal
from tests.support.services import channel_to, start_service


@pytest.fixture
async def channel(make_settings: Callable[..., Settings], identity_service: RunningService,
                  database_url: str) -> AsyncIterator[grpc.aio.Channel]:
    service = await start_service("registry", make_settings(identity_addr=f"127.0.0.1:{identity_service.port}",
                                                            registry_database_url=database_url))
    try:
        async with channel_to(service) as channel:
            yield channel
    finally:
        await service.stop(0)


@pytest.fixture
def registry(channel: grpc.aio.Channel) -> registry_pb2_grpc.RegistryStub:
    return registry_pb2_grpc.RegistryStub(channel)


def _calls(odd: str) -> dict[str, object]:
    return {
        "GetIntegration": pb.GetIntegrationRequest(integration_id=odd),
        "GetIntegrationHistory": pb.GetIntegrationHistoryRequest(integration_id=odd),
        "ApproveIntegration": pb.ApproveIntegrationRequest(integration_id=odd),
        "ActivateIntegration": pb.ActivateIntegrationRequest(integration_id=odd),
        "UpdateIntegration": pb.UpdateIntegrationRequest(integration_id=odd, update_mask=["description"], description="new"),
        "SuspendIntegration": pb.SuspendIntegrationRequest(integration_id=odd, reason="r"),
        "ReactivateIntegration": pb.ReactivateIntegrationRequest(integration_id=odd),
        "RevokeIntegration": pb.RevokeIntegrationRequest(integration_id=odd, reason="r"),
        "RegenerateApiKey": pb.RegenerateApiKeyRequest(integration_id=odd),
    }


async def test_every_method_refuses_an_odd_integration_id_as_not_found(registry: registry_pb2_grpc.RegistryStub,
                                                                       as_actor: AsActor, edge: Metadata) -> None:
    admin = as_actor("alice", new_org())
    for label, odd in odd_ids("int").items():
        for method, request in _calls(odd).items():
            error = await refusal(getattr(registry, method)(request, metadata=admin, timeout=20), what=f"{method} {label}")
            assert error.code() in expected(odd), (method, label)
        error = await refusal(registry.LookupIntegration(pb.LookupIntegrationRequest(integration_id=odd), metadata=edge,
                                                         timeout=20), what=f"LookupIntegration {label}")
        assert error.code() in expected(odd), label
    # The id comes back in the error's fields, as sent.
    error = await refusal(registry.GetIntegration(pb.GetIntegrationRequest(integration_id="int_é"), metadata=admin))
    refused = from_rpc_error(error)
    assert isinstance(refused, errors.NotFound) and refused.fields == {"integration_id": "int_é"}


async def test_an_odd_request_id_on_activation_is_invalid_argument_never_a_hang(registry: registry_pb2_grpc.RegistryStub,
                                                                                as_actor: AsActor) -> None:
    # The request id travels on to identity, in x-request-id metadata too: one that metadata
    # cannot carry made the activation hang (the peer call never started nor ended).
    org = new_org()
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    integration = await registry.CreateIntegration(pb.CreateIntegrationRequest(
        vendor_id="sap", name="odd request id", owner="alice", description="d", scopes=["orders:read"]), metadata=alice)
    await registry.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=integration.id), metadata=bob)
    for label, odd in odd_ids("req").items():
        error = await refusal(registry.ActivateIntegration(
            pb.ActivateIntegrationRequest(integration_id=integration.id, request_id=odd), metadata=bob, timeout=20),
            frozenset({grpc.StatusCode.INVALID_ARGUMENT}), what=label)
        assert "request_id" in (error.details() or ""), label
    answer = await registry.ActivateIntegration(
        pb.ActivateIntegrationRequest(integration_id=integration.id, request_id="req-1:a_b.c"), metadata=bob, timeout=20)
    assert answer.integration.status == pb.INTEGRATION_STATUS_ACTIVE


async def test_odd_text_is_refused_or_kept_never_a_server_error(registry: registry_pb2_grpc.RegistryStub,
                                                                as_actor: AsActor) -> None:
    admin = as_actor("alice", new_org())
    for token in ("é", "a\x00b", "x" * 100_000):
        await refusal(registry.ListIntegrations(pb.ListIntegrationsRequest(page_token=token), metadata=admin),
                      frozenset({grpc.StatusCode.INVALID_ARGUMENT}), what=f"page_token {token[:10]!r}")
    for text in ("café ☕", "a\x00b", "line\r\nbreak"):
        try:
            created = await registry.CreateIntegration(pb.CreateIntegrationRequest(
                vendor_id="sap", name="odd text", owner="alice", description=text, scopes=["orders:read"]), metadata=admin)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, (text, exc.code(), exc.details())
        else:
            assert created.description == text


async def test_a_request_that_is_not_a_valid_message_is_invalid_argument(channel: grpc.aio.Channel, as_actor: AsActor) -> None:
    # What no stub of ours sends, but any gRPC client can: text that is not UTF-8, a cut message.
    admin = as_actor("alice", new_org())
    call = channel.unary_unary("/trellis.registry.v1.Registry/GetIntegration")
    for raw in (b"\x0a\x02\xff\xfe", b"\x0a\x05abc", b"\xff\xff\xff"):
        error = await refusal(call(raw, metadata=admin, timeout=20), frozenset({grpc.StatusCode.INVALID_ARGUMENT}))
        assert "not a valid message" in (error.details() or ""), raw
