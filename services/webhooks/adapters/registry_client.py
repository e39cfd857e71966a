"""The webhooks service's `IntegrationsPort` over gRPC: the registry's stub, called as the acting
administrator (their token forwarded), and the registry's status codes translated once, here.

The registry answers only for the administrator's own organisation, so another organisation's
integration is NOT_FOUND exactly like one that never existed.
"""

from __future__ import annotations

import grpc

from services.contracts.trellis.registry.v1 import registry_pb2, registry_pb2_grpc
from services.kit import errors, rpc_errors
from services.kit.auth import Actor
from services.kit.service import actor_metadata

# The registry answers a primary-key read in milliseconds; past this the caller is told it is
# unreachable rather than kept waiting.
DEFAULT_TIMEOUT_SECONDS = 5.0

_STATUS_NAMES: dict[int, str] = {
    value: name.removeprefix("INTEGRATION_STATUS_").lower()
    for name, value in registry_pb2.IntegrationStatus.items()
    if value != registry_pb2.INTEGRATION_STATUS_UNSPECIFIED
}


class RegistryIntegrations:
    """Asks the registry which state an integration of the actor's organisation is in."""

    def __init__(self, stub: registry_pb2_grpc.RegistryStub, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._stub = stub
        self._timeout = timeout

    async def status(self, actor: Actor, integration_id: str, request_id: str = "") -> str:
        """requested, approved, active, suspended or revoked; NotFound when the actor's
        organisation has no such integration; Unavailable when the registry cannot answer."""
        try:
            integration = await self._stub.GetIntegration(
                registry_pb2.GetIntegrationRequest(integration_id=integration_id),
                metadata=actor_metadata(actor, request_id),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, integration_id) from exc
        status = _STATUS_NAMES.get(integration.status)
        if status is None:
            raise errors.Unavailable(f"the registry gave integration {integration_id} no known status", peer="registry")
        return status


def _translate(exc: grpc.aio.AioRpcError, integration_id: str) -> errors.TrellisError:
    """The registry's refusal through the kit's map, told in terms of the subscription's owner."""
    error = rpc_errors.from_rpc_error(exc, peer="registry")
    if isinstance(error, (errors.NotFound, errors.InvalidArgument)):
        # One answer for "not yours" and "no such id": nothing about other organisations leaks.
        return errors.NotFound(f"no integration {integration_id} in your organisation", integration_id=integration_id)
    if isinstance(error, errors.PermissionDenied):
        return errors.PermissionDenied(f"the registry refused to show integration {integration_id}: {error.message}",
                                       peer="registry")
    if isinstance(error, errors.Unauthenticated):
        return errors.Unauthenticated(f"the registry refused the actor token: {error.message}", peer="registry")
    return errors.Unavailable(
        f"the registry could not be reached to check integration {integration_id} ({rpc_errors.code_of(exc).name}); "
        "retry shortly",
        peer="registry",
    )
