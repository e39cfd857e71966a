"""Webhooks' use cases at the unit-of-work seam, in memory: what commits together, which
changes are written to the outbox (and audited), what the dispatcher is told, and what a
refused unit leaves behind. No database (the same handlers on SQLite and PostgreSQL:
tests/integration/webhooks); the POST is a fake at the DeliveryPort seam."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from services.kit.auth import ADMIN_PERMISSION, Actor
from services.kit.crypto import Envelope
from services.kit.errors import FailedPrecondition, InvalidArgument
from services.kit.uow import MemoryStore
from services.webhooks.application import commands
from services.webhooks.application.handlers import ActivityIngest, WebhookHandlers
from services.webhooks.application.ports import DeliveryRecord
from services.webhooks.domain.model import (
    SYSTEM_ACTOR, TEST_TYPE, AttemptError, DeliveryStatus, HttpResult, RetryPolicy, SubscriptionStatus, secret_aad,
)
from tests.unit.webhooks.memory import (
    FakeDelivery, FakeDestinations, FakeDispatcher, FakeRegistry, MemoryWebhooksUnitOfWork, no_trace, published,
)

_n = itertools.count()
NOW = dt.datetime(2026, 12, 3, 11, 0, tzinfo=dt.timezone.utc)
URL = "https://hooks.example.com/trellis"


@dataclass
class World:
    store: MemoryStore = field(default_factory=MemoryStore)
    delivery: FakeDelivery = field(default_factory=FakeDelivery)
    dispatcher: FakeDispatcher = field(default_factory=FakeDispatcher)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    destinations: FakeDestinations = field(default_factory=FakeDestinations)
    org: str = field(default_factory=lambda: f"org_w{next(_n)}")
    notified: int = 0

    def __post_init__(self) -> None:
        self.envelope = Envelope({1: secrets.token_bytes(32)}, 1)

        def units(*, read_only: bool = False) -> MemoryWebhooksUnitOfWork:
            return MemoryWebhooksUnitOfWork(self.store, read_only=read_only)

        def notify() -> None:
            self.notified += 1

        ingest = ActivityIngest(units, self.dispatcher, clock=lambda: NOW)
        self.handlers = WebhookHandlers(
            units, self.envelope, self.delivery, self.dispatcher, ingest, RetryPolicy.of([60, 300, 1800, 7200]),
            user_agent="GrowerIQ-Webhook/1.0", integrations=self.registry, destinations=self.destinations,
            trace_context=no_trace, owner="replica-1", notify=notify, clock=lambda: NOW,
        )

    def admin(self, user: str = "alice") -> Actor:
        return Actor(user_id=user, org_id=self.org, permissions=frozenset({ADMIN_PERMISSION}), token=f"token-of-{user}")

    async def subscribed(self, **fields: object) -> tuple[str, str]:
        cmd = commands.CreateSubscription(url=URL, activity_types=["lot.created"], **fields)  # type: ignore[arg-type]
        subscription, secret = await self.handlers.create(self.admin(), cmd)
        return subscription.id, secret

    def row(self, subscription_id: str):  # type: ignore[no-untyped-def]
        return self.store.tables["subscriptions"][subscription_id]

    def opened(self, subscription_id: str) -> str:
        return self.envelope.open(self.row(subscription_id).secret, secret_aad(subscription_id)).decode()

    def add_delivery(self, subscription_id: str, status: DeliveryStatus, **fields: object) -> str:
        delivery_id = f"dlv_{next(_n)}"
        values: dict[str, Any] = {
            "id": delivery_id, "org_id": self.org, "subscription_id": subscription_id, "event_id": f"evt_{next(_n)}",
            "event_type": "lot.created", "status": status, "round": 1, "attempts": 5, "next_attempt_at": None,
            "created_at": NOW, "updated_at": NOW, "last_status_code": 500, "last_error": AttemptError.HTTP_STATUS,
            "last_error_detail": "", "test": False, **fields,
        }
        self.store.table("deliveries")[delivery_id] = DeliveryRecord(**values)
        return delivery_id


async def test_create_commits_the_sealed_secret_with_its_change_and_audit_record_in_one_unit() -> None:
    w = World()
    commits = w.store.commits
    subscription_id, secret = await w.subscribed()
    assert w.store.commits == commits + 1
    assert secret.startswith("whsec_") and w.opened(subscription_id) == secret
    assert w.row(subscription_id).subscription.status is SubscriptionStatus.ACTIVE
    assert [(p.kind, p.actor_id, p.audited) for p in published(w.store)] == [("created", "alice", True)]
    assert [e.subject for e in w.store.events] == ["trellis.subscription.created",
                                                   "trellis.audit.webhooks.subscription.created"]
    assert w.notified == 1


async def test_create_refuses_a_revoked_owner_or_an_unreachable_url_and_commits_nothing() -> None:
    w = World()
    w.registry.statuses["int_gone"] = "revoked"
    with pytest.raises(FailedPrecondition, match="revoked"):
        await w.subscribed(view=commands.View(integration_id="int_gone"))
    w.destinations.refused[URL] = "a private address; TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS allows it"
    with pytest.raises(InvalidArgument, match="ALLOWED_PRIVATE_NETWORKS"):
        await w.subscribed()
    assert w.store.commits == 0 and w.store.events == [] and "subscriptions" not in w.store.tables


async def test_an_owner_suspended_at_the_registry_is_created_held() -> None:
    w = World()
    w.registry.statuses["int_1"] = "suspended"
    subscription_id, _ = await w.subscribed(view=commands.View(integration_id="int_1"))
    assert w.row(subscription_id).subscription.integration_suspended


async def test_pause_commits_its_change_and_tells_the_dispatcher_and_a_second_pause_changes_nothing() -> None:
    w = World()
    subscription_id, _ = await w.subscribed()
    paused = await w.handlers.pause(w.admin("bob"), commands.SubscriptionRef(subscription_id))
    assert paused.status is SubscriptionStatus.PAUSED and paused.version == 2
    assert w.dispatcher.changed == [(subscription_id, 2)]
    commits, rollbacks = w.store.commits, w.store.rollbacks
    again = await w.handlers.pause(w.admin("bob"), commands.SubscriptionRef(subscription_id))
    assert again.version == 2
    assert (w.store.commits, w.store.rollbacks) == (commits, rollbacks + 1)
    assert [(p.kind, p.actor_id, p.version) for p in published(w.store)] == [("created", "alice", 1), ("paused", "bob", 2)]
    assert w.dispatcher.changed == [(subscription_id, 2)]


async def test_regenerating_the_secret_seals_the_new_one_in_place_of_the_old() -> None:
    w = World()
    subscription_id, old = await w.subscribed()
    subscription, new = await w.handlers.regenerate_secret(w.admin(), commands.SubscriptionRef(subscription_id))
    assert new != old and new.startswith("whsec_")
    assert w.opened(subscription_id) == new
    assert subscription.secret_created_at == NOW and subscription.version == 2
    assert published(w.store)[-1].kind == "secret_regenerated" and published(w.store)[-1].audited
    assert w.dispatcher.changed == [(subscription_id, 2)]


async def test_redeliver_gives_a_failed_delivery_a_new_round_due_now_and_wakes_the_dispatcher() -> None:
    w = World()
    subscription_id, _ = await w.subscribed()
    delivery_id = w.add_delivery(subscription_id, DeliveryStatus.FAILED)
    delivery = await w.handlers.redeliver(w.admin(), commands.DeliveryRef(delivery_id))
    assert (delivery.status, delivery.round, delivery.attempts, delivery.next_attempt_at) == \
        (DeliveryStatus.PENDING, 2, 0, NOW)
    assert w.dispatcher.woken == 1


async def test_redeliver_refuses_a_pending_delivery_and_a_disabled_subscription_leaving_both_as_they_were() -> None:
    w = World()
    subscription_id, _ = await w.subscribed()
    pending = w.add_delivery(subscription_id, DeliveryStatus.PENDING, next_attempt_at=NOW + dt.timedelta(minutes=5))
    with pytest.raises(FailedPrecondition, match="pending"):
        await w.handlers.redeliver(w.admin(), commands.DeliveryRef(pending))
    failed = w.add_delivery(subscription_id, DeliveryStatus.FAILED)
    row = w.row(subscription_id)
    row.subscription = replace(row.subscription, status=SubscriptionStatus.DISABLED)
    commits = w.store.commits
    with pytest.raises(FailedPrecondition, match="disabled"):
        await w.handlers.redeliver(w.admin(), commands.DeliveryRef(failed))
    assert w.store.commits == commits
    assert w.store.tables["deliveries"][failed].status is DeliveryStatus.FAILED
    assert w.dispatcher.woken == 0


async def test_a_test_send_signs_with_the_subscriptions_secret_and_logs_one_attempt() -> None:
    w = World()
    subscription_id, secret = await w.subscribed()
    result = await w.handlers.send_test(w.admin(), commands.SubscriptionRef(subscription_id))
    [sent] = w.delivery.sent
    assert (sent["url"], sent["secret"], sent["event_type"], sent["user_agent"]) == (URL, secret, TEST_TYPE,
                                                                                       "GrowerIQ-Webhook/1.0")
    assert json.loads(sent["body"])["type"] == TEST_TYPE
    assert result.delivery.test and result.delivery.status is DeliveryStatus.SUCCEEDED
    assert (result.attempt.attempt, result.attempt.status_code, result.attempt.succeeded) == (1, 200, True)
    assert result.attempt.event_id == sent["event_id"] == result.delivery.event_id
    assert result.subscription.status is SubscriptionStatus.ACTIVE
    assert [p.kind for p in published(w.store)] == ["created"]  # an Active one has nothing to recover


async def test_a_successful_test_send_brings_a_failing_subscription_back_and_releases_its_queue() -> None:
    w = World()
    subscription_id, _ = await w.subscribed()
    row = w.row(subscription_id)
    row.subscription = replace(row.subscription, status=SubscriptionStatus.FAILING, failing_since=NOW, version=2)
    held = w.add_delivery(subscription_id, DeliveryStatus.PENDING, next_attempt_at=NOW + dt.timedelta(hours=2))
    result = await w.handlers.send_test(w.admin(), commands.SubscriptionRef(subscription_id))
    assert result.subscription.status is SubscriptionStatus.ACTIVE and result.subscription.version == 3
    assert w.store.tables["deliveries"][held].next_attempt_at == NOW
    assert [(p.kind, p.actor_id, p.audited) for p in published(w.store)][-1] == ("recovered", SYSTEM_ACTOR, False)
    assert w.dispatcher.changed == [(subscription_id, 3)] and w.dispatcher.woken == 1


async def test_a_failed_test_send_is_tried_once_and_leaves_a_failing_subscription_failing() -> None:
    w = World(delivery=FakeDelivery(result=HttpResult(status_code=503, error=AttemptError.HTTP_STATUS)))
    subscription_id, _ = await w.subscribed()
    row = w.row(subscription_id)
    row.subscription = replace(row.subscription, status=SubscriptionStatus.FAILING, failing_since=NOW)
    result = await w.handlers.send_test(w.admin(), commands.SubscriptionRef(subscription_id))
    assert result.delivery.status is DeliveryStatus.FAILED and result.delivery.next_attempt_at is None
    assert (result.attempt.status_code, result.attempt.succeeded) == (503, False)
    assert w.row(subscription_id).subscription.status is SubscriptionStatus.FAILING
    assert w.dispatcher.changed == [] and w.dispatcher.woken == 0


async def test_a_disabled_subscription_sends_no_test() -> None:
    w = World()
    subscription_id, _ = await w.subscribed()
    row = w.row(subscription_id)
    row.subscription = replace(row.subscription, status=SubscriptionStatus.DISABLED)
    with pytest.raises(FailedPrecondition, match="disabled"):
        await w.handlers.send_test(w.admin(), commands.SubscriptionRef(subscription_id))
    assert w.delivery.sent == []


async def test_delete_cancels_the_pending_deliveries_in_the_same_unit_as_its_change() -> None:
    w = World()
    subscription_id, _ = await w.subscribed()
    pending = w.add_delivery(subscription_id, DeliveryStatus.PENDING, next_attempt_at=NOW)
    failed = w.add_delivery(subscription_id, DeliveryStatus.FAILED)
    assert await w.handlers.delete(w.admin(), commands.SubscriptionRef(subscription_id)) == 1
    deliveries = w.store.tables["deliveries"]
    assert (deliveries[pending].status, deliveries[failed].status) == (DeliveryStatus.CANCELLED, DeliveryStatus.FAILED)
    assert w.row(subscription_id).deleted
    assert [(p.kind, p.version, p.audited) for p in published(w.store)][-1] == ("deleted", 2, True)
    assert w.dispatcher.changed == [(subscription_id, 2)]


def _change(event_id: str, org: str, status: str, version: int) -> commands.ApplyIntegrationChange:
    return commands.ApplyIntegrationChange(event_id=event_id, org_id=org, integration_id="int_1", status=status,
                                           version=version)


async def test_the_owners_revocation_disables_its_subscriptions_once_and_an_older_event_changes_nothing() -> None:
    w = World()
    w.registry.statuses["int_1"] = "active"
    subscription_id, _ = await w.subscribed(view=commands.View(integration_id="int_1"))
    pending = w.add_delivery(subscription_id, DeliveryStatus.PENDING, next_attempt_at=NOW)
    await w.handlers.apply_integration_change(_change("evt_a", w.org, "revoked", 7))
    assert w.row(subscription_id).subscription.status is SubscriptionStatus.DISABLED
    assert w.store.tables["deliveries"][pending].status is DeliveryStatus.CANCELLED
    assert [(p.kind, p.actor_id, p.audited) for p in published(w.store)][-1] == ("disabled", SYSTEM_ACTOR, False)
    assert w.dispatcher.changed == [(subscription_id, 2)] and w.dispatcher.woken == 1
    events, commits = len(w.store.events), w.store.commits
    await w.handlers.apply_integration_change(_change("evt_a", w.org, "revoked", 7))  # the same event again
    await w.handlers.apply_integration_change(_change("evt_b", w.org, "active", 6))  # older, after a revocation
    assert len(w.store.events) == events and w.dispatcher.changed == [(subscription_id, 2)]
    assert w.store.commits == commits + 1  # the older event is marked applied all the same
    assert set(w.store.tables["processed"]) == {"evt_a", "evt_b"}


async def test_the_owners_suspension_holds_its_subscriptions_and_reactivation_releases_them() -> None:
    w = World()
    w.registry.statuses["int_1"] = "active"
    subscription_id, _ = await w.subscribed(view=commands.View(integration_id="int_1"))
    await w.handlers.apply_integration_change(_change("evt_s", w.org, "suspended", 3))
    assert w.row(subscription_id).subscription.integration_suspended
    await w.handlers.apply_integration_change(_change("evt_r", w.org, "active", 4))
    assert not w.row(subscription_id).subscription.integration_suspended
    assert [p.kind for p in published(w.store)] == ["created", "integration_suspended", "integration_reactivated"]
