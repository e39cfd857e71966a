"""Only one activation (or reactivation) of an integration is in flight at a time: the loser of
two concurrent calls is ABORTED before it reaches identity, so it cannot revoke the winner's
credentials. Through gRPC on SQLite with the real identity, and at the handler seam on SQLite
and PostgreSQL with a fake identity that holds the winner inside its issue call."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, Actor
from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory, utcnow
from services.kit.errors import Aborted, Unavailable
from tests.support.settings import Settings
from services.registry.application import commands
from services.registry.domain.model import Status
from services.registry.adapters.store import SqlRegistryUnitOfWork, integrations
from services.registry.application.handlers import RegistryHandlers
from services.registry.application.ports import IssuedCredentials, RegeneratedApiKey
from tests.integration.registry.helpers import (
    ACTIVE,
    AsActor,
    Metadata,
    activated,
    assert_key_dead,
    create,
    key_integration,
    new_org,
    refused,
)
from tests.support.waiting import eventually

# --- through gRPC, with the real identity ---------------------------------------------------------


async def approved(stub: registry_pb2_grpc.RegistryStub, requester: Metadata, approver: Metadata) -> pb.Integration:
    integration = await create(stub, requester)
    return await stub.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=integration.id), metadata=approver)


def one_winner(results: Sequence[object]) -> tuple[pb.ActivateIntegrationResponse, grpc.aio.AioRpcError]:
    """The one response and the one ABORTED error of two concurrent calls."""
    winners = [r for r in results if isinstance(r, pb.ActivateIntegrationResponse)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(winners), len(losers)) == (1, 1), results
    assert losers[0].code() is grpc.StatusCode.ABORTED, losers[0]
    return winners[0], losers[0]


async def test_two_concurrent_activations_leave_it_active_with_the_winners_working_key(
    registry_stub: registry_pb2_grpc.RegistryStub, identity_stub: identity_pb2_grpc.IdentityStub,
    as_actor: AsActor, edge: Metadata,
) -> None:
    org = new_org()
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    integration = await approved(registry_stub, alice, bob)
    request = pb.ActivateIntegrationRequest(integration_id=integration.id)

    results = await asyncio.gather(
        registry_stub.ActivateIntegration(request, metadata=bob),
        registry_stub.ActivateIntegration(request, metadata=bob),
        return_exceptions=True,
    )

    winner, loser = one_winner(results)
    assert "another activation of this integration is in progress; retry" in (loser.details() or "")
    shown = await registry_stub.GetIntegration(pb.GetIntegrationRequest(integration_id=integration.id), metadata=alice)
    assert (shown.status, shown.api_key_prefix) == (ACTIVE, winner.credentials.api_key_prefix)
    assert await key_integration(identity_stub, edge, winner.credentials.api_key) == integration.id


async def test_two_concurrent_reactivations_leave_it_active_with_the_winners_working_key(
    registry_stub: registry_pb2_grpc.RegistryStub, identity_stub: identity_pb2_grpc.IdentityStub,
    as_actor: AsActor, edge: Metadata,
) -> None:
    org = new_org()
    alice, bob, carol, dave = (as_actor(u, org) for u in ("alice", "bob", "carol", "dave"))
    first = await activated(registry_stub, alice, bob)
    iid = first.integration.id
    await registry_stub.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=iid, reason="review"), metadata=carol)
    request = pb.ReactivateIntegrationRequest(integration_id=iid)

    results = await asyncio.gather(
        registry_stub.ReactivateIntegration(request, metadata=dave),
        registry_stub.ReactivateIntegration(request, metadata=alice),
        return_exceptions=True,
    )

    winner, loser = one_winner(results)
    assert "another reactivation of this integration is in progress; retry" in (loser.details() or "")
    shown = await registry_stub.GetIntegration(pb.GetIntegrationRequest(integration_id=iid), metadata=alice)
    assert (shown.status, shown.api_key_prefix) == (ACTIVE, winner.credentials.api_key_prefix)
    assert await key_integration(identity_stub, edge, winner.credentials.api_key) == iid
    await assert_key_dead(identity_stub, edge, first.credentials.api_key)


@pytest.fixture
async def registry_db(make_settings: Callable[..., Settings]) -> AsyncIterator[AsyncEngine]:
    """The running registry's own SQLite database (the `registry_service` fixture's settings)."""
    engine = create_engine(make_settings().database_url("registry"))
    yield engine
    await engine.dispose()


async def set_lease(engine: AsyncEngine, integration_id: str, operation: str, since: dt.datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(integrations).where(integrations.c.id == integration_id).values(pending_operation=operation, pending_since=since)
        )


async def lease_of(engine: AsyncEngine, integration_id: str) -> str | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(integrations.c.pending_operation).where(integrations.c.id == integration_id))).one()
    return row.pending_operation


async def test_a_lease_in_flight_blocks_activation_but_a_stale_one_does_not(
    registry_stub: registry_pb2_grpc.RegistryStub, identity_stub: identity_pb2_grpc.IdentityStub,
    as_actor: AsActor, edge: Metadata, registry_db: AsyncEngine,
) -> None:
    org = new_org()
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    integration = await approved(registry_stub, alice, bob)
    request = pb.ActivateIntegrationRequest(integration_id=integration.id)

    await set_lease(registry_db, integration.id, "req-in-flight", utcnow())
    error = await refused(registry_stub.ActivateIntegration(request, metadata=bob))
    assert error.code() is grpc.StatusCode.ABORTED

    # The replica holding it crashed ten minutes ago: its lease no longer blocks anyone.
    await set_lease(registry_db, integration.id, "req-crashed", utcnow() - dt.timedelta(minutes=10))
    response = await registry_stub.ActivateIntegration(request, metadata=bob)
    assert response.integration.status == ACTIVE
    assert await key_integration(identity_stub, edge, response.credentials.api_key) == integration.id
    assert await lease_of(registry_db, integration.id) is None


# --- at the handler seam, on SQLite and PostgreSQL ------------------------------------------------


@dataclass
class HoldingIdentity:
    """Identity at the seam: an issue waits at `gate`, holding the lease while the other call runs."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    live: dict[str, str] = field(default_factory=dict)
    down: bool = False

    async def issue(self, actor: Actor, integration_id: str, scopes: Sequence[str], request_id: str) -> IssuedCredentials:
        self.issued.append(request_id)
        await self.gate.wait()
        if self.down:
            raise Unavailable("identity down")
        key = "grq_live_" + secrets.token_urlsafe(32)
        self.live[integration_id] = key
        return IssuedCredentials(
            api_key_prefix=key[:16], client_id=f"cli_{request_id}", api_key=key, client_secret=secrets.token_urlsafe(32),
        )

    async def revoke(self, actor: Actor, integration_id: str, reason: str, request_id: str = "") -> None:
        self.revoked.append(integration_id)
        self.live.pop(integration_id, None)

    async def regenerate_api_key(self, actor: Actor, integration_id: str, request_id: str = "") -> RegeneratedApiKey:
        raise NotImplementedError


@dataclass
class Seam:
    handlers: RegistryHandlers
    identity: HoldingIdentity
    sessions: async_sessionmaker[AsyncSession]
    org: str = field(default_factory=new_org)

    def admin(self, user: str) -> Actor:
        return Actor(user_id=user, org_id=self.org, permissions=frozenset({ADMIN_PERMISSION}), token=f"token-of-{user}")

    async def lease(self, integration_id: str) -> str | None:
        async with self.sessions() as session:
            return (
                await session.execute(select(integrations.c.pending_operation).where(integrations.c.id == integration_id))
            ).scalar_one()


@pytest.fixture
async def seam(database_url: str) -> AsyncIterator[Seam]:
    await migrate_async("registry", database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    identity = HoldingIdentity()
    handlers = RegistryHandlers(
        lambda: SqlRegistryUnitOfWork(sessions, postgres=not is_sqlite(database_url)), identity, max_live_integrations=5
    )
    yield Seam(handlers, identity, sessions)
    await engine.dispose()


async def approved_at_seam(s: Seam) -> str:
    cmd = commands.CreateIntegration(vendor_id="xero", name="Xero books", owner="olivia", scopes=["finance:read"])
    integration_id = (await s.handlers.create(s.admin("rita"), cmd)).id
    await s.handlers.approve(s.admin("alex"), commands.ApproveIntegration(integration_id))
    return integration_id


async def race(s: Seam, call: Callable[[str], object]) -> tuple[object, Aborted]:
    """Run two calls at once; the first refusal opens identity's gate for the other."""

    async def attempt(request_id: str) -> object:
        try:
            return await call(request_id)  # type: ignore[misc]
        except Aborted as refusal:
            s.identity.gate.set()
            return refusal

    results = await asyncio.wait_for(asyncio.gather(attempt("req-a"), attempt("req-b")), timeout=10)
    refusals = [r for r in results if isinstance(r, Aborted)]
    assert len(refusals) == 1, results
    (won,) = [r for r in results if not isinstance(r, Aborted)]
    return won, refusals[0]


async def test_concurrent_activations_reach_identity_once(seam: Seam) -> None:
    s = seam
    integration_id = await approved_at_seam(s)

    (integration, credentials), refusal = await race(
        s, lambda rid: s.handlers.activate(s.admin("alex"), commands.ActivateIntegration(integration_id, request_id=rid))
    )

    assert "another activation" in refusal.message
    assert len(s.identity.issued) == 1 and s.identity.revoked == []  # the loser never touched identity
    assert integration.status is Status.ACTIVE
    stored = await s.handlers.get(s.admin("alex"), integration_id)
    assert stored.api_key_prefix == credentials.api_key_prefix == s.identity.live[integration_id][:16]
    assert await s.lease(integration_id) is None


async def test_concurrent_reactivations_reach_identity_once(seam: Seam) -> None:
    s = seam
    integration_id = await approved_at_seam(s)
    s.identity.gate.set()
    await s.handlers.activate(s.admin("alex"), commands.ActivateIntegration(integration_id))
    await s.handlers.suspend(s.admin("sam"), commands.SuspendIntegration(integration_id, "review"))
    s.identity.gate.clear()
    s.identity.issued.clear()

    (integration, credentials), refusal = await race(
        s, lambda rid: s.handlers.reactivate(s.admin("ruth"), commands.ReactivateIntegration(integration_id, request_id=rid))
    )

    assert "another reactivation" in refusal.message
    assert len(s.identity.issued) == 1
    assert integration.status is Status.ACTIVE
    assert credentials.api_key == s.identity.live[integration_id]
    assert await s.lease(integration_id) is None


async def test_a_failed_issue_ends_the_lease_so_a_retry_can_activate(seam: Seam) -> None:
    s = seam
    integration_id = await approved_at_seam(s)
    s.identity.gate.set()
    s.identity.down = True
    with pytest.raises(Unavailable):
        await s.handlers.activate(s.admin("alex"), commands.ActivateIntegration(integration_id))
    assert await s.lease(integration_id) is None

    s.identity.down = False
    integration, _ = await s.handlers.activate(s.admin("alex"), commands.ActivateIntegration(integration_id))
    assert integration.status is Status.ACTIVE


async def test_a_failed_commit_revokes_what_it_issued_and_ends_the_lease(seam: Seam) -> None:
    s = seam
    integration_id = await approved_at_seam(s)
    activating = asyncio.create_task(s.handlers.activate(s.admin("alex"), commands.ActivateIntegration(integration_id)))

    async def inside_issue() -> bool:
        return bool(s.identity.issued)

    await eventually(inside_issue, what="the activation to hold its lease inside identity's issue")
    # Meanwhile another administrator edits it: the activation's commit over the version it read loses.
    await s.handlers.update(s.admin("olga"), commands.UpdateIntegration(integration_id, {"owner": "someone else"}))
    s.identity.gate.set()
    with pytest.raises(Aborted):
        await activating
    assert s.identity.revoked == [integration_id] and integration_id not in s.identity.live
    assert await s.lease(integration_id) is None
    assert (await s.handlers.get(s.admin("alex"), integration_id)).status is Status.APPROVED
