"""The registry's use cases at the unit-of-work seam, in memory: which work commits together,
what is published and awaited after each commit, and what a refused or failed unit leaves
behind. No database (the same handlers on SQLite: test_handlers.py; on PostgreSQL:
tests/integration/registry); identity is a fake at the CredentialsPort seam."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, Actor
from services.kit.errors import Aborted, PermissionDenied, ResourceExhausted, Unavailable
from services.kit.uow import MemoryStore, WriteConflict
from services.registry.application import commands
from services.registry.application.handlers import RegistryHandlers
from services.registry.domain.model import Status
from tests.unit.registry.memory import FakeIdentity, MemoryRegistryUnitOfWork, history, published

_n = itertools.count()


@dataclass
class World:
    store: MemoryStore = field(default_factory=MemoryStore)
    identity: FakeIdentity = field(default_factory=FakeIdentity)
    org_locks: list[str] = field(default_factory=list)
    org: str = field(default_factory=lambda: f"org_m{next(_n)}")
    max_live: int = 3

    def __post_init__(self) -> None:
        self.handlers = RegistryHandlers(lambda: MemoryRegistryUnitOfWork(self.store, org_locks=self.org_locks),
                                         self.identity, max_live_integrations=self.max_live)

    def admin(self, user: str) -> Actor:
        return Actor(user_id=user, org_id=self.org, permissions=frozenset({ADMIN_PERMISSION}), token=f"token-of-{user}")

    async def requested(self) -> str:
        cmd = commands.CreateIntegration(vendor_id="netsuite", name="NetSuite ERP", owner="olivia", scopes=["orders:read"])
        return (await self.handlers.create(self.admin("rita"), cmd)).id

    async def approved(self) -> str:
        integration_id = await self.requested()
        await self.handlers.approve(self.admin("alex"), commands.ApproveIntegration(integration_id))
        return integration_id

    async def active(self) -> str:
        integration_id = await self.approved()
        await self.handlers.activate(self.admin("alex"), commands.ActivateIntegration(integration_id))
        return integration_id


async def test_each_change_commits_its_history_and_publication_together_then_waits_for_the_bus() -> None:
    w = World()
    integration_id = await w.approved()
    await w.handlers.update(w.admin("alex"), commands.UpdateIntegration(integration_id, {"owner": "otto"}))
    changes = published(w.store)
    assert [(c.kind, c.actor_id) for c in changes] == [("created", "rita"), ("approved", "alex"), ("updated", "alex")]
    assert history(w.store, integration_id) == ["created", "approved", "updated"]
    assert (changes[2].before.owner, changes[2].after.owner) == ("olivia", "otto")  # type: ignore[union-attr]
    assert changes[0].before is None and changes[1].before.status is Status.REQUESTED  # type: ignore[union-attr]
    # One commit per change, and each call waited for its own change to be published, after it.
    assert w.store.commits == 3
    assert w.store.published == [[event_id] for event_id in w.store.tables["published"]]


async def test_reads_never_commit() -> None:
    w = World()
    integration_id = await w.requested()
    commits = w.store.commits
    edge = Actor(user_id="edge", org_id="trellis", permissions=frozenset({EDGE_PERMISSION}), token="t")
    assert (await w.handlers.get(w.admin("alex"), integration_id)).status is Status.REQUESTED
    assert (await w.handlers.lookup(edge, integration_id)).id == integration_id
    assert [e.action for e in await w.handlers.history(w.admin("alex"), integration_id)] == ["created"]
    assert [i.id for i in (await w.handlers.list_integrations(w.admin("alex"), commands.ListIntegrations())).integrations] == [integration_id]
    assert w.store.commits == commits and w.store.published == [[e] for e in w.store.tables["published"]]


async def test_a_refused_change_leaves_nothing_and_publishes_nothing() -> None:
    w = World()
    integration_id = await w.requested()
    before = (w.store.commits, list(w.store.published))
    with pytest.raises(PermissionDenied, match="cannot approve it"):
        await w.handlers.approve(w.admin("rita"), commands.ApproveIntegration(integration_id))
    assert (w.store.commits, w.store.published) == before
    assert history(w.store, integration_id) == ["created"]
    assert [c.kind for c in published(w.store)] == ["created"]


async def test_activation_takes_the_lease_in_a_unit_of_its_own_before_asking_identity() -> None:
    w = World()
    integration_id = await w.approved()
    seen: list[int] = []

    async def look(_integration_id: str) -> None:
        seen.append(w.store.commits)

    w.identity.during_issue = look
    commits = w.store.commits
    integration, credentials = await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    assert seen == [commits + 1]  # the lease was committed when identity was asked
    assert w.store.commits == commits + 2  # then the activation itself
    assert (integration.status, integration.api_key_prefix) == (Status.ACTIVE, credentials.api_key[:16])
    assert w.org_locks == [w.org]  # the limit was checked again in the unit that commits it
    assert [c.kind for c in published(w.store)][-1] == "activated"


async def test_a_refused_commit_after_issuing_revokes_what_was_issued_and_ends_the_lease() -> None:
    w = World()
    integration_id = await w.approved()

    async def conflict_at_commit(_integration_id: str) -> None:
        w.store.fail_next_commit = WriteConflict("raced")

    w.identity.during_issue = conflict_at_commit
    with pytest.raises(WriteConflict):
        await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    assert w.identity.calls[-1] == ("revoke", integration_id) and integration_id not in w.identity.live
    assert (await w.handlers.get(w.admin("alex"), integration_id)).status is Status.APPROVED
    assert "activated" not in [c.kind for c in published(w.store)]
    # The lease went with the failure: the next activation goes through.
    integration, _ = await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    assert integration.status is Status.ACTIVE


async def test_the_limit_is_checked_again_when_the_activation_commits() -> None:
    w = World(max_live=1)
    first, second = await w.approved(), await w.approved()

    async def second_goes_live_meanwhile(_integration_id: str) -> None:
        await w.handlers.activate(w.admin("ann"), commands.ActivateIntegration(second))

    w.identity.during_issue = second_goes_live_meanwhile
    with pytest.raises(ResourceExhausted):
        await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(first))
    assert first not in w.identity.live and second in w.identity.live
    assert (await w.handlers.get(w.admin("alex"), first)).status is Status.APPROVED


async def test_a_second_activation_while_one_holds_the_lease_is_aborted_without_asking_identity() -> None:
    w = World()
    integration_id = await w.approved()
    refusals: list[Aborted] = []

    async def another_activation(_integration_id: str) -> None:
        try:
            await w.handlers.activate(w.admin("ann"), commands.ActivateIntegration(integration_id))
        except Aborted as refusal:
            refusals.append(refusal)

    w.identity.during_issue = another_activation
    await w.handlers.activate(w.admin("alex"), commands.ActivateIntegration(integration_id))
    (refusal,) = refusals
    assert "another activation of this integration is in progress" in refusal.message
    assert [c for c in w.identity.calls if c[0] == "issue"] == [("issue", integration_id)]


async def test_suspension_is_committed_and_on_the_bus_before_identity_revokes() -> None:
    w = World()
    integration_id = await w.active()
    w.identity.on_revoke = lambda: [c.kind for c in published(w.store)][-1]
    await w.handlers.suspend(w.admin("sam"), commands.SuspendIntegration(integration_id, "incident"))
    assert w.identity.seen_at_revoke == ["suspended"]
    assert w.store.published[-1] == [list(w.store.tables["published"])[-1]]


async def test_a_suspension_stands_when_identity_is_down() -> None:
    w = World()
    integration_id = await w.active()
    w.identity.down = True
    with pytest.raises(Unavailable, match="identity revokes them when it consumes"):
        await w.handlers.suspend(w.admin("sam"), commands.SuspendIntegration(integration_id, "incident"))
    assert (await w.handlers.get(w.admin("sam"), integration_id)).status is Status.SUSPENDED
    assert [c.kind for c in published(w.store)][-1] == "suspended"
