"""The registry's use cases on a real SQLite database, with identity replaced by a fake at the
`CredentialsPort` seam: saga compensation, identity outages, limits, history and outbox rows."""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.auth import ADMIN_PERMISSION, Actor
from services.kit.db import create_engine, migrate_async, session_factory
from services.kit.errors import Aborted, FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted, Unavailable
from services.registry.application import commands
from services.registry.domain.model import Status
from services.registry.adapters.store import SqlRegistryUnitOfWork, lifecycle_history, outbox
from services.registry.application.handlers import RegistryHandlers
from services.registry.application.ports import IssuedCredentials, RegeneratedApiKey

_n = itertools.count()


@dataclass
class FakeIdentity:
    """Identity at the seam: hands out random keys, remembers which are live, can be 'down'."""

    live: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    down: bool = False
    after_issue: Callable[[str], Awaitable[None]] | None = None

    async def issue(self, actor: Actor, integration_id: str, scopes: Sequence[str], request_id: str) -> IssuedCredentials:
        self.calls.append(("issue", integration_id, request_id))
        if self.down:
            raise Unavailable("identity down")
        key = "grq_live_" + secrets.token_urlsafe(32)
        self.live[integration_id] = key
        if self.after_issue is not None:
            await self.after_issue(integration_id)
        return IssuedCredentials(
            api_key_prefix=key[:16], client_id=f"cli_{integration_id}", api_key=key,
            client_secret="sec_" + secrets.token_urlsafe(32), scopes=tuple(scopes),
        )

    async def revoke(self, actor: Actor, integration_id: str, reason: str, request_id: str = "") -> None:
        self.calls.append(("revoke", integration_id, reason))
        if self.down:
            raise Unavailable("identity down")
        self.live.pop(integration_id, None)

    async def regenerate_api_key(self, actor: Actor, integration_id: str, request_id: str = "") -> RegeneratedApiKey:
        self.calls.append(("regenerate", integration_id, request_id))
        key = "grq_live_" + secrets.token_urlsafe(32)
        self.live[integration_id] = key
        return RegeneratedApiKey(api_key_prefix=key[:16], api_key=key)


@dataclass
class World:
    handlers: RegistryHandlers
    identity: FakeIdentity
    sessions: object
    db_file: Path
    org: str
    flushed: list[list[str]]

    def admin(self, user: str) -> Actor:
        return Actor(user_id=user, org_id=self.org, permissions=frozenset({ADMIN_PERMISSION}), token=f"token-of-{user}")

    async def outbox_events(self) -> list[tuple[str, bytes]]:
        async with self.sessions() as session:  # type: ignore[operator]
            rows = (await session.execute(select(outbox.c.subject, outbox.c.payload).order_by(outbox.c.seq))).all()
        return [(r.subject, r.payload) for r in rows]

    async def outbox_ids(self) -> list[str]:
        async with self.sessions() as session:  # type: ignore[operator]
            return list((await session.execute(select(outbox.c.id).order_by(outbox.c.seq))).scalars())

    async def history_actions(self, integration_id: str) -> list[str]:
        async with self.sessions() as session:  # type: ignore[operator]
            rows = (
                await session.execute(
                    select(lifecycle_history.c.action)
                    .where(lifecycle_history.c.integration_id == integration_id)
                    .order_by(lifecycle_history.c.at)
                )
            ).all()
        return [r.action for r in rows]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db_file = tmp_path / "registry.db"
    url = f"sqlite+aiosqlite:///{db_file}"
    await migrate_async("registry", url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    identity = FakeIdentity()
    flushed: list[list[str]] = []

    async def flush(event_ids: Collection[str]) -> bool:
        flushed.append(list(event_ids))
        return True

    handlers = RegistryHandlers(
        lambda: SqlRegistryUnitOfWork(sessions, postgres=False, flush=flush), identity, max_live_integrations=3,
    )
    yield World(handlers, identity, sessions, db_file, f"org_h{next(_n)}", flushed)
    await engine.dispose()


async def requested(w: World, requester: str = "rita", **kw: object) -> str:
    cmd = commands.CreateIntegration(vendor_id="netsuite", name="NetSuite ERP", owner="olivia",
                                     scopes=["orders:read", "crm:read"], **kw)  # type: ignore[arg-type]
    return (await w.handlers.create(w.admin(requester), cmd)).id


async def active(w: World) -> str:
    integration_id = await requested(w)
    await w.handlers.approve(w.admin("alex"), commands.ApproveIntegration(integration_id))
    await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    return integration_id


async def test_lifecycle_writes_history_and_both_events_for_every_change(world: World) -> None:
    w, h = world, world.handlers
    integration_id = await requested(w)
    await h.approve(w.admin("alex"), commands.ApproveIntegration(integration_id))
    await h.activate(w.admin("alex"), commands.ActivateIntegration(integration_id, request_id="req-1"))
    await h.update(w.admin("alex"), commands.UpdateIntegration(integration_id, {"rate_limit_per_minute": 600}))
    await h.regenerate_api_key(w.admin("alex"), commands.RegenerateApiKey(integration_id))
    await h.suspend(w.admin("sam"), commands.SuspendIntegration(integration_id, "security review"))
    await h.reactivate(w.admin("ruth"), commands.ReactivateIntegration(integration_id))
    await h.revoke(w.admin("ruth"), commands.RevokeIntegration(integration_id, "no longer needed"))

    kinds = ["created", "approved", "activated", "updated", "api_key_regenerated", "suspended", "reactivated", "revoked"]
    assert await w.history_actions(integration_id) == kinds
    subjects = [s for s, _ in await w.outbox_events()]
    assert subjects == [s for k in kinds for s in (f"trellis.integration.{k}", f"trellis.audit.registry.integration.{k}")]
    # Each call waited for exactly its own two events (the change and its audit) to be published.
    assert await w.outbox_ids() == [event_id for ids in w.flushed for event_id in ids]
    assert [len(ids) for ids in w.flushed] == [2] * len(kinds)

    events = await w.outbox_events()
    suspended = events_pb2.AuditEvent.FromString(events[kinds.index("suspended") * 2 + 1][1])
    assert (suspended.actor_id, suspended.action, suspended.object_id, suspended.reason) == (
        "sam", "integration.suspended", integration_id, "security review",
    )
    assert json.loads(suspended.before_json)["status"] == "active"
    assert json.loads(suspended.after_json)["status"] == "suspended"
    changed = events_pb2.IntegrationChanged.FromString(events[kinds.index("updated") * 2][1])
    assert (changed.kind, changed.status, changed.rate_limit_per_minute, changed.org_id) == ("updated", "active", 600, w.org)


async def test_activation_returns_credentials_once_and_stores_only_identifiers(world: World) -> None:
    w = world
    integration_id = await requested(w)
    await w.handlers.approve(w.admin("alex"), commands.ApproveIntegration(integration_id))
    integration, creds = await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id, "req-9"))
    assert integration.status is Status.ACTIVE
    assert (integration.api_key_prefix, integration.client_id) == (creds.api_key[:16], creds.client_id)
    assert ("issue", integration_id, "req-9") in w.identity.calls
    assert creds.api_key not in repr(creds) and creds.client_secret not in repr(creds)
    stored = b"".join(p.read_bytes() for p in w.db_file.parent.glob("registry.db*"))
    assert creds.api_key.encode() not in stored
    assert creds.client_secret.encode() not in stored
    assert integration.api_key_prefix.encode() in stored


async def test_activation_without_request_id_gets_a_fresh_idempotency_key(world: World) -> None:
    w = world
    integration_id = await requested(w)
    await w.handlers.approve(w.admin("alex"), commands.ApproveIntegration(integration_id))
    await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    (issue,) = [c for c in w.identity.calls if c[0] == "issue"]
    assert issue[2].startswith("req_")


async def test_failed_commit_after_issuing_revokes_the_issued_credentials(world: World) -> None:
    w = world
    integration_id = await requested(w)
    await w.handlers.approve(w.admin("alex"), commands.ApproveIntegration(integration_id))

    async def concurrent_edit(issued_for: str) -> None:
        # Another admin changes the integration while identity is issuing: our commit must lose.
        await w.handlers.update(w.admin("olga"), commands.UpdateIntegration(issued_for, {"owner": "someone else"}))

    w.identity.after_issue = concurrent_edit
    with pytest.raises(Aborted):
        await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    assert integration_id not in w.identity.live
    assert w.identity.calls[-1][0:2] == ("revoke", integration_id)
    integration = await w.handlers.get(w.admin("alex"), integration_id)
    assert (integration.status, integration.api_key_prefix) == (Status.APPROVED, "")
    assert "activated" not in await w.history_actions(integration_id)


async def test_identity_down_at_activation_changes_nothing(world: World) -> None:
    w = world
    integration_id = await requested(w)
    await w.handlers.approve(w.admin("alex"), commands.ApproveIntegration(integration_id))
    w.identity.down = True
    with pytest.raises(Unavailable):
        await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    assert (await w.handlers.get(w.admin("alex"), integration_id)).status is Status.APPROVED


async def test_suspend_revokes_credentials_before_returning(world: World) -> None:
    w = world
    integration_id = await active(w)
    assert integration_id in w.identity.live
    await w.handlers.suspend(w.admin("sam"), commands.SuspendIntegration(integration_id, "incident"))
    assert integration_id not in w.identity.live


async def test_suspension_stands_when_identity_is_unreachable_and_says_so(world: World) -> None:
    w = world
    integration_id = await active(w)
    w.identity.down = True
    with pytest.raises(Unavailable) as caught:
        await w.handlers.suspend(w.admin("sam"), commands.SuspendIntegration(integration_id, "incident"))
    assert "is suspended" in caught.value.message
    assert "trellis.integration.suspended" in caught.value.message
    assert (await w.handlers.get(w.admin("sam"), integration_id)).status is Status.SUSPENDED
    assert "trellis.integration.suspended" in [s for s, _ in await w.outbox_events()]


async def test_revoke_asks_identity_only_when_credentials_were_issued(world: World) -> None:
    w = world
    never_activated = await requested(w)
    await w.handlers.revoke(w.admin("alex"), commands.RevokeIntegration(never_activated))
    assert not [c for c in w.identity.calls if c[0] == "revoke"]
    live = await active(w)
    await w.handlers.revoke(w.admin("alex"), commands.RevokeIntegration(live, "done"))
    assert live not in w.identity.live


async def test_reactivation_issues_new_credentials_by_a_different_admin(world: World) -> None:
    w = world
    integration_id = await active(w)
    await w.handlers.suspend(w.admin("sam"), commands.SuspendIntegration(integration_id, "incident"))
    with pytest.raises(PermissionDenied, match="separation of duties"):
        await w.handlers.reactivate(w.admin("sam"), commands.ReactivateIntegration(integration_id))
    assert [c[0] for c in w.identity.calls].count("issue") == 1  # the refusal issued nothing
    integration, creds = await w.handlers.reactivate(w.admin("ruth"), commands.ReactivateIntegration(integration_id))
    assert integration.status is Status.ACTIVE
    assert integration.api_key_prefix == creds.api_key[:16] == w.identity.live[integration_id][:16]


async def test_approving_your_own_request_is_refused(world: World) -> None:
    w = world
    integration_id = await requested(w, requester="rita")
    with pytest.raises(PermissionDenied, match="cannot approve it"):
        await w.handlers.approve(w.admin("rita"), commands.ApproveIntegration(integration_id))


async def test_regenerate_stores_the_new_prefix_and_needs_active(world: World) -> None:
    w = world
    integration_id = await active(w)
    integration, key = await w.handlers.regenerate_api_key(w.admin("alex"), commands.RegenerateApiKey(integration_id))
    assert integration.api_key_prefix == key.api_key[:16]
    await w.handlers.suspend(w.admin("sam"), commands.SuspendIntegration(integration_id, "incident"))
    with pytest.raises(FailedPrecondition, match="it is suspended"):
        await w.handlers.regenerate_api_key(w.admin("alex"), commands.RegenerateApiKey(integration_id))


async def test_organisation_limit_counts_suspended_and_revoking_frees_a_place(world: World) -> None:
    w = world  # max_live_integrations=3 in this world
    live = [await active(w) for _ in range(3)]
    extra = await requested(w)
    await w.handlers.approve(w.admin("alex"), commands.ApproveIntegration(extra))
    issued = [c[0] for c in w.identity.calls].count("issue")
    with pytest.raises(ResourceExhausted, match="revoke an integration you no longer need"):
        await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(extra))
    assert [c[0] for c in w.identity.calls].count("issue") == issued  # refused before asking identity

    await w.handlers.suspend(w.admin("sam"), commands.SuspendIntegration(live[0], "paused"))
    with pytest.raises(ResourceExhausted, match="suspended integrations count toward the limit"):
        await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(extra))

    await w.handlers.revoke(w.admin("alex"), commands.RevokeIntegration(live[0], "not needed"))
    integration, _ = await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(extra))
    assert integration.status is Status.ACTIVE


async def test_lifecycle_calls_need_the_admin_permission_but_catalogues_do_not(world: World) -> None:
    w = world
    viewer = Actor(user_id="vic", org_id=w.org, permissions=frozenset({"qa_access"}), token="t")
    with pytest.raises(PermissionDenied, match=ADMIN_PERMISSION):
        await w.handlers.create(viewer, commands.CreateIntegration(vendor_id="sap", name="x", owner="y"))
    integration_id = await requested(w)
    for call in (
        w.handlers.approve(viewer, commands.ApproveIntegration(integration_id)),
        w.handlers.get(viewer, integration_id),
        w.handlers.revoke(viewer, commands.RevokeIntegration(integration_id)),
    ):
        with pytest.raises(PermissionDenied):
            await call
    assert len(w.handlers.list_vendors(viewer)) == 12
    assert len(w.handlers.list_scopes(viewer)) == 15


async def test_another_organisations_integration_is_not_found_for_every_call(world: World) -> None:
    w = world
    integration_id = await active(w)
    stranger = Actor(user_id="eve", org_id="org_elsewhere", permissions=frozenset({ADMIN_PERMISSION}), token="t")
    for call in (
        w.handlers.get(stranger, integration_id),
        w.handlers.history(stranger, integration_id),
        w.handlers.update(stranger, commands.UpdateIntegration(integration_id, {"owner": "eve"})),
        w.handlers.suspend(stranger, commands.SuspendIntegration(integration_id, "mine now")),
        w.handlers.revoke(stranger, commands.RevokeIntegration(integration_id)),
        w.handlers.regenerate_api_key(stranger, commands.RegenerateApiKey(integration_id)),
    ):
        with pytest.raises(NotFound):
            await call
    assert integration_id in w.identity.live
    assert (await w.handlers.get(w.admin("alex"), integration_id)).status is Status.ACTIVE


async def test_update_with_a_stale_expected_version_is_aborted(world: World) -> None:
    w = world
    integration_id = await requested(w)
    await w.handlers.update(w.admin("alex"), commands.UpdateIntegration(integration_id, {"owner": "a"}, expected_version=1))
    with pytest.raises(Aborted):
        await w.handlers.update(w.admin("alex"), commands.UpdateIntegration(integration_id, {"owner": "b"}, expected_version=1))
