"""What the edge relies on: `LookupIntegration` reads any organisation's integration with the
edge's permission only, and every change is on the bus before the call that made it returns
(the edge drops its caches on those events, so the next partner request sees the change)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION
from services.kit.natsproc import NatsServer
from tests.integration.registry.helpers import ACTIVE, SUSPENDED, AsActor, Metadata, activated, create, new_org, refused

# --- LookupIntegration ------------------------------------------------------------------------------


async def test_the_edge_looks_up_any_organisations_integration_with_current_settings(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor, edge: Metadata
) -> None:
    org = new_org()
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    integration = (await activated(registry_stub, alice, bob, scopes=["orders:read", "orders:write"])).integration
    lookup = pb.LookupIntegrationRequest(integration_id=integration.id)

    seen = await registry_stub.LookupIntegration(lookup, metadata=edge)
    assert (seen.id, seen.org_id, seen.status) == (integration.id, org, ACTIVE)  # the edge's own org is another

    await registry_stub.UpdateIntegration(
        pb.UpdateIntegrationRequest(
            integration_id=integration.id,
            update_mask=["scopes", "rate_limit_per_minute", "daily_quota", "ip_allowlist"],
            scopes=["orders:read"], rate_limit_per_minute=5, daily_quota=1_000, ip_allowlist=["192.0.2.0/24", "2001:db8::1"],
        ),
        metadata=alice,
    )
    seen = await registry_stub.LookupIntegration(lookup, metadata=edge)
    assert (list(seen.scopes), seen.rate_limit_per_minute, seen.daily_quota, list(seen.ip_allowlist)) == (
        ["orders:read"], 5, 1_000, ["192.0.2.0/24", "2001:db8::1/128"],
    )

    await registry_stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=integration.id, reason="abuse"), metadata=bob)
    seen = await registry_stub.LookupIntegration(lookup, metadata=edge)
    assert (seen.status, seen.org_id) == (SUSPENDED, org)


async def test_lookup_needs_the_edge_permission_not_the_admin_one(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    org = new_org()
    integration = await create(registry_stub, as_actor("alice", org))
    lookup = pb.LookupIntegrationRequest(integration_id=integration.id)
    for actor in (as_actor("alice", org, [ADMIN_PERMISSION]), as_actor("qa", org, ["qa_access"])):
        error = await refused(registry_stub.LookupIntegration(lookup, metadata=actor))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert EDGE_PERMISSION in (error.details() or "")


async def test_lookup_of_an_unknown_integration_is_not_found(registry_stub: registry_pb2_grpc.RegistryStub, edge: Metadata) -> None:
    error = await refused(registry_stub.LookupIntegration(pb.LookupIntegrationRequest(integration_id="int_nobody"), metadata=edge))
    assert error.code() is grpc.StatusCode.NOT_FOUND


# --- events are on the bus when the call returns -------------------------------------------------------


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


async def last_integration_event(js: JetStreamContext, kind: str) -> events_pb2.IntegrationChanged:
    """The newest `trellis.integration.<kind>` in the stream, read at once (no waiting)."""
    msg = await js.get_last_msg("TRELLIS", f"trellis.integration.{kind}")
    return events_pb2.IntegrationChanged.FromString(msg.data)


async def last_credentials_event(js: JetStreamContext, kind: str) -> events_pb2.CredentialsChanged:
    msg = await js.get_last_msg("TRELLIS", f"trellis.credentials.{kind}")
    return events_pb2.CredentialsChanged.FromString(msg.data)


async def test_every_change_is_in_the_stream_when_its_call_returns(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor, js: JetStreamContext
) -> None:
    # The relay would publish within its poll anyway; each check below runs right after the
    # call returns, so only a call that waited for the PubAck passes it.
    org = new_org()
    alice, bob, carol = (as_actor(u, org) for u in ("alice", "bob", "carol"))
    integration = await create(registry_stub, alice)
    iid = integration.id
    assert (await last_integration_event(js, "created")).integration_id == iid

    await registry_stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=iid), metadata=bob)
    assert (await last_integration_event(js, "approved")).integration_id == iid

    await registry_stub.ActivateIntegration(pb.ActivateIntegrationRequest(integration_id=iid), metadata=bob)
    assert (await last_integration_event(js, "activated")).integration_id == iid
    assert (await last_credentials_event(js, "issued")).integration_id == iid

    await registry_stub.UpdateIntegration(
        pb.UpdateIntegrationRequest(integration_id=iid, update_mask=["rate_limit_per_minute"], rate_limit_per_minute=7), metadata=alice
    )
    updated = await last_integration_event(js, "updated")
    assert (updated.integration_id, updated.rate_limit_per_minute) == (iid, 7)

    await registry_stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=iid), metadata=alice)
    assert (await last_integration_event(js, "api_key_regenerated")).integration_id == iid
    assert (await last_credentials_event(js, "api_key_regenerated")).integration_id == iid

    await registry_stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=iid, reason="incident"), metadata=carol)
    suspended = await last_integration_event(js, "suspended")
    assert (suspended.integration_id, suspended.status) == (iid, "suspended")
    assert (await last_credentials_event(js, "revoked")).integration_id == iid

    await registry_stub.RevokeIntegration(pb.RevokeIntegrationRequest(integration_id=iid, reason="done"), metadata=alice)
    assert (await last_integration_event(js, "revoked")).integration_id == iid
