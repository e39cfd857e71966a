"""The edge's gRPC calls to identity, registry and (when a built-in route needs it) webhooks,
made with its own service identity (`trellis_edge`), turned into edge values; gRPC errors are
translated here, once, into services.kit.errors classes carrying the peer's fields (e.g.
`error`), through the kit's one map (services.kit.rpc_errors)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.contracts.trellis.identity.v1 import identity_pb2, identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2, registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.edge.domain.model import ApiKeyInfo, IntegrationSnapshot, IPNetwork
from services.kit import errors
from services.kit.auth import ServiceTokenSource
from services.kit.rpc_errors import from_rpc_error
from services.kit.telemetry import peer_channel

log = logging.getLogger(__name__)

_STATUS_NAMES = {
    registry_pb2.INTEGRATION_STATUS_REQUESTED: "requested",
    registry_pb2.INTEGRATION_STATUS_APPROVED: "approved",
    registry_pb2.INTEGRATION_STATUS_ACTIVE: "active",
    registry_pb2.INTEGRATION_STATUS_SUSPENDED: "suspended",
    registry_pb2.INTEGRATION_STATUS_REVOKED: "revoked",
}


def translate(exc: grpc.aio.AioRpcError, peer: str) -> errors.TrellisError:
    """A kit error for a failed call (services.kit.rpc_errors: the peer's class and fields, with
    `peer`); anything not a refusal is Unavailable, logged here."""
    error = from_rpc_error(exc, peer=peer)
    if isinstance(error, errors.Unavailable):
        log.warning("%s call failed: %s %s", peer, exc.code().name, (exc.details() or "")[:200])
    return error


def snapshot_of(integration: registry_pb2.Integration) -> IntegrationSnapshot:
    networks: list[IPNetwork] = []
    for entry in integration.ip_allowlist:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            # The registry validates entries; one we cannot read must not widen access, so it
            # is kept as an address nobody can come from rather than dropped.
            log.error("integration %s has an unreadable allowlist entry %r", integration.id, entry)
            networks.append(ipaddress.ip_network("0.0.0.0/32"))
    return IntegrationSnapshot(
        id=integration.id, org_id=integration.org_id, status=_STATUS_NAMES.get(integration.status, "unknown"),
        scopes=frozenset(integration.scopes), rate_limit_per_minute=integration.rate_limit_per_minute,
        daily_quota=integration.daily_quota, allowlist=tuple(networks),
    )


class Peers:
    """Channels and stubs to identity and registry, with the edge's service token on each call.

    The webhooks channel exists only when `webhooks_addr` is given (a built-in route of the
    table calls webhooks); only then is webhooks part of the readiness check.
    """

    def __init__(self, identity_addr: str, registry_addr: str, tokens: ServiceTokenSource, *, timeout: float = 5.0,
                 webhooks_addr: str | None = None) -> None:
        self._identity_channel = peer_channel(identity_addr)
        self._registry_channel = peer_channel(registry_addr)
        self._identity = identity_pb2_grpc.IdentityStub(self._identity_channel)
        self._registry = registry_pb2_grpc.RegistryStub(self._registry_channel)
        self._webhooks_channel = peer_channel(webhooks_addr) if webhooks_addr else None
        self._webhooks = (webhooks_pb2_grpc.WebhooksStub(self._webhooks_channel)
                          if self._webhooks_channel else None)
        self._tokens = tokens
        self._timeout = timeout

    async def close(self) -> None:
        await self._identity_channel.close()
        await self._registry_channel.close()
        if self._webhooks_channel is not None:
            await self._webhooks_channel.close()

    async def call_webhooks(self, method: str, request: Message, request_id: str = "", *,
                            timeout: float | None = None) -> Any:
        """`Webhooks.<method>(request)` as the edge; a failure is a services.kit.errors class."""
        if self._webhooks is None:
            raise errors.Unavailable("the edge was started without a webhooks address", peer="webhooks")
        try:
            return await getattr(self._webhooks, method)(
                request, metadata=self._tokens.metadata(request_id), timeout=timeout or self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "webhooks") from exc

    async def verify_api_key(self, api_key: str, key_hash: str, request_id: str = "") -> ApiKeyInfo:
        try:
            found = await self._identity.VerifyApiKey(
                identity_pb2.VerifyApiKeyRequest(api_key=api_key),
                metadata=self._tokens.metadata(request_id), timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "identity") from exc
        return ApiKeyInfo(integration_id=found.integration_id, org_id=found.org_id,
                          client_ids=frozenset(found.client_ids), key_hash=key_hash)

    async def lookup_integration(self, integration_id: str, request_id: str = "") -> IntegrationSnapshot:
        try:
            found = await self._registry.LookupIntegration(
                registry_pb2.LookupIntegrationRequest(integration_id=integration_id),
                metadata=self._tokens.metadata(request_id), timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "registry") from exc
        return snapshot_of(found)

    async def issue_token(self, client_id: str, client_secret: str, scope: str, request_id: str = "") -> identity_pb2.IssueTokenResponse:
        try:
            issued: identity_pb2.IssueTokenResponse = await self._identity.IssueToken(
                identity_pb2.IssueTokenRequest(client_id=client_id, client_secret=client_secret, scope=scope),
                metadata=self._tokens.metadata(request_id), timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "identity") from exc
        return issued

    async def jwks_json(self) -> str:
        try:
            found: identity_pb2.GetJwksResponse = await self._identity.GetJwks(identity_pb2.GetJwksRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "identity") from exc
        return found.jwks_json

    async def health(self) -> dict[str, bool]:
        """Whether identity, registry (and webhooks, when used) answer their gRPC health checks with SERVING."""
        result = {}
        channels = [("identity", self._identity_channel), ("registry", self._registry_channel)]
        if self._webhooks_channel is not None:
            channels.append(("webhooks", self._webhooks_channel))
        for name, channel in channels:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                result[name] = answer.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                result[name] = False
        return result
