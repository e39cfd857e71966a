"""The registry over real gRPC channels, with the real identity service, a real nats-server and
SQLite: the lifecycle end to end, credentials checked at identity, security, events, limits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from nats.js.api import DeliverPolicy

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import generate_actor_key, mint_actor_token
from services.kit.natsproc import NatsServer
from services.kit.service import RunningService
from tests.support.settings import Settings
from tests.conftest import ACTOR_AUDIENCE, ACTOR_ISSUER
from tests.integration.registry.helpers import (
    ACTIVE,
    REVOKED,
    SUSPENDED,
    AsActor,
    Metadata,
    activated,
    assert_key_dead,
    create,
    key_integration,
    new_org,
    refused,
)
from tests.support.services import channel_to, start_service
from tests.support.waiting import eventually

async def test_full_lifecycle_with_credentials_checked_at_identity(
    registry_stub: registry_pb2_grpc.RegistryStub,
    identity_stub: identity_pb2_grpc.IdentityStub,
    as_actor: AsActor,
    edge: Metadata,
    make_settings: Callable[..., Settings],
) -> None:
    org = new_org()
    alice, bob, carol, dave = (as_actor(u, org) for u in ("alice", "bob", "carol", "dave"))

    created = await create(registry_stub, alice, scopes=["Orders:Read", "crm:read"], ip_allowlist=["10.0.0.1"])
    assert created.status == pb.INTEGRATION_STATUS_REQUESTED
    assert (list(created.scopes), list(created.sensitive_scopes)) == (["crm:read", "orders:read"], ["crm:read"])
    assert (created.rate_limit_per_minute, list(created.ip_allowlist), created.requested_by) == (60, ["10.0.0.1/32"], "alice")

    approved = await registry_stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob)
    assert (approved.status, approved.approved_by) == (pb.INTEGRATION_STATUS_APPROVED, "bob")

    first = await registry_stub.ActivateIntegration(
        pb.ActivateIntegrationRequest(integration_id=created.id, request_id=f"req-{uuid.uuid4().hex}"), metadata=bob
    )
    key = first.credentials.api_key
    assert first.integration.status == ACTIVE
    assert key.startswith("grq_live_") and first.credentials.client_secret
    assert first.integration.api_key_prefix == key[:16] == first.credentials.api_key_prefix
    assert first.integration.client_id == first.credentials.client_id
    assert await key_integration(identity_stub, edge, key) == created.id

    shown = await registry_stub.GetIntegration(pb.GetIntegrationRequest(integration_id=created.id), metadata=alice)
    assert shown.api_key_prefix == key[:16]
    assert key.encode() not in shown.SerializeToString()  # returned once, never again

    updated = await registry_stub.UpdateIntegration(
        pb.UpdateIntegrationRequest(
            integration_id=created.id, update_mask=["scopes", "rate_limit_per_minute", "owner"],
            scopes=["orders:read", "orders:write"], rate_limit_per_minute=600, owner="new owner", description="ignored",
        ),
        metadata=alice,
    )
    assert (list(updated.scopes), updated.rate_limit_per_minute, updated.owner, updated.description) == (
        ["orders:read", "orders:write"], 600, "new owner", "purchase orders into SAP",
    )

    suspended = await registry_stub.SuspendIntegration(
        pb.SuspendIntegrationRequest(integration_id=created.id, reason="unexpected traffic"), metadata=carol
    )
    assert (suspended.status, suspended.suspended_by, suspended.suspension_reason) == (SUSPENDED, "carol", "unexpected traffic")
    await assert_key_dead(identity_stub, edge, key)  # right after the RPC returned

    error = await refused(registry_stub.ReactivateIntegration(pb.ReactivateIntegrationRequest(integration_id=created.id), metadata=carol))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "different administrator" in (error.details() or "")

    second = await registry_stub.ReactivateIntegration(pb.ReactivateIntegrationRequest(integration_id=created.id), metadata=dave)
    new_key = second.credentials.api_key
    assert second.integration.status == ACTIVE
    assert new_key != key and second.integration.api_key_prefix == new_key[:16]
    assert await key_integration(identity_stub, edge, new_key) == created.id
    await assert_key_dead(identity_stub, edge, key)

    revoked = await registry_stub.RevokeIntegration(
        pb.RevokeIntegrationRequest(integration_id=created.id, reason="project ended"), metadata=alice
    )
    assert revoked.status == REVOKED
    await assert_key_dead(identity_stub, edge, new_key)

    target = pb.ApproveIntegrationRequest(integration_id=created.id)
    for call in (
        registry_stub.ApproveIntegration(target, metadata=bob),
        registry_stub.ActivateIntegration(pb.ActivateIntegrationRequest(integration_id=created.id), metadata=bob),
        registry_stub.UpdateIntegration(pb.UpdateIntegrationRequest(integration_id=created.id, update_mask=["owner"], owner="x"), metadata=bob),
        registry_stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=created.id, reason="r"), metadata=bob),
        registry_stub.ReactivateIntegration(pb.ReactivateIntegrationRequest(integration_id=created.id), metadata=bob),
        registry_stub.RevokeIntegration(pb.RevokeIntegrationRequest(integration_id=created.id), metadata=bob),
        registry_stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=created.id), metadata=bob),
    ):
        error = await refused(call)
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "revoked" in (error.details() or "")

    history = await registry_stub.GetIntegrationHistory(pb.GetIntegrationHistoryRequest(integration_id=created.id), metadata=alice)
    assert [(e.action, e.actor_id) for e in history.entries] == [
        ("created", "alice"), ("approved", "bob"), ("activated", "bob"), ("updated", "alice"),
        ("suspended", "carol"), ("reactivated", "dave"), ("revoked", "alice"),
    ]
    assert history.entries[4].reason == "unexpected traffic"
    assert (history.entries[4].from_status, history.entries[4].to_status) == (ACTIVE, SUSPENDED)

    # Plain text of a secret never reaches the registry's database.
    db = Path(make_settings().database_url("registry").split("///", 1)[1])
    stored = b"".join(p.read_bytes() for p in db.parent.glob(f"{db.name}*"))
    for secret in (key, new_key, first.credentials.client_secret, second.credentials.client_secret):
        assert secret.encode() not in stored
    assert new_key[:16].encode() in stored


async def test_regenerating_the_api_key_kills_the_old_one(
    registry_stub: registry_pb2_grpc.RegistryStub, identity_stub: identity_pb2_grpc.IdentityStub,
    as_actor: AsActor, edge: Metadata,
) -> None:
    org = new_org()
    first = await activated(registry_stub, as_actor("alice", org), as_actor("bob", org))
    regenerated = await registry_stub.RegenerateApiKey(
        pb.RegenerateApiKeyRequest(integration_id=first.integration.id), metadata=as_actor("alice", org)
    )
    assert regenerated.integration.api_key_prefix == regenerated.api_key[:16] == regenerated.api_key_prefix
    assert await key_integration(identity_stub, edge, regenerated.api_key) == first.integration.id
    await assert_key_dead(identity_stub, edge, first.credentials.api_key)


async def test_lifecycle_publishes_integration_and_audit_events_in_order(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor, nats_server: NatsServer
) -> None:
    org = new_org()
    alice, bob, carol = (as_actor(u, org) for u in ("alice", "bob", "carol"))
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    changed: list[tuple[str, events_pb2.IntegrationChanged]] = []
    audits: list[tuple[str, events_pb2.AuditEvent]] = []

    async def on_changed(msg: Any) -> None:
        changed.append((msg.subject, events_pb2.IntegrationChanged.FromString(msg.data)))

    async def on_audit(msg: Any) -> None:
        audits.append((msg.subject, events_pb2.AuditEvent.FromString(msg.data)))

    try:
        # Ephemeral consumers that start now: earlier tests' events on the shared server are skipped.
        await js.subscribe("trellis.integration.>", cb=on_changed, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
        await js.subscribe("trellis.audit.registry.integration.>", cb=on_audit, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)

        integration = await create(registry_stub, alice)
        iid = integration.id
        await registry_stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=iid), metadata=bob)
        await registry_stub.ActivateIntegration(pb.ActivateIntegrationRequest(integration_id=iid), metadata=bob)
        await registry_stub.UpdateIntegration(
            pb.UpdateIntegrationRequest(integration_id=iid, update_mask=["daily_quota"], daily_quota=10_000), metadata=alice
        )
        await registry_stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=iid, reason="audit"), metadata=carol)
        await registry_stub.ReactivateIntegration(pb.ReactivateIntegrationRequest(integration_id=iid), metadata=bob)
        await registry_stub.RevokeIntegration(pb.RevokeIntegrationRequest(integration_id=iid, reason="done"), metadata=alice)

        kinds = ["created", "approved", "activated", "updated", "suspended", "reactivated", "revoked"]
        mine_changed = lambda: [(s, e) for s, e in changed if e.integration_id == iid]  # noqa: E731
        mine_audit = lambda: [(s, e) for s, e in audits if e.object_id == iid]  # noqa: E731

        async def all_arrived() -> bool:
            return len(mine_changed()) >= len(kinds) and len(mine_audit()) >= len(kinds)

        await eventually(all_arrived, what="every integration and audit event")
    finally:
        await nc.close()

    assert [s for s, _ in mine_changed()] == [f"trellis.integration.{k}" for k in kinds]
    assert [e.kind for _, e in mine_changed()] == kinds
    assert [e.status for _, e in mine_changed()] == ["requested", "approved", "active", "active", "suspended", "active", "revoked"]
    assert all(e.org_id == org for _, e in mine_changed())
    assert [s for s, _ in mine_audit()] == [f"trellis.audit.registry.integration.{k}" for k in kinds]
    audit_events = [e for _, e in mine_audit()]
    assert [(e.action, e.actor_id) for e in audit_events] == [
        (f"integration.{k}", actor) for k, actor in zip(kinds, ["alice", "bob", "bob", "alice", "carol", "bob", "alice"])
    ]
    suspended = audit_events[4]
    assert (suspended.service, suspended.object_type, suspended.reason) == ("registry", "integration", "audit")
    assert '"status": "active"' in suspended.before_json and '"status": "suspended"' in suspended.after_json
    assert audit_events[0].before_json == "" and suspended.occurred_at.seconds > 0


async def test_another_organisations_integration_is_not_found(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    org = new_org()
    mine = await activated(registry_stub, as_actor("alice", org), as_actor("bob", org))
    iid = mine.integration.id
    eve = as_actor("eve", new_org())
    for call in (
        registry_stub.GetIntegration(pb.GetIntegrationRequest(integration_id=iid), metadata=eve),
        registry_stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=iid), metadata=eve),
        registry_stub.ActivateIntegration(pb.ActivateIntegrationRequest(integration_id=iid), metadata=eve),
        registry_stub.UpdateIntegration(pb.UpdateIntegrationRequest(integration_id=iid, update_mask=["owner"], owner="eve"), metadata=eve),
        registry_stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=iid, reason="mine"), metadata=eve),
        registry_stub.ReactivateIntegration(pb.ReactivateIntegrationRequest(integration_id=iid), metadata=eve),
        registry_stub.RevokeIntegration(pb.RevokeIntegrationRequest(integration_id=iid), metadata=eve),
        registry_stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=iid), metadata=eve),
        registry_stub.GetIntegrationHistory(pb.GetIntegrationHistoryRequest(integration_id=iid), metadata=eve),
    ):
        assert (await refused(call)).code() is grpc.StatusCode.NOT_FOUND
    listed = await registry_stub.ListIntegrations(pb.ListIntegrationsRequest(), metadata=eve)
    assert iid not in [i.id for i in listed.integrations]
    still = await registry_stub.GetIntegration(pb.GetIntegrationRequest(integration_id=iid), metadata=as_actor("alice", org))
    assert (still.status, still.owner) == (ACTIVE, "olivia")


async def test_approving_your_own_request_is_permission_denied(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    org = new_org()
    integration = await create(registry_stub, as_actor("alice", org))
    error = await refused(registry_stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=integration.id), metadata=as_actor("alice", org)))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "cannot approve it" in (error.details() or "")


async def test_actor_without_the_permission_is_permission_denied_but_may_read_catalogues(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    org = new_org()
    viewer = as_actor("vic", org, ["qa_access"])
    error = await refused(create(registry_stub, viewer))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "administration_integrations_access" in (error.details() or "")
    integration = await create(registry_stub, as_actor("alice", org))
    error = await refused(registry_stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=integration.id), metadata=viewer))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    vendors = await registry_stub.ListVendors(pb.ListVendorsRequest(), metadata=viewer)
    assert [v.id for v in vendors.vendors][:3] == ["sap", "salesforce", "quickbooks_online"]
    assert len(vendors.vendors) == 12
    scopes = await registry_stub.ListScopes(pb.ListScopesRequest(), metadata=viewer)
    by_id = {c.id: c for c in scopes.categories}
    assert (list(by_id["sensors"].actions), by_id["crm"].sensitivity, by_id["finance"].read_only) == (["write"], "PII", True)


async def test_bad_actor_tokens_are_unauthenticated(
    registry_stub: registry_pb2_grpc.RegistryStub, actor_keys: tuple[bytes, Path]
) -> None:
    org = new_org()
    our_key, _ = actor_keys
    stranger_key, _ = generate_actor_key()
    bad_signature = mint_actor_token(stranger_key, issuer=ACTOR_ISSUER, audience=ACTOR_AUDIENCE, user_id="mallory",
                                     org_id=org, permissions=["administration_integrations_access"])
    wrong_issuer = mint_actor_token(our_key, issuer="someone-else", audience=ACTOR_AUDIENCE, user_id="mallory",
                                    org_id=org, permissions=["administration_integrations_access"])
    for metadata in ((("authorization", f"Bearer {bad_signature}"),), (("authorization", f"Bearer {wrong_issuer}"),), ()):
        for call in (create(registry_stub, metadata), registry_stub.ListVendors(pb.ListVendorsRequest(), metadata=metadata)):
            assert (await refused(call)).code() is grpc.StatusCode.UNAUTHENTICATED


async def test_invalid_settings_are_invalid_argument_naming_the_problem(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    alice = as_actor("alice", new_org())
    cases = [
        ({"scopes": ["sensors:read"]}, "sensors allows only: sensors:write"),
        ({"scopes": ["payroll:read"]}, "unknown scope category 'payroll'"),
        ({"rate_limit_per_minute": 10_001}, "between 1 and 10,000"),
        ({"ip_allowlist": ["10.0.0.0/8", "10.0.0.999"]}, "'10.0.0.999'"),
        ({"vendor_id": "oracle"}, "unknown vendor 'oracle'"),
        ({"name": ""}, "name is required"),
    ]
    for fields, message in cases:
        error = await refused(create(registry_stub, alice, **fields))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in (error.details() or "")
    integration = await create(registry_stub, alice)
    error = await refused(registry_stub.UpdateIntegration(
        pb.UpdateIntegrationRequest(integration_id=integration.id, update_mask=["status"]), metadata=alice
    ))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_list_filters_by_status_and_vendor_and_pages(
    registry_stub: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    org = new_org()
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    requested_sap = await create(registry_stub, alice, vendor_id="sap")
    requested_xero = await create(registry_stub, alice, vendor_id="xero", name="Xero books")
    active_xero = (await activated(registry_stub, alice, bob, vendor_id="xero", name="Xero live")).integration
    suspended_sap = (await activated(registry_stub, alice, bob, vendor_id="sap", name="SAP paused")).integration
    await registry_stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=suspended_sap.id, reason="pause"), metadata=bob)

    async def ids(**query: Any) -> list[str]:
        response = await registry_stub.ListIntegrations(pb.ListIntegrationsRequest(**query), metadata=alice)
        return [i.id for i in response.integrations]

    assert await ids() == [suspended_sap.id, active_xero.id, requested_xero.id, requested_sap.id]
    assert await ids(statuses=[ACTIVE, SUSPENDED]) == [suspended_sap.id, active_xero.id]
    assert await ids(vendor_id="xero") == [active_xero.id, requested_xero.id]
    assert await ids(statuses=[pb.INTEGRATION_STATUS_REQUESTED], vendor_id="sap") == [requested_sap.id]

    first = await registry_stub.ListIntegrations(pb.ListIntegrationsRequest(page_size=3), metadata=alice)
    rest = await registry_stub.ListIntegrations(pb.ListIntegrationsRequest(page_size=3, page_token=first.next_page_token), metadata=alice)
    assert [i.id for i in first.integrations] + [i.id for i in rest.integrations] == await ids()
    assert rest.next_page_token == ""


# --- the organisation limit, with max_live_integrations=2 -------------------------------------------


@pytest.fixture
async def limited_registry(
    make_settings: Callable[..., Settings], identity_service: RunningService
) -> AsyncIterator[registry_pb2_grpc.RegistryStub]:
    settings = make_settings(identity_addr=f"127.0.0.1:{identity_service.port}", max_live_integrations=2)
    service = await start_service("registry", settings)
    try:
        async with channel_to(service) as channel:
            yield registry_pb2_grpc.RegistryStub(channel)
    finally:
        await service.stop(0)


async def test_organisation_limit_is_resource_exhausted_with_a_hint_to_revoke(
    limited_registry: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    stub = limited_registry
    org = new_org()
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    first = (await activated(stub, alice, bob)).integration
    await activated(stub, alice, bob)
    waiting = await create(stub, alice, name="third")
    await stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=waiting.id), metadata=bob)
    activate = pb.ActivateIntegrationRequest(integration_id=waiting.id)

    error = await refused(stub.ActivateIntegration(activate, metadata=bob))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "revoke an integration you no longer need" in (error.details() or "")

    await stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=first.id, reason="pause"), metadata=bob)
    error = await refused(stub.ActivateIntegration(activate, metadata=bob))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "suspended integrations count toward the limit" in (error.details() or "")

    await stub.RevokeIntegration(pb.RevokeIntegrationRequest(integration_id=first.id), metadata=bob)
    response = await stub.ActivateIntegration(activate, metadata=bob)
    assert response.integration.status == ACTIVE

    # Another organisation has its own limit.
    other = new_org()
    assert (await activated(stub, as_actor("alice", other), as_actor("bob", other))).integration.status == ACTIVE


# --- identity unreachable at suspension --------------------------------------------------------------


async def test_suspension_stands_when_identity_is_down_and_the_error_says_so(
    make_settings: Callable[..., Settings], as_actor: AsActor
) -> None:
    identity = await start_service("identity", make_settings())
    identity_running = True
    registry = await start_service("registry", make_settings(identity_addr=f"127.0.0.1:{identity.port}"))
    try:
        async with channel_to(registry) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            org = new_org()
            alice, bob = as_actor("alice", org), as_actor("bob", org)
            integration = (await activated(stub, alice, bob)).integration
            await identity.stop(0)
            identity_running = False

            error = await refused(stub.SuspendIntegration(
                pb.SuspendIntegrationRequest(integration_id=integration.id, reason="incident"), metadata=bob
            ))
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            assert "trellis.integration.suspended" in (error.details() or "")
            shown = await stub.GetIntegration(pb.GetIntegrationRequest(integration_id=integration.id), metadata=alice)
            assert (shown.status, shown.suspended_by) == (SUSPENDED, "bob")

            # Activation cannot half-happen while identity is down: the integration stays where it was.
            waiting = await create(stub, alice, name="waiting")
            await stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=waiting.id), metadata=bob)
            error = await refused(stub.ActivateIntegration(pb.ActivateIntegrationRequest(integration_id=waiting.id), metadata=bob))
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            shown = await stub.GetIntegration(pb.GetIntegrationRequest(integration_id=waiting.id), metadata=alice)
            assert (shown.status, shown.api_key_prefix) == (pb.INTEGRATION_STATUS_APPROVED, "")
    finally:
        await registry.stop(0)
        if identity_running:
            await identity.stop(0)
