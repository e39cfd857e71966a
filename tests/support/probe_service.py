"""A gRPC service of one raw-bytes method, served by the kit's server (actor tokens, tracing,
error mapping) on port 0: for tests of what the kit gives every call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from services.kit.auth import ActorVerifier
from services.kit.grpc_server import create_server
from services.kit.service import RunningService

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


@contextlib.asynccontextmanager
async def probe_service(service_name: str, method: str, handler: Handler, *, actor_public_key_pem: bytes) -> AsyncIterator[int]:
    """Serves `/<service_name>/<method>` on 127.0.0.1; yields the port."""
    from tests.conftest import ACTOR_AUDIENCE, ACTOR_ISSUER

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            service_name, {method: grpc.unary_unary_rpc_method_handler(handler)}),))

    verifier = ActorVerifier(issuer=ACTOR_ISSUER, audience=ACTOR_AUDIENCE, public_key_pem=actor_public_key_pem)
    server, port, health = create_server("127.0.0.1:0", register=register, service_names=[service_name], verifier=verifier)
    service = await RunningService(service_name, server, port, health, [service_name]).start()
    try:
        yield port
    finally:
        await service.stop(0)
