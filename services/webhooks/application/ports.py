"""What webhooks' use cases need from the world, as protocols: storage behind a unit of work
(services.kit.uow) with the subscriptions and the activity log on it, the delivery of one
signed POST, the registry (which integration an administrator may name as an owner), the check
of a destination, and the dispatcher's signals. The adapters implement them
(adapters/store.py, adapters/sender.py, adapters/registry_client.py, adapters/ssrf.py,
adapters/dispatcher.py); handler tests pass in-memory ones (tests/unit/webhooks/memory.py).

The records the delivery log is read as live here too: the store returns them, the gRPC API
turns them into messages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.kit.auth import Actor
from services.kit.uow import UnitOfWork
from services.webhooks.domain.model import (
    AttemptError, AttemptExchange, DeliveryStatus, HttpResult, IncomingActivity, Recovery, SignatureScheme, Subscription,
    SubscriptionStatus,
)

# --- what the store reads and writes ---------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which subscriptions a caller sees: an organisation, and maybe one owning integration."""

    org_id: str
    integration_id: str | None = None


@dataclass(frozen=True)
class DeliveryRecord:
    id: str
    org_id: str
    subscription_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    round: int
    attempts: int
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    last_status_code: int
    last_error: AttemptError
    last_error_detail: str
    test: bool


@dataclass(frozen=True)
class AttemptRecord:
    id: str
    org_id: str
    delivery_id: str
    subscription_id: str
    event_id: str
    event_type: str
    round: int
    attempt: int
    attempted_at: dt.datetime
    duration_ms: float
    status_code: int
    succeeded: bool
    error: AttemptError
    error_detail: str
    response_body: str
    url: str
    test: bool
    # The delivery's next attempt, on its latest attempt while it is pending; else None.
    next_attempt_at: dt.datetime | None = None
    # What it sent and what came back; None in lists, and when attempt details are not stored.
    exchange: AttemptExchange | None = None


@dataclass(frozen=True)
class SentBody:
    """The body a delivery POSTs (its first `limit` bytes), its whole size, and the signature
    scheme its subscription signs with."""

    body: bytes
    size: int
    scheme: SignatureScheme


@dataclass(frozen=True)
class ActivityRecord:
    event_id: str
    org_id: str
    type: str
    occurred_at: dt.datetime
    received_at: dt.datetime
    sender_type: str
    sender_id: str
    data_json: str


@dataclass(frozen=True)
class Accepted:
    """One activity as ingested: a duplicate event id schedules nothing."""

    event_id: str
    org_id: str
    duplicate: bool
    deliveries: int
    # Deliveries recorded as Filtered: a matching subscription's filter did not pass the event.
    filtered: int = 0


def attempt_row(id_: str, *, org_id: str, delivery_id: str, subscription_id: str, event_id: str, event_type: str,
                round_: int, attempt: int, attempted_at: dt.datetime, url: str, test: bool, status_code: int,
                succeeded: bool, error: AttemptError, error_detail: str, response_body: str,
                duration_ms: float, sent_by: str, exchange: AttemptExchange | None = None) -> dict[str, object]:
    """One attempt of the delivery log, as the store writes it."""
    return {
        "id": id_, "org_id": org_id, "delivery_id": delivery_id, "subscription_id": subscription_id,
        "event_id": event_id, "event_type": event_type, "round": round_, "attempt": attempt,
        "attempted_at": attempted_at, "duration_ms": duration_ms, "status_code": status_code, "succeeded": succeeded,
        "error": error.value, "error_detail": error_detail, "response_body": response_body, "url": url, "test": test,
        "sent_by": sent_by, "exchange": exchange.as_json() if exchange is not None else None,
    }


class Subscriptions(Protocol):
    """Subscriptions and what changes with them, in the unit of work's transaction, always
    within one organisation; and the owning integrations' status as last heard on the bus."""

    async def add(self, subscription: Subscription, sealed_secret: bytes, *, sealed_headers: bytes = b"",
                  sealed_client_tls: bytes = b"") -> None: ...

    async def sealed_previous_secret(self, subscription_id: str) -> bytes:
        """The previous signing secret, sealed, while an overlap keeps it (b"": none)."""
        ...

    async def sealed_client_tls(self, subscription_id: str) -> bytes:
        """The sealed client certificate and key, b"" when it has none."""
        ...

    async def erase_ended_overlaps(self, now: dt.datetime) -> int:
        """Every organisation's previous signing secrets whose overlap ended before `now`, erased
        with their end; returns how many. (They no longer sign; the pass only removes the key.)"""
        ...

    async def get(self, scope: Scope, subscription_id: str, *, for_update: bool = False) -> Subscription:
        """The subscription, or NotFound when the scope does not see it (deleted ones neither)."""
        ...

    async def sealed_secret(self, subscription_id: str) -> bytes: ...

    async def sealed_headers(self, subscription_id: str) -> bytes:
        """The sealed custom headers, b"" when it has none."""
        ...

    async def save(self, subscription: Subscription, *, sealed_secret: bytes | None = None,
                   sealed_headers: bytes | None = None, sealed_client_tls: bytes | None = None,
                   sealed_previous_secret: bytes | None = None) -> None:
        """Writes the subscription; a sealed secret or sealed headers (b"": none) when they changed."""
        ...

    async def delete(self, subscription: Subscription, now: dt.datetime) -> int:
        """Soft-deletes it and cancels its pending deliveries; returns how many were cancelled."""
        ...

    async def cancel_pending(self, subscription_ids: Sequence[str], now: dt.datetime) -> int: ...

    async def release_queue(self, subscription_id: str, now: dt.datetime) -> int:
        """Makes every pending delivery due now (after recovery); returns how many."""
        ...

    async def list_page(self, scope: Scope, *, statuses: Sequence[SubscriptionStatus], size: int,
                        token: str) -> tuple[list[Subscription], str]: ...

    async def of_integration(self, org_id: str, integration_id: str) -> list[Subscription]:
        """The integration's live subscriptions, locked for update."""
        ...

    async def integration_status(self, org_id: str, integration_id: str) -> str | None: ...

    async def record_integration(self, org_id: str, integration_id: str, status: str, version: int,
                                 now: dt.datetime) -> bool:
        """Stores the integration's status unless a newer version is known or it was revoked; True if stored."""
        ...

    async def mark_processed(self, event_id: str, now: dt.datetime) -> bool:
        """False when this event was already applied."""
        ...


class Activities(Protocol):
    """The activities received, their deliveries and the delivery log, in the unit's transaction."""

    async def ingest(self, batch: Sequence[IncomingActivity], bodies: Sequence[bytes],
                     now: dt.datetime) -> list[Accepted]:
        """Stores each new activity and one pending delivery per matching subscription, due now;
        one its filter does not pass is stored as Filtered, never attempted."""
        ...

    async def add_test(self, activity: IncomingActivity, body: bytes, subscription_id: str, delivery_id: str,
                       now: dt.datetime) -> None:
        """A test event and its delivery, which only the caller attempts (never due)."""
        ...

    async def finish_test(self, delivery_id: str, row: dict[str, object], status: DeliveryStatus,
                          now: dt.datetime) -> None: ...

    async def get_delivery(self, scope: Scope, delivery_id: str) -> DeliveryRecord:
        """The delivery, or NotFound when the scope does not see it."""
        ...

    async def list_deliveries(self, scope: Scope, *, subscription_id: str, statuses: Sequence[DeliveryStatus],
                              event_id: str, size: int, token: str) -> tuple[list[DeliveryRecord], str]: ...

    async def attempts_of(self, scope: Scope, delivery_id: str) -> list[AttemptRecord]: ...

    async def get_attempt(self, scope: Scope, attempt_id: str) -> AttemptRecord:
        """One attempt with what it sent and what came back, or NotFound when the scope does not see it."""
        ...

    async def last_attempts(self, scope: Scope, subscription_ids: Sequence[str]) -> list[AttemptRecord]:
        """The latest attempt of each of these subscriptions that has one."""
        ...

    async def sent_body(self, delivery: DeliveryRecord, limit: int) -> SentBody:
        """What the delivery's attempts POST: the event's stored body, at most `limit` bytes of it."""
        ...

    async def list_attempts(self, scope: Scope, *, subscription_id: str, succeeded: bool | None, event_id: str,
                            delivery_id: str, size: int, token: str) -> tuple[list[AttemptRecord], str]: ...

    async def redeliver(self, delivery: DeliveryRecord, now: dt.datetime) -> None:
        """A new round of the schedule for the delivery, due now."""
        ...

    async def list_activities(self, org_id: str, *, types: Sequence[str], size: int,
                              token: str, hide_alerts: bool = False) -> tuple[list[ActivityRecord], str]:
        """The organisation's activities, newest first; `hide_alerts` leaves out webhook.* ones."""
        ...

    # recovery after an outage

    async def add_recovery(self, recovery: Recovery) -> None: ...

    async def recover_batch(self, recovery: Recovery, *, after: tuple[int, str] | None, limit: int,
                            now: dt.datetime) -> tuple[int, tuple[int, str] | None]:
        """Sends again up to `limit` failed deliveries of the recovery's subscription and range,
        after the keyset `after` (arrival order): a new round each, due now, recorded as the
        recovery's. Returns how many were queued and the keyset to go on from (None: no more)."""
        ...

    async def set_recovery_queued(self, recovery_id: str, queued: int) -> None: ...

    async def get_recovery(self, scope: Scope, recovery_id: str) -> Recovery:
        """The recovery and its progress, or NotFound when the scope does not see it."""
        ...

    async def list_recoveries(self, scope: Scope, *, subscription_id: str, size: int,
                              token: str) -> tuple[list[Recovery], str]:
        """The recoveries the scope sees (of one subscription when `subscription_id` is set),
        newest first, `size` a page, each with its progress; and the next page's token ("": none)."""
        ...

    # retention

    async def retention_override(self, org_id: str) -> int | None: ...

    async def set_retention_override(self, org_id: str, days: int | None, *, actor_id: str, now: dt.datetime) -> None:
        """Stores the organisation's retention in days; None removes the override."""
        ...

    async def retention_overrides(self) -> dict[str, int]: ...

    async def log_orgs(self) -> list[str]:
        """The organisations that have deliveries or activities."""
        ...

    async def delete_expired(self, org_id: str, cutoff: dt.datetime, *, limit: int) -> int:
        """Deletes up to `limit` of the organisation's finished deliveries created before
        `cutoff`, with their attempts; then activities received before `cutoff` that no delivery
        refers to any more. Returns how many rows went (0 when nothing is left to delete)."""
        ...


class WebhooksUnitOfWork(UnitOfWork, Protocol):
    """One transaction of a webhooks use case."""

    @property
    def subscriptions(self) -> Subscriptions: ...

    @property
    def activities(self) -> Activities: ...

    async def changed(self, kind: str, subscription: Subscription, *, actor_id: str, now: dt.datetime) -> None:
        """`trellis.subscription.<kind>` into the outbox with this transaction: every replica
        drops what it holds of the subscription."""
        ...

    async def changed_and_audited(self, kind: str, *, before: Subscription | None, after: Subscription,
                                  actor_id: str, now: dt.datetime, request_id: str = "") -> None:
        """A change an actor made: the subscription event and its audit record."""
        ...


    async def retention_changed(self, org_id: str, *, before: int | None, after: int | None, default_days: int,
                                actor_id: str, now: dt.datetime, request_id: str = "") -> None:
        """The audit record of an organisation's retention override changing (None: the default)."""
        ...

    # An alert about a subscription (services.webhooks.domain.model.subscription_alert).
    async def alerted(self, alert: IncomingActivity, *, integration_id: str, url: str,
                      failing_since: dt.datetime | None, now: dt.datetime) -> int:
        """The alert activity, its deliveries to the organisation's other subscriptions that chose
        its type, and its operational event, in this transaction; returns how many deliveries."""
        ...


class UnitsOfWork(Protocol):
    """A new unit of work; `read_only` ones take no write turn and cannot commit."""

    def __call__(self, *, read_only: bool = False) -> WebhooksUnitOfWork: ...


# --- delivery, peers, the dispatcher ----------------------------------------------------------------


class DeliveryPort(Protocol):
    """One signed POST to a receiver (adapters/sender.py: aiohttp, the SSRF check, tracing)."""

    async def send(self, *, url: str, scheme: SignatureScheme, secret: str, event_id: str, event_type: str,
                   body: bytes, user_agent: str, trace_headers: str = "",
                   custom_headers: Mapping[str, str] | None = None,
                   client_tls: tuple[str, str] | None = None,
                   previous_secret: str | None = None) -> tuple[HttpResult, dt.datetime]:
        """Signs `body` for this moment and POSTs it; returns the result and when the attempt began."""
        ...


class DispatcherPort(Protocol):
    def wake(self) -> None: ...

    def subscription_changed(self, subscription_id: str, version: int) -> None: ...


class DestinationsPort(Protocol):
    async def refusal(self, url: str) -> str | None:
        """Why no delivery could ever reach `url`, or None (see services.webhooks.adapters.ssrf)."""
        ...


class IntegrationsPort(Protocol):
    """What webhooks asks the registry, as the acting administrator."""

    async def status(self, actor: Actor, integration_id: str, request_id: str = "") -> str:
        """The integration's state (requested ... revoked); NotFound outside the actor's organisation."""
        ...


class TraceContext(Protocol):
    """The current trace context as headers (`traceparent`, `tracestate`), stored with an
    activity so that its deliveries join the trace."""

    def __call__(self) -> Mapping[str, str]: ...
