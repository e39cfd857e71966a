"""The registry's `CredentialsPort` over gRPC: identity's stub, called with the acting
administrator's token forwarded, and identity's status codes translated once, here."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from services.contracts.trellis.identity.v1 import identity_pb2, identity_pb2_grpc
from services.kit import errors
from services.kit.auth import Actor
from services.kit.prototime import field_datetime
from services.kit.rpc_errors import from_rpc_error
from services.kit.service import actor_metadata
from services.registry.application.ports import IssuedCredentials, RegeneratedApiKey

def _translate(exc: grpc.aio.AioRpcError, what: str) -> errors.TrellisError:
    """Identity's refusal as our own error, with identity's fields (services.kit.rpc_errors);
    anything transport-like is Unavailable."""
    error = from_rpc_error(exc, peer="identity")
    return error.rephrased(f"identity could not {what}: {error.message}")


class IdentityCredentials:
    """Issues, revokes and regenerates an integration's credentials at identity."""

    def __init__(self, stub: identity_pb2_grpc.IdentityStub, *, timeout: float = 10.0) -> None:
        self._stub = stub
        self._timeout = timeout

    async def issue(self, actor: Actor, integration_id: str, scopes: Sequence[str], request_id: str) -> IssuedCredentials:
        try:
            response = await self._stub.IssueCredentials(
                identity_pb2.IssueCredentialsRequest(integration_id=integration_id, scopes=list(scopes), request_id=request_id),
                metadata=actor_metadata(actor, request_id),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "issue credentials") from exc
        c = response.credentials
        return IssuedCredentials(
            api_key_prefix=c.api_key_prefix,
            client_id=c.client_id,
            api_key=c.api_key,
            client_secret=c.client_secret,
            token_url=c.token_url,
            issuer=c.issuer,
            audience=c.audience,
            scopes=tuple(c.scopes),
            issued_at=field_datetime(c, "issued_at"),
        )

    async def revoke(self, actor: Actor, integration_id: str, reason: str, request_id: str = "") -> None:
        try:
            await self._stub.RevokeCredentials(
                identity_pb2.RevokeCredentialsRequest(integration_id=integration_id, reason=reason),
                metadata=actor_metadata(actor, request_id),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "revoke credentials") from exc

    async def regenerate_api_key(self, actor: Actor, integration_id: str, request_id: str = "") -> RegeneratedApiKey:
        try:
            response = await self._stub.RegenerateApiKey(
                identity_pb2.RegenerateApiKeyRequest(integration_id=integration_id),
                metadata=actor_metadata(actor, request_id),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "regenerate the API key") from exc
        return RegeneratedApiKey(api_key_prefix=response.api_key_prefix, api_key=response.api_key)
