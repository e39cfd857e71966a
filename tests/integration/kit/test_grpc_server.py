"""The shared gRPC bootstrap: health, reflection, actor tokens and error mapping on a real server."""

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.kit import errors
from services.kit.auth import ActorVerifier, current_actor
from services.kit.grpc_server import create_server
from services.kit.rpc_errors import from_rpc_error
from services.kit.service import RunningService

SERVICE = "trellis.test.Echo"


async def _say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    actor = current_actor()
    if request == b"precondition":
        raise errors.FailedPrecondition("integration is revoked", state="revoked")
    if request == b"crash":
        raise RuntimeError("database password is hunter2")
    return f"{actor.user_id}@{actor.org_id}".encode()


async def _public(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"anyone"


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(_say),
        "Public": grpc.unary_unary_rpc_method_handler(_public),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
async def channel(actor_keys) -> AsyncIterator[grpc.aio.Channel]:
    from tests.conftest import ACTOR_AUDIENCE, ACTOR_ISSUER

    verifier = ActorVerifier(issuer=ACTOR_ISSUER, audience=ACTOR_AUDIENCE, public_key_pem=actor_keys[1].read_bytes())
    server, port, health = create_server(
        "127.0.0.1:0", register=_register, service_names=[SERVICE], verifier=verifier, public_methods=[f"/{SERVICE}/Public"]
    )
    service = await RunningService("echo", server, port, health, [SERVICE]).start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await service.stop(0)


async def test_health_reports_serving_without_a_token(channel):
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for reply in stub.ServerReflectionInfo(requests()):
        names |= {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_the_verified_actor_reaches_the_handler(channel, as_actor):
    reply = await channel.unary_unary(f"/{SERVICE}/Say")(b"hi", metadata=as_actor("alice", "org_a"))
    assert reply == b"alice@org_a"


async def test_a_call_without_a_token_is_unauthenticated(channel):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Say")(b"hi")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_from_another_signer_is_unauthenticated(channel):
    from services.kit.auth import generate_actor_key, mint_actor_token
    from tests.conftest import ACTOR_AUDIENCE, ACTOR_ISSUER

    forged = mint_actor_token(generate_actor_key()[0], issuer=ACTOR_ISSUER, audience=ACTOR_AUDIENCE,
                              user_id="mallory", org_id="org_a", permissions=["administration_integrations_access"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Say")(b"hi", metadata=(("authorization", f"Bearer {forged}"),))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_public_methods_need_no_token(channel):
    assert await channel.unary_unary(f"/{SERVICE}/Public")(b"") == b"anyone"


async def test_domain_errors_map_to_their_status_with_fields(channel, as_actor):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Say")(b"precondition", metadata=as_actor("alice", "org_a"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "integration is revoked"
    assert from_rpc_error(info.value).fields == {"state": "revoked"}


async def test_unexpected_errors_are_internal_and_leak_nothing(channel, as_actor):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Say")(b"crash", metadata=as_actor("alice", "org_a"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (info.value.details() or "")
