"""Webhooks' ports in memory, for handler tests: the subscriptions and the delivery log on the
unit of work over services.kit.uow's MemoryStore, and fakes at the delivery, registry,
destination and dispatcher seams. Only what the use cases under test call is here; the SQL
store is tested on SQLite and PostgreSQL (tests/integration/webhooks)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

from services.kit.auth import Actor
from services.kit.errors import NotFound
from services.kit.uow import InMemoryUnitOfWork, MemoryStore
from services.webhooks.application.ports import Accepted, AttemptRecord, DeliveryRecord, Scope, SentBody
from services.webhooks.domain.model import (
    AttemptError, AttemptExchange, DeliveryStatus, HttpResult, IncomingActivity, SignatureScheme, Subscription, delivery_body,
)


@dataclass
class SubscriptionRow:
    subscription: Subscription
    secret: bytes
    headers: bytes = b""
    client_tls: bytes = b""
    previous_secret: bytes = b""
    deleted: bool = False


class MemorySubscriptions:
    """application.ports.Subscriptions over the unit's tables; it hands out copies, as a database does."""

    def __init__(self, rows: dict[str, SubscriptionRow], deliveries: dict[str, DeliveryRecord],
                 integrations: dict[tuple[str, str], str], versions: dict[str, int], processed: dict[str, dt.datetime]) -> None:
        self._rows, self._deliveries, self._integrations = rows, deliveries, integrations
        self._versions, self._processed = versions, processed

    def _row(self, scope: Scope, subscription_id: str) -> SubscriptionRow:
        row = self._rows.get(subscription_id)
        if (row is None or row.deleted or row.subscription.org_id != scope.org_id
                or (scope.integration_id is not None and row.subscription.integration_id != scope.integration_id)):
            raise NotFound(f"no webhook subscription {subscription_id}", subscription_id=subscription_id)
        return row

    async def add(self, subscription: Subscription, sealed_secret: bytes, *, sealed_headers: bytes = b"",
                  sealed_client_tls: bytes = b"") -> None:
        self._rows[subscription.id] = SubscriptionRow(copy.deepcopy(subscription), sealed_secret, sealed_headers,
                                                      sealed_client_tls)

    async def sealed_client_tls(self, subscription_id: str) -> bytes:
        return self._rows[subscription_id].client_tls

    async def sealed_previous_secret(self, subscription_id: str) -> bytes:
        return self._rows[subscription_id].previous_secret

    async def erase_ended_overlaps(self, now: dt.datetime) -> int:
        ended = [row for row in self._rows.values() if row.subscription.previous_secret_expires_at is not None
                 and row.subscription.previous_secret_expires_at < now]
        for row in ended:
            row.previous_secret = b""
            row.subscription.previous_secret_expires_at = None
        return len(ended)

    async def get(self, scope: Scope, subscription_id: str, *, for_update: bool = False) -> Subscription:
        return copy.deepcopy(self._row(scope, subscription_id).subscription)

    async def sealed_secret(self, subscription_id: str) -> bytes:
        return self._rows[subscription_id].secret

    async def sealed_headers(self, subscription_id: str) -> bytes:
        return self._rows[subscription_id].headers

    async def save(self, subscription: Subscription, *, sealed_secret: bytes | None = None,
                   sealed_headers: bytes | None = None, sealed_client_tls: bytes | None = None,
                   sealed_previous_secret: bytes | None = None) -> None:
        row = self._rows[subscription.id]
        if sealed_previous_secret is not None:
            row.previous_secret = sealed_previous_secret
        if sealed_client_tls is not None:
            row.client_tls = sealed_client_tls
        row.subscription = copy.deepcopy(subscription)
        if sealed_secret is not None:
            row.secret = sealed_secret
        if sealed_headers is not None:
            row.headers = sealed_headers

    async def cancel_pending(self, subscription_ids: Sequence[str], now: dt.datetime) -> int:
        pending = [d for d in self._deliveries.values()
                   if d.subscription_id in subscription_ids and d.status is DeliveryStatus.PENDING]
        for d in pending:
            self._deliveries[d.id] = replace(d, status=DeliveryStatus.CANCELLED, next_attempt_at=None, updated_at=now)
        return len(pending)

    async def delete(self, subscription: Subscription, now: dt.datetime) -> int:
        self._rows[subscription.id].deleted = True
        return await self.cancel_pending([subscription.id], now)

    async def release_queue(self, subscription_id: str, now: dt.datetime) -> int:
        held = [d for d in self._deliveries.values() if d.subscription_id == subscription_id
                and d.status is DeliveryStatus.PENDING and d.next_attempt_at is not None]
        for d in held:
            self._deliveries[d.id] = replace(d, next_attempt_at=now, updated_at=now)
        return len(held)

    async def of_integration(self, org_id: str, integration_id: str) -> list[Subscription]:
        return [copy.deepcopy(r.subscription) for r in self._rows.values() if not r.deleted
                and r.subscription.org_id == org_id and r.subscription.integration_id == integration_id]

    async def integration_status(self, org_id: str, integration_id: str) -> str | None:
        return self._integrations.get((org_id, integration_id))

    async def record_integration(self, org_id: str, integration_id: str, status: str, version: int,
                                 now: dt.datetime) -> bool:
        known = self._integrations.get((org_id, integration_id))
        if known == "revoked" or (known is not None and version and self._versions[integration_id] > version):
            return False
        self._integrations[(org_id, integration_id)] = status
        self._versions[integration_id] = version
        return True

    async def mark_processed(self, event_id: str, now: dt.datetime) -> bool:
        if event_id in self._processed:
            return False
        self._processed[event_id] = now
        return True


class MemoryActivities:
    """application.ports.Activities over the unit's tables (deliveries and attempts)."""

    def __init__(self, deliveries: dict[str, DeliveryRecord], attempts: dict[str, AttemptRecord],
                 activities: dict[tuple[str, str], IncomingActivity], rows: dict[str, SubscriptionRow]) -> None:
        self._deliveries, self._attempts, self._activities, self._rows = deliveries, attempts, activities, rows

    def _visible(self, scope: Scope, org_id: str, subscription_id: str) -> bool:
        row = self._rows.get(subscription_id)
        return org_id == scope.org_id and (scope.integration_id is None
                                           or (row is not None and row.subscription.integration_id == scope.integration_id))

    async def ingest(self, batch: Sequence[IncomingActivity], bodies: Sequence[bytes], now: dt.datetime) -> list[Accepted]:
        raise NotImplementedError("not needed by these tests")

    async def add_test(self, activity: IncomingActivity, body: bytes, subscription_id: str, delivery_id: str,
                       now: dt.datetime) -> None:
        self._activities[(activity.org_id, activity.event_id)] = activity
        self._deliveries[delivery_id] = DeliveryRecord(
            id=delivery_id, org_id=activity.org_id, subscription_id=subscription_id, event_id=activity.event_id,
            event_type=activity.type, status=DeliveryStatus.PENDING, round=1, attempts=0, next_attempt_at=None,
            created_at=now, updated_at=now, last_status_code=0, last_error=AttemptError.NONE, last_error_detail="",
            test=True,
        )

    async def finish_test(self, delivery_id: str, row: dict[str, object], status: DeliveryStatus,
                          now: dt.datetime) -> None:
        values: dict[str, Any] = {k: v for k, v in row.items() if k != "sent_by"}
        values["error"] = AttemptError(values["error"])
        exchange = values.pop("exchange", None)
        values["exchange"] = AttemptExchange.from_json(str(exchange)) if exchange else None
        self._attempts[str(row["id"])] = AttemptRecord(**values)
        d = self._deliveries[delivery_id]
        self._deliveries[delivery_id] = replace(d, status=status, attempts=1, updated_at=now,
                                                last_status_code=int(str(row["status_code"])),
                                                last_error=AttemptError(row["error"]),
                                                last_error_detail=str(row["error_detail"]))

    async def get_delivery(self, scope: Scope, delivery_id: str) -> DeliveryRecord:
        d = self._deliveries.get(delivery_id)
        if d is None or not self._visible(scope, d.org_id, d.subscription_id):
            raise NotFound(f"no delivery {delivery_id}", delivery_id=delivery_id)
        return d

    async def attempts_of(self, scope: Scope, delivery_id: str) -> list[AttemptRecord]:
        return sorted((a for a in self._attempts.values() if a.delivery_id == delivery_id
                       and self._visible(scope, a.org_id, a.subscription_id)), key=lambda a: (a.attempted_at, a.id))

    async def get_attempt(self, scope: Scope, attempt_id: str) -> AttemptRecord:
        a = self._attempts.get(attempt_id)
        if a is None or not self._visible(scope, a.org_id, a.subscription_id):
            raise NotFound(f"no attempt {attempt_id}", attempt_id=attempt_id)
        return a

    async def last_attempts(self, scope: Scope, subscription_ids: Sequence[str]) -> list[AttemptRecord]:
        latest: dict[str, AttemptRecord] = {}
        for a in sorted(self._attempts.values(), key=lambda a: (a.attempted_at, a.id)):
            if a.subscription_id in subscription_ids and self._visible(scope, a.org_id, a.subscription_id):
                latest[a.subscription_id] = a
        return list(latest.values())

    async def sent_body(self, delivery: DeliveryRecord, limit: int) -> SentBody:
        activity = self._activities[(delivery.org_id, delivery.event_id)]
        body = delivery_body(activity)
        return SentBody(body[:limit], len(body), self._rows[delivery.subscription_id].subscription.scheme)

    async def redeliver(self, delivery: DeliveryRecord, now: dt.datetime) -> None:
        current = self._deliveries[delivery.id]
        if current.status is delivery.status:
            self._deliveries[delivery.id] = replace(current, status=DeliveryStatus.PENDING, round=delivery.round + 1,
                                                    attempts=0, next_attempt_at=now, updated_at=now)


@dataclass(frozen=True)
class Published:
    """One change a unit wrote to the outbox, as the tests read it back."""

    kind: str
    subscription_id: str
    version: int
    actor_id: str
    audited: bool
    request_id: str = ""


class MemoryWebhooksUnitOfWork(InMemoryUnitOfWork):
    """application.ports.WebhooksUnitOfWork in memory: each change is one outbox event (two when
    audited, as the SQL unit writes), kept by its first event id in the "published" table."""

    subscriptions: MemorySubscriptions
    activities: MemoryActivities

    def __init__(self, store: MemoryStore, *, read_only: bool = False) -> None:
        super().__init__(store)
        self.read_only = read_only

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        rows, deliveries = self.table("subscriptions"), self.table("deliveries")
        self.subscriptions = MemorySubscriptions(rows, deliveries, self.table("integrations"),
                                                 self.table("integration_versions"), self.table("processed"))
        self.activities = MemoryActivities(deliveries, self.table("attempts"), self.table("activities"), rows)
        return self

    async def commit(self) -> None:
        if self.read_only:
            raise RuntimeError("a read-only unit of work does not commit")
        await super().commit()

    async def changed(self, kind: str, subscription: Subscription, *, actor_id: str, now: dt.datetime) -> None:
        event_id = await self.add_event(f"trellis.subscription.{kind}", b"")
        self.table("published")[event_id] = Published(kind, subscription.id, subscription.version, actor_id, False)

    async def changed_and_audited(self, kind: str, *, before: Subscription | None, after: Subscription,
                                  actor_id: str, now: dt.datetime, request_id: str = "") -> None:
        event_id = await self.add_event(f"trellis.subscription.{kind}", b"")
        await self.add_event(f"trellis.audit.webhooks.subscription.{kind}", b"")
        self.table("published")[event_id] = Published(kind, after.id, after.version, actor_id, True, request_id)


    async def alerted(self, alert: IncomingActivity, *, integration_id: str, url: str,
                      failing_since: dt.datetime | None, now: dt.datetime) -> int:
        event_id = await self.add_event(f"trellis.webhooks.alert.{alert.type.removeprefix('webhook.')}", b"")
        self.table("alerts")[event_id] = alert
        return 0


def alerts(store: MemoryStore) -> list[IncomingActivity]:
    """Every committed alert, in the order written."""
    return list(store.tables.get("alerts", {}).values())


def published(store: MemoryStore) -> list[Published]:
    """Every committed change, in the order written."""
    return list(store.tables.get("published", {}).values())


@dataclass
class FakeDelivery:
    """The DeliveryPort: records each send and answers with `result`."""

    result: HttpResult = field(default_factory=lambda: HttpResult(status_code=200, duration_ms=3.0))
    sent: list[dict[str, Any]] = field(default_factory=list)
    at: dt.datetime = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)

    async def send(self, *, url: str, scheme: SignatureScheme, secret: str, event_id: str, event_type: str,
                   body: bytes, user_agent: str, trace_headers: str = "",
                   custom_headers: Mapping[str, str] | None = None,
                   client_tls: tuple[str, str] | None = None,
                   previous_secret: str | None = None) -> tuple[HttpResult, dt.datetime]:
        self.sent.append({"url": url, "scheme": scheme, "secret": secret, "event_id": event_id,
                          "event_type": event_type, "body": body, "user_agent": user_agent,
                          "custom_headers": dict(custom_headers or {})})
        return self.result, self.at


@dataclass
class FakeDispatcher:
    woken: int = 0
    changed: list[tuple[str, int]] = field(default_factory=list)

    def wake(self) -> None:
        self.woken += 1

    def subscription_changed(self, subscription_id: str, version: int) -> None:
        self.changed.append((subscription_id, version))


@dataclass
class FakeRegistry:
    """The IntegrationsPort: each integration's status at the registry."""

    statuses: dict[str, str] = field(default_factory=dict)

    async def status(self, actor: Actor, integration_id: str, request_id: str = "") -> str:
        if integration_id not in self.statuses:
            raise NotFound(f"no integration {integration_id} in your organisation", integration_id=integration_id)
        return self.statuses[integration_id]


@dataclass
class FakeDestinations:
    refused: dict[str, str] = field(default_factory=dict)

    async def refusal(self, url: str) -> str | None:
        return self.refused.get(url)


def no_trace() -> Mapping[str, str]:
    return {}
