"""Every error of our tree, raised in a handler with fields of any text, reaches a client over a
real channel (asyncio and sync, unary and streaming) as the same class, message and fields."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from services.contracts.trellis.identity.v1 import identity_pb2
from services.kit import errors
from services.kit.auth import ActorVerifier
from services.kit.grpc_server import create_server
from services.kit.rpc_errors import CODES, MAX_FIELD_BYTES, MAX_MESSAGE_BYTES, from_rpc_error
from services.kit.service import RunningService
from tests.conftest import ACTOR_AUDIENCE, ACTOR_ISSUER

SERVICE = "trellis.test.Errors"
IDENTITY = identity_pb2.DESCRIPTOR.services_by_name["Identity"].full_name
CLASSES = {cls.__name__: cls for cls in CODES}
FIELDS = {
    "integration_id": "int_é",
    "subscription_id": "whk_\U0001F600",
    "delivery_id": "dlv_a\x00b",
    "reason": "line\r\nbreak and a space",
    "state": "revoked",
    "error": "invalid_scope",
}


def _raise(request: bytes) -> None:
    wanted = json.loads(request)
    raise CLASSES[wanted["class"]](wanted["message"], **wanted["fields"])


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    _raise(request)
    return b""


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    _raise(request)


async def _credential_info(request: identity_pb2.GetCredentialInfoRequest, context: grpc.aio.ServicerContext) -> None:
    _raise(request.integration_id.encode())  # stands in for identity, so the CLI's own stub calls it


def _register(server: grpc.aio.Server) -> None:
    handlers = {"Unary": grpc.unary_unary_rpc_method_handler(_unary),
                "Stream": grpc.unary_stream_rpc_method_handler(_stream)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    identity = {"GetCredentialInfo": grpc.unary_unary_rpc_method_handler(
        _credential_info, request_deserializer=identity_pb2.GetCredentialInfoRequest.FromString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(IDENTITY, identity),))


@dataclass
class Server:
    address: str
    metadata: tuple[tuple[str, str], ...]


@pytest.fixture
async def server(actor_keys: Any, as_actor: Any) -> AsyncIterator[Server]:
    verifier = ActorVerifier(issuer=ACTOR_ISSUER, audience=ACTOR_AUDIENCE, public_key_pem=actor_keys[1].read_bytes())
    grpc_server, port, health = create_server("127.0.0.1:0", register=_register, service_names=[SERVICE], verifier=verifier)
    service = await RunningService("errors", grpc_server, port, health, [SERVICE]).start()
    yield Server(f"127.0.0.1:{port}", as_actor("alice", "org_a"))
    await service.stop(0)


def _ask(cls: type[errors.TrellisError], message: str, fields: dict[str, str]) -> bytes:
    return json.dumps({"class": cls.__name__, "message": message, "fields": fields}).encode()


@pytest.mark.parametrize("cls", list(CODES), ids=lambda c: c.__name__)
async def test_every_error_class_round_trips_with_its_fields_over_an_asyncio_channel(server: Server,
                                                                                     cls: type[errors.TrellisError]) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Unary")(_ask(cls, "no integration int_é", FIELDS), metadata=server.metadata)
    assert caught.value.code() is CODES[cls]
    back = from_rpc_error(caught.value)
    assert type(back) is cls
    assert back.message == "no integration int_é"
    assert back.fields == FIELDS


@pytest.mark.parametrize("cls", list(CODES), ids=lambda c: c.__name__)
async def test_every_error_class_round_trips_over_a_sync_channel_as_the_cli_calls(server: Server,
                                                                                 cls: type[errors.TrellisError]) -> None:
    def call() -> grpc.RpcError:
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(f"/{SERVICE}/Unary")(_ask(cls, "état inconnu", FIELDS), metadata=server.metadata, timeout=10)
            return caught.value

    back = from_rpc_error(await asyncio.to_thread(call), peer="echo")
    assert type(back) is cls and back.message == "état inconnu"
    assert back.fields == {**FIELDS, "peer": "echo"}


async def test_an_error_mid_stream_round_trips_after_the_first_items(server: Server) -> None:
    received: list[bytes] = []
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for item in channel.unary_stream(f"/{SERVICE}/Stream")(
                    _ask(errors.InvalidArgument, "bad checkpoint", {"field": "checkpoint é"}), metadata=server.metadata):
                received.append(item)
    assert received == [b"first"]
    back = from_rpc_error(caught.value)
    assert isinstance(back, errors.InvalidArgument) and back.fields == {"field": "checkpoint é"}


async def test_any_id_however_long_is_sent_clipped_never_as_a_transport_error(server: Server) -> None:
    odd = "int_" + "é" * 50_000
    async with grpc.aio.insecure_channel(server.address) as channel:
        for _ in range(20):  # gRPC refuses oversized metadata at random between its soft and hard limits
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(f"/{SERVICE}/Unary")(
                    _ask(errors.NotFound, f"integration {odd} not found", {"integration_id": odd, "other": odd}),
                    metadata=server.metadata)
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND, caught.value.details()[:200]
    back = from_rpc_error(caught.value)
    assert isinstance(back, errors.NotFound)
    assert len(back.message.encode()) <= MAX_MESSAGE_BYTES
    assert back.message.startswith("integration int_éé") and back.message.endswith("éé not found") and "…" in back.message
    assert len(back.fields["integration_id"].encode()) <= MAX_FIELD_BYTES
    assert back.fields["integration_id"].startswith("int_é")


async def test_control_characters_in_a_message_arrive_as_escapes(server: Server) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Unary")(
                _ask(errors.NotFound, "no integration a\x00b\x1b[31m\n", {"integration_id": "a\x00b"}), metadata=server.metadata)
    back = from_rpc_error(caught.value)
    assert back.message == "no integration a\\x00b\\x1b[31m\\n"
    assert back.fields == {"integration_id": "a\x00b"}  # fields are data: sent as they are


def test_a_status_that_is_not_ours_reads_back_by_its_code() -> None:
    class Failed(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode, details: str) -> None:
            self._code, self._details = code, details

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return self._details

        def trailing_metadata(self) -> Iterator[tuple[str, Any]]:
            return iter(())

    refused = from_rpc_error(Failed(grpc.StatusCode.NOT_FOUND, "gone"), peer="registry")
    assert type(refused) is errors.NotFound and refused.fields == {"peer": "registry"}
    late = from_rpc_error(Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), peer="webhooks")
    assert type(late) is errors.Unavailable and late.fields == {"grpc_status": "DEADLINE_EXCEEDED", "peer": "webhooks"}
    crashed = from_rpc_error(Failed(grpc.StatusCode.INTERNAL, "internal error"))
    assert type(crashed) is errors.Unavailable and crashed.fields == {"grpc_status": "INTERNAL"}


async def test_every_peer_client_reads_the_same_class_and_fields_back(server: Server) -> None:
    from services.cli.client import ServiceClient, ServiceError
    from services.edge.adapters.peers import translate
    from services.registry.adapters.identity_client import _translate as registry_translate

    ask = _ask(errors.AlreadyExists, "external client é is registered to another integration", {"client_id": "é"})
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Unary")(ask, metadata=server.metadata)
    at_edge = translate(caught.value, "identity")
    assert type(at_edge) is errors.AlreadyExists and at_edge.fields == {"client_id": "é", "peer": "identity"}
    at_registry = registry_translate(caught.value, "register the client")
    assert type(at_registry) is errors.AlreadyExists and at_registry.fields == {"client_id": "é", "peer": "identity"}
    assert at_registry.message == "identity could not register the client: external client é is registered to another integration"

    def from_the_cli() -> BaseException:
        with grpc.insecure_channel(server.address) as channel:
            client = ServiceClient("identity", server.address, channel, lambda: server.metadata)
            with pytest.raises(ServiceError) as refused:
                client.GetCredentialInfo(identity_pb2.GetCredentialInfoRequest(integration_id=ask.decode()))
            return refused.value

    at_cli = await asyncio.to_thread(from_the_cli)
    assert isinstance(at_cli, ServiceError) and at_cli.code is grpc.StatusCode.ALREADY_EXISTS
    assert type(at_cli.error) is errors.AlreadyExists and at_cli.error.fields == {"client_id": "é", "peer": "identity"}
    assert str(at_cli) == "ALREADY_EXISTS: external client é is registered to another integration"
