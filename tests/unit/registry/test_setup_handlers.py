"""Setup request use cases over the in-memory unit of work (tests/unit/registry/memory.py):
permissions, organisation isolation, sealing, idempotent create, audit changes, paging."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os

import pytest

from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION, Actor
from services.kit.crypto import DecryptionError, Envelope
from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.kit.uow import MemoryStore
from services.registry.application import commands
from services.registry.application.handlers import SetupRequestHandlers, setup_secrets_aad
from services.registry.domain.setup import SetupStatus
from tests.unit.registry.memory import MemoryRegistryUnitOfWork, published_setup, sealed_secrets

WOO = {"store_url": "https://shop.example.com", "consumer_key": "ck_live_123", "consumer_secret": "cs_live_456"}
_ticks = itertools.count()


def clock() -> dt.datetime:
    return dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=next(_ticks))


def admin(user: str = "rita", org: str = "org_a") -> Actor:
    return Actor(user_id=user, org_id=org, permissions=frozenset({ADMIN_PERMISSION}))


def operator(user: str = "op_pat") -> Actor:
    return Actor(user_id=user, org_id="org_platform", permissions=frozenset({PLATFORM_PERMISSION}))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def envelope() -> Envelope:
    return Envelope({1: os.urandom(32)}, 1)


@pytest.fixture
def h(store: MemoryStore, envelope: Envelope) -> SetupRequestHandlers:
    return SetupRequestHandlers(lambda: MemoryRegistryUnitOfWork(store), envelope, clock=clock)


def woo(**kw: object) -> commands.CreateSetupRequest:
    return commands.CreateSetupRequest(prebuilt_id="woocommerce", connection=dict(WOO),
                                       contact_email="ops@example.com", **kw)  # type: ignore[arg-type]


async def test_create_seals_the_secrets_bound_to_the_request_and_keeps_only_their_names(
        h: SetupRequestHandlers, store: MemoryStore, envelope: Envelope) -> None:
    r = await h.create(admin(), woo())
    assert r.status is SetupStatus.SUBMITTED and r.connection == {"store_url": "https://shop.example.com"}
    assert r.secrets_given == ["consumer_key", "consumer_secret"]
    sealed = sealed_secrets(store, r.id)
    assert sealed is not None and b"cs_live_456" not in sealed
    assert json.loads(envelope.open(sealed, setup_secrets_aad(r.id))) == {"consumer_key": "ck_live_123",
                                                                          "consumer_secret": "cs_live_456"}
    with pytest.raises(DecryptionError):
        envelope.open(sealed, setup_secrets_aad("setup_other"))
    (change,) = published_setup(store)
    assert change.kind == "submitted" and change.before is None and change.actor_id == "rita"
    assert store.published == [[e.event_id for e in store.events]]


async def test_quickbooks_has_no_secret_so_nothing_is_sealed(h: SetupRequestHandlers, store: MemoryStore) -> None:
    r = await h.create(admin(), commands.CreateSetupRequest(prebuilt_id="quickbooks_online",
                                                            connection={"company_id": "9130354"}))
    assert r.secrets_given == [] and sealed_secrets(store, r.id) is None


async def test_the_same_request_id_returns_the_first_request(h: SetupRequestHandlers, store: MemoryStore) -> None:
    first = await h.create(admin(), woo(request_id="req-42"))
    again = await h.create(admin(), woo(request_id="req-42"))
    assert again.id == first.id and len(store.tables["setup_requests"]) == 1 and len(published_setup(store)) == 1
    other_org = await h.create(admin(org="org_b"), woo(request_id="req-42"))
    assert other_org.id != first.id
    with pytest.raises(AlreadyExists):
        await h.create(admin(), commands.CreateSetupRequest(prebuilt_id="quickbooks_online",
                                                            connection={"company_id": "1"}, request_id="req-42"))


async def test_a_bad_request_id_or_field_is_refused_before_anything_is_written(h: SetupRequestHandlers,
                                                                              store: MemoryStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await h.create(admin(), woo(request_id="has space"))
    assert caught.value.fields["field"] == "request_id"
    with pytest.raises(InvalidArgument) as caught:
        await h.create(admin(), commands.CreateSetupRequest(prebuilt_id="woocommerce", connection={"store_url": "x"}))
    assert caught.value.fields["field"] == "connection.store_url"
    assert store.commits == 0


async def test_creating_and_reading_need_the_administration_permission(h: SetupRequestHandlers) -> None:
    nobody = Actor(user_id="u", org_id="org_a", permissions=frozenset())
    with pytest.raises(PermissionDenied):
        await h.create(nobody, woo())
    r = await h.create(admin(), woo())
    with pytest.raises(PermissionDenied):
        await h.get(nobody, r.id)
    with pytest.raises(PermissionDenied):
        await h.list_requests(nobody, commands.ListSetupRequests())


async def test_another_organisations_request_is_not_found_for_its_administrators(h: SetupRequestHandlers) -> None:
    r = await h.create(admin(), woo())
    with pytest.raises(NotFound):
        await h.get(admin("eve", "org_b"), r.id)
    assert (await h.list_requests(admin("eve", "org_b"), commands.ListSetupRequests())).setup_requests == []
    assert (await h.get(operator(), r.id)).id == r.id


async def test_only_platform_operators_see_every_organisation_and_move_requests(h: SetupRequestHandlers) -> None:
    r = await h.create(admin(), woo())
    for call in (h.start(admin(), commands.StartSetupRequest(r.id)),
                 h.complete(admin(), commands.CompleteSetupRequest(r.id)),
                 h.decline(admin(), commands.DeclineSetupRequest(r.id, "no")),
                 h.list_requests(admin(), commands.ListSetupRequests(all_organisations=True))):
        with pytest.raises(PermissionDenied) as caught:
            await call
        assert caught.value.fields["permission"] == PLATFORM_PERMISSION


async def test_the_platform_team_starts_and_completes_with_audit_changes(h: SetupRequestHandlers,
                                                                        store: MemoryStore) -> None:
    r = await h.create(admin(), woo())
    started = await h.start(operator(), commands.StartSetupRequest(r.id, request_id="req-s"))
    done = await h.complete(operator("op_kim"), commands.CompleteSetupRequest(r.id, note="Syncing hourly"))
    assert started.status is SetupStatus.IN_PROGRESS and done.status is SetupStatus.CONFIGURED
    assert done.handled_by == "op_kim" and [s.action for s in done.history] == [
        "submitted", "started", "configured", "secrets_erased"]
    kinds = [(c.kind, c.actor_id, c.before.status if c.before else None) for c in published_setup(store)]
    assert kinds == [("submitted", "rita", None), ("started", "op_pat", SetupStatus.SUBMITTED),
                     ("configured", "op_kim", SetupStatus.IN_PROGRESS)]
    with pytest.raises(FailedPrecondition):
        await h.decline(operator(), commands.DeclineSetupRequest(r.id, "too late"))
    assert (await h.get(admin(), r.id)).status is SetupStatus.CONFIGURED


async def test_decline_records_its_reason(h: SetupRequestHandlers, store: MemoryStore) -> None:
    r = await h.create(admin(), woo())
    with pytest.raises(InvalidArgument):
        await h.decline(operator(), commands.DeclineSetupRequest(r.id, ""))
    declined = await h.decline(operator(), commands.DeclineSetupRequest(r.id, "Store is not reachable"))
    assert declined.decline_reason == "Store is not reachable"
    assert published_setup(store)[-1].reason == "Store is not reachable"


async def test_the_queue_is_every_organisation_oldest_first_and_an_org_sees_its_own_newest_first(
        h: SetupRequestHandlers) -> None:
    a1 = await h.create(admin(), woo())
    b1 = await h.create(admin("bo", "org_b"), woo())
    a2 = await h.create(admin(), commands.CreateSetupRequest(prebuilt_id="quickbooks_online",
                                                             connection={"company_id": "1"}))
    await h.start(operator(), commands.StartSetupRequest(a1.id))
    queue = await h.list_requests(operator(), commands.ListSetupRequests(all_organisations=True))
    assert [r.id for r in queue.setup_requests] == [a1.id, b1.id, a2.id]
    submitted = await h.list_requests(operator(), commands.ListSetupRequests(
        statuses=[SetupStatus.SUBMITTED], all_organisations=True))
    assert [r.id for r in submitted.setup_requests] == [b1.id, a2.id]
    own = await h.list_requests(admin(), commands.ListSetupRequests())
    assert [r.id for r in own.setup_requests] == [a2.id, a1.id]


async def test_an_empty_id_is_invalid_argument_naming_it(h: SetupRequestHandlers) -> None:
    for call in (h.get(admin(), ""), h.start(operator(), commands.StartSetupRequest(" "))):
        with pytest.raises(InvalidArgument) as caught:
            await call
        assert caught.value.fields["field"] == "setup_request_id"


# --- reading the secrets, their erasure, separation of duties -------------------------------------


def both(user: str = "rita", org: str = "org_a") -> Actor:
    """A user holding the administration and the platform permission (the embedded Administrator)."""
    return Actor(user_id=user, org_id=org, permissions=frozenset({ADMIN_PERMISSION, PLATFORM_PERMISSION}))


async def test_an_operator_reads_the_secrets_while_in_progress_and_the_read_is_recorded_and_audited(
        h: SetupRequestHandlers, store: MemoryStore) -> None:
    r = await h.create(admin(), woo())
    await h.start(operator(), commands.StartSetupRequest(r.id))
    commits = store.commits
    revealed = await h.reveal_secrets(operator("op_kim"), commands.RevealSetupRequestSecrets(
        r.id, reason=" webhook setup ", request_id="req-r"))
    assert revealed.secrets == {"consumer_key": "ck_live_123", "consumer_secret": "cs_live_456"}
    assert "cs_live_456" not in repr(revealed)
    step = revealed.setup_request.history[-1]
    assert (step.action, step.actor_id, step.note) == ("secrets_revealed", "op_kim", "webhook setup")
    assert store.commits == commits + 1 and store.published[-1] == [store.events[-1].event_id]
    change = published_setup(store)[-1]
    assert (change.kind, change.actor_id, change.reason, change.request_id) == (
        "secrets_revealed", "op_kim", "webhook setup", "req-r")
    assert change.after.org_id == "org_a" and "cs_live_456" not in json.dumps(change.after.snapshot())
    seen = await h.get(admin(), r.id)
    assert seen.status is SetupStatus.IN_PROGRESS and seen.history[-1].action == "secrets_revealed"
    assert sealed_secrets(store, r.id) is not None  # still there: it is still being configured


async def test_reading_the_secrets_is_refused_outside_in_progress_and_to_administrators(
        h: SetupRequestHandlers, store: MemoryStore) -> None:
    r = await h.create(admin(), woo())
    commits = store.commits
    with pytest.raises(FailedPrecondition) as refused_state:
        await h.reveal_secrets(operator(), commands.RevealSetupRequestSecrets(r.id))
    assert "start it first" in refused_state.value.message
    await h.start(operator(), commands.StartSetupRequest(r.id))
    with pytest.raises(PermissionDenied) as refused_admin:
        await h.reveal_secrets(admin("ada"), commands.RevealSetupRequestSecrets(r.id))
    assert refused_admin.value.fields["permission"] == PLATFORM_PERMISSION
    with pytest.raises(NotFound):
        await h.reveal_secrets(operator(), commands.RevealSetupRequestSecrets("setup_nope"))
    with pytest.raises(InvalidArgument) as empty:
        await h.reveal_secrets(operator(), commands.RevealSetupRequestSecrets(""))
    assert empty.value.fields["field"] == "setup_request_id"
    assert store.commits == commits + 1  # the start only
    assert [c.kind for c in published_setup(store)] == ["submitted", "started"]


@pytest.mark.parametrize("end", ["complete", "decline"])
async def test_configured_or_declined_erases_the_sealed_secrets_and_nothing_reads_them_again(
        h: SetupRequestHandlers, store: MemoryStore, end: str) -> None:
    r = await h.create(admin(), woo())
    await h.start(operator(), commands.StartSetupRequest(r.id))
    if end == "complete":
        done = await h.complete(operator(), commands.CompleteSetupRequest(r.id, note="Live"))
    else:
        done = await h.decline(operator(), commands.DeclineSetupRequest(r.id, "Wrong store"))
    assert sealed_secrets(store, r.id) is None
    assert done.secrets_given == ["consumer_key", "consumer_secret"] and done.history[-1].action == "secrets_erased"
    with pytest.raises(FailedPrecondition) as caught:
        await h.reveal_secrets(operator(), commands.RevealSetupRequestSecrets(r.id))
    assert "erased" in caught.value.message


async def test_the_requester_cannot_handle_their_own_request_even_holding_both_permissions(
        h: SetupRequestHandlers, store: MemoryStore) -> None:
    r = await h.create(both(), woo())
    with pytest.raises(PermissionDenied) as caught:
        await h.start(both(), commands.StartSetupRequest(r.id))
    assert "separation of duties" in caught.value.message and "permission" not in caught.value.fields
    with pytest.raises(PermissionDenied):
        await h.decline(both(), commands.DeclineSetupRequest(r.id, "mine"))
    await h.start(both("ada"), commands.StartSetupRequest(r.id))
    for call in (h.complete(both(), commands.CompleteSetupRequest(r.id)),
                 h.reveal_secrets(both(), commands.RevealSetupRequestSecrets(r.id))):
        with pytest.raises(PermissionDenied) as caught:
            await call
        assert "you submitted this setup request" in caught.value.message
    assert [c.kind for c in published_setup(store)] == ["submitted", "started"]
    assert (await h.reveal_secrets(both("ada"), commands.RevealSetupRequestSecrets(r.id))).secrets["consumer_key"] \
        == "ck_live_123"
