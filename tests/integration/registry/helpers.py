"""What the registry's gRPC tests share: actors, creating and activating integrations through
the stub, and asking identity whether an API key is live."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from services.contracts.trellis.identity.v1 import identity_pb2, identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc

Metadata = tuple[tuple[str, str], ...]
AsActor = Callable[..., Metadata]

ACTIVE = pb.INTEGRATION_STATUS_ACTIVE
SUSPENDED = pb.INTEGRATION_STATUS_SUSPENDED
REVOKED = pb.INTEGRATION_STATUS_REVOKED


def new_org() -> str:
    return f"org_{uuid.uuid4().hex[:12]}"


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def create(stub: registry_pb2_grpc.RegistryStub, md: Metadata, **fields: Any) -> pb.Integration:
    values: dict[str, Any] = {
        "vendor_id": "sap", "name": "SAP Procurement Sync", "owner": "olivia",
        "description": "purchase orders into SAP", "scopes": ["orders:read", "inventory:read"],
    }
    values.update(fields)
    return await stub.CreateIntegration(pb.CreateIntegrationRequest(**values), metadata=md)


async def activated(stub: registry_pb2_grpc.RegistryStub, requester: Metadata, approver: Metadata, **fields: Any) -> pb.ActivateIntegrationResponse:
    integration = await create(stub, requester, **fields)
    await stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=integration.id), metadata=approver)
    return await stub.ActivateIntegration(pb.ActivateIntegrationRequest(integration_id=integration.id), metadata=approver)


async def key_integration(identity: identity_pb2_grpc.IdentityStub, edge: Metadata, api_key: str) -> str:
    """The integration identity says the key belongs to; raises AioRpcError when it is dead."""
    verified = await identity.VerifyApiKey(identity_pb2.VerifyApiKeyRequest(api_key=api_key), metadata=edge)
    return verified.integration_id


async def assert_key_dead(identity: identity_pb2_grpc.IdentityStub, edge: Metadata, api_key: str) -> None:
    error = await refused(key_integration(identity, edge, api_key))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
