"""The integration an administrator names as a subscription's owner is checked at the registry
(over real gRPC, as that administrator), with webhooks on SQLite and PostgreSQL: another
organisation's and one that does not exist are NOT_FOUND, a revoked one FAILED_PRECONDITION,
and nothing is stored for a refused one."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest

from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.auth import EDGE_PERMISSION
from services.kit.service import RunningService
from tests.integration.webhooks.conftest import Webhooks

Metadata = tuple[tuple[str, str], ...]


async def _refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def _integration(registry: registry_pb2_grpc.RegistryStub, md: Metadata) -> rpb.Integration:
    return await registry.CreateIntegration(rpb.CreateIntegrationRequest(
        vendor_id="sap", name="SAP sync", owner="alice", scopes=["webhooks:manage"]), metadata=md)


async def _stored(webhooks: Webhooks) -> dict[str, str]:
    listed = await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=webhooks.admin)
    return {s.id: s.integration_id for s in listed.subscriptions}


async def test_an_administrator_may_name_only_a_live_integration_of_their_own_organisation(
    start_webhooks: Callable[..., Awaitable[Webhooks]], registry_service: RunningService,
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: Callable[..., Metadata], database_url: str,
) -> None:
    org = f"org_{uuid.uuid4().hex[:12]}"
    webhooks = await start_webhooks(org=org, registry_addr=f"127.0.0.1:{registry_service.port}",
                                    webhooks_database_url=database_url)
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    url = "https://127.0.0.1:9/hooks"  # loopback is allowed in these tests; nothing is delivered

    requested = await _integration(registry_stub, alice)
    owned = await webhooks.subscribe(url, integration_id=requested.id)
    assert (owned.subscription.integration_id, owned.subscription.integration_suspended) == (requested.id, False)

    active = await _integration(registry_stub, alice)
    await registry_stub.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=active.id), metadata=bob)
    await registry_stub.ActivateIntegration(rpb.ActivateIntegrationRequest(integration_id=active.id), metadata=bob)
    await registry_stub.SuspendIntegration(rpb.SuspendIntegrationRequest(integration_id=active.id, reason="audit"),
                                           metadata=bob)
    held = await webhooks.subscribe(url, integration_id=active.id)
    assert held.subscription.integration_suspended  # the registry said so, before any event arrived

    others = await _integration(registry_stub, as_actor("mallory", f"org_{uuid.uuid4().hex[:12]}"))
    missing = f"int_{uuid.uuid4().hex[:26]}"
    answers = {}
    for integration_id in (others.id, missing):
        error = await _refused(webhooks.subscribe(url, integration_id=integration_id))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        answers[integration_id] = (error.details() or "").replace(integration_id, "<id>")
    assert answers[others.id] == answers[missing] == "no integration <id> in your organisation"

    revoked = await _integration(registry_stub, alice)
    await registry_stub.RevokeIntegration(rpb.RevokeIntegrationRequest(integration_id=revoked.id, reason="gone"),
                                          metadata=bob)
    error = await _refused(webhooks.subscribe(url, integration_id=revoked.id))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"integration {revoked.id} is revoked" in (error.details() or "")

    assert await _stored(webhooks) == {owned.subscription.id: requested.id, held.subscription.id: active.id}


async def test_without_the_registry_an_owned_subscription_is_unavailable_and_nothing_is_stored(
    start_webhooks: Callable[..., Awaitable[Webhooks]],
) -> None:
    webhooks = await start_webhooks()  # registry_addr points at a closed port
    error = await _refused(webhooks.subscribe("https://127.0.0.1:9/hooks", integration_id=f"int_{uuid.uuid4().hex}"))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "the registry could not be reached" in (error.details() or "")
    organisation_wide = await webhooks.subscribe("https://127.0.0.1:9/hooks")  # names no owner: no registry call
    assert await _stored(webhooks) == {organisation_wide.subscription.id: ""}


async def test_the_edge_names_its_own_verified_integration_without_asking_the_registry(
    start_webhooks: Callable[..., Awaitable[Webhooks]],
) -> None:
    webhooks = await start_webhooks()  # no registry: the partner path must not need one
    edge = webhooks.as_actor("trellis-edge", "trellis", [EDGE_PERMISSION])
    integration = f"int_{uuid.uuid4().hex}"
    created = await webhooks.subscribe("https://127.0.0.1:9/hooks", metadata=edge, org_id=webhooks.org,
                                       integration_id=integration)
    assert created.subscription.integration_id == integration
