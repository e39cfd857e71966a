"""The console's gRPC peers: one traced channel per service, and stubs that call as the
signed-in user (their actor token in `authorization`, the page's request id in `x-request-id`).

Errors leave a call translated once, as services.console.errors.Refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.console.errors import Refused, refusal
from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.logcontext import request_id_var
from services.kit.telemetry import peer_channel

if TYPE_CHECKING:
    from services.console.entrypoints.settings import ConsoleProcessSettings

_STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "registry": registry_pb2_grpc.RegistryStub,
    "identity": identity_pb2_grpc.IdentityStub,
    "webhooks": webhooks_pb2_grpc.WebhooksStub,
    "logs": logs_pb2_grpc.LogsStub,
}
HEALTH_TIMEOUT_SECONDS = 2.0
# A stream (an export of the API log) runs as long as the download does; it ends when the
# browser stops reading, so this only bounds a stream nobody reads yet nobody closes.
STREAM_TIMEOUT_SECONDS = 3600.0


class AsUser:
    """A service's stub whose every call carries one user's actor token and a deadline."""

    def __init__(self, stub: Any, token: str, timeout: float) -> None:
        self._stub, self._token, self._timeout = stub, token, timeout

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = [("authorization", f"Bearer {self._token}")]
        request_id = request_id_var.get()
        if request_id:
            metadata.append(("x-request-id", request_id))
        return tuple(metadata)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        rpc = getattr(self._stub, method)

        async def call(request: Any, *, timeout: float | None = None) -> Any:
            try:
                return await rpc(request, metadata=self._metadata(), timeout=timeout or self._timeout)
            except grpc.RpcError as exc:
                raise Refused(refusal(exc)) from None

        return call

    async def stream(self, method: str, request: Any, *, timeout: float = STREAM_TIMEOUT_SECONDS) -> AsyncGenerator[Any, None]:
        """A server-streaming call's messages, read one at a time as the caller asks for them (gRPC's
        flow control holds the rest at the service); a refusal, even mid-stream, is Refused. Closing
        the iterator early cancels the call."""
        call = getattr(self._stub, method)(request, metadata=self._metadata(), timeout=timeout)
        try:
            async for message in call:
                yield message
        except grpc.RpcError as exc:
            raise Refused(refusal(exc)) from None
        finally:
            call.cancel()


class Peers:
    """Channels to the four services; `as_user(token)` gives their stubs for one user.

    `required` names the services the pages need: /readyz checks those (identity is called by
    no page)."""

    def __init__(self, settings: ConsoleProcessSettings, *, required: tuple[str, ...] = ("registry", "webhooks", "logs")) -> None:
        self._timeout = settings.console_peer_timeout_seconds
        self._channels = {name: peer_channel(getattr(settings, f"{name}_addr")) for name in _STUBS}
        self._stubs = {name: make(self._channels[name]) for name, make in _STUBS.items()}
        self._required = required

    def as_user(self, service: str, token: str) -> AsUser:
        return AsUser(self._stubs[service], token, self._timeout)

    async def health(self) -> dict[str, bool]:
        """service -> whether it answers SERVING, for each required service."""

        async def one(name: str) -> bool:
            try:
                answer = await health_pb2_grpc.HealthStub(self._channels[name]).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_SECONDS)
            except grpc.RpcError:
                return False
            serving: bool = answer.status == health_pb2.HealthCheckResponse.SERVING
            return serving

        results = await asyncio.gather(*(one(name) for name in self._required))
        return dict(zip(self._required, results, strict=True))

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
