"""The work queue in the `deliveries` table: claims of due deliveries by one replica (with a
lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL), the recording of attempts, and the renewal and
release of claims."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Update, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.db import UTCDateTime, rowcount
from services.webhooks.domain.model import DeliveryStatus, SignatureScheme, SubscriptionStatus
from services.webhooks.adapters.store import activities, attempts, deliveries, subscriptions

# Subscriptions one claim serves; with more due, the dispatcher claims again at once.
MAX_SUBSCRIPTIONS_PER_CLAIM = 64


@dataclass(frozen=True)
class Job:
    """One claimed delivery with what its attempt needs."""

    delivery_id: str
    org_id: str
    subscription_id: str
    subscription_version: int
    integration_id: str
    event_id: str
    event_type: str
    round: int
    attempt: int            # the number this attempt will have (1–5)
    url: str
    scheme: SignatureScheme
    sealed_secret: bytes
    body: bytes
    trace_headers: str
    test: bool = False
    occurred_at: dt.datetime | None = None  # the activity's time: delivery latency counts from it
    sealed_headers: bytes = b""  # the subscription's custom headers, sealed (b"": none)
    sealed_client_tls: bytes = b""  # its client certificate and key, sealed (b"": none)
    # During a rotation's overlap (Standard Webhooks): the previous secret, sealed, and until when it signs.
    sealed_previous_secret: bytes = b""
    previous_secret_expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class Completed:
    """An attempt's result to record: the attempt row and what it does to its delivery."""

    job: Job
    attempt_row: dict[str, object]
    status: DeliveryStatus
    next_attempt_at: dt.datetime | None
    exhausted: bool


@dataclass(frozen=True)
class FailingSubscription:
    id: str
    org_id: str
    integration_id: str
    version: int


def _claim_statements(owner: str, skip_locked: bool) -> tuple[Select[Any], Select[Any], Select[Any], Update]:
    """The claim's statements, built once (bind parameters `now`, `excluded`, `subscription_id`,
    `n`, `ids`, `lease_until`): the subscriptions with due work (with and without an exclusion
    list), one subscription's due rows with their bodies, and the conditional lease."""
    d, s, a = deliveries, subscriptions, activities
    now = bindparam("now", type_=UTCDateTime())
    due = and_(d.c.status == DeliveryStatus.PENDING.value, d.c.next_attempt_at <= now,
               or_(d.c.lease_until.is_(None), d.c.lease_until < now))
    # Both read a subscription's first pending row in ix_deliveries_due's order (due time, then
    # arrival), which no other index has, so each is one probe of that index per subscription.
    # As min() and a plain EXISTS, PostgreSQL planned the one as a walk of ix_deliveries_next
    # over other subscriptions' rows and the other as a hash of every pending delivery (the
    # whole queue read per claim: 0.9 s at a million pending, bench.curves.webhooks), from
    # statistics that assume every subscription holds an equal share of the queue. OFFSET 0
    # keeps the EXISTS a probe, not a semi-join.
    first_pending = (d.c.next_attempt_at, d.c.seq)
    oldest = (select(d.c.next_attempt_at)
              .where(d.c.subscription_id == s.c.id, d.c.status == DeliveryStatus.PENDING.value,
                     d.c.next_attempt_at.is_not(None))
              .order_by(*first_pending).limit(1).scalar_subquery())
    has_due = (select(d.c.id).where(d.c.subscription_id == s.c.id, due)
               .order_by(*first_pending).limit(1).offset(0).exists())
    candidates = (
        select(s.c.id, s.c.version, s.c.integration_id, s.c.url, s.c.scheme, s.c.secret, s.c.custom_headers_sealed,
               s.c.client_tls_sealed, s.c.previous_secret, s.c.previous_secret_expires_at)
        .where(s.c.status == SubscriptionStatus.ACTIVE.value, s.c.integration_suspended.is_(False),
               s.c.deleted_at.is_(None), has_due)
        .order_by(oldest)
        .limit(MAX_SUBSCRIPTIONS_PER_CLAIM + 1)
    )
    excluding = candidates.where(s.c.id.not_in(bindparam("excluded", expanding=True)))
    due_rows = (
        select(d.c.id, d.c.org_id, d.c.event_id, d.c.event_type, d.c.round, d.c.attempts, d.c.test, a.c.body,
               a.c.trace_headers, a.c.occurred_at)
        .select_from(d.join(a, and_(a.c.org_id == d.c.org_id, a.c.event_id == d.c.event_id)))
        .where(d.c.subscription_id == bindparam("subscription_id"), due)
        .order_by(*first_pending)
        .limit(bindparam("n"))
    )
    if skip_locked:
        due_rows = due_rows.with_for_update(skip_locked=True, of=d)
    lease = (
        update(d).where(d.c.id.in_(bindparam("ids", expanding=True)), d.c.status == DeliveryStatus.PENDING.value,
                        or_(d.c.lease_until.is_(None), d.c.lease_until < now))
        .values(lease_until=bindparam("lease_until", type_=UTCDateTime()), claimed_by=owner).returning(d.c.id)
    )
    return candidates, excluding, due_rows, lease


class WorkQueue:
    """Claims due deliveries for one replica, records attempts, renews and releases leases."""

    def __init__(self, *, owner: str, skip_locked: bool) -> None:
        self.owner = owner
        self._candidates, self._candidates_excluding, self._due_rows, self._lease = _claim_statements(owner, skip_locked)

    async def claim(self, session: AsyncSession, now: dt.datetime, *, limit: int, lease_until: dt.datetime,
                    exclude: Iterable[str], room: dict[str, int], default_room: int) -> tuple[list[Job], bool, bool]:
        """Up to `limit` due deliveries, at most `room` (else `default_room`) per subscription,
        each subscription's oldest due first, subscriptions with the oldest work first.

        Per subscription (an index seek each), so that a subscription with a long backlog, or
        one this replica chose to `exclude`, costs nothing to skip. Returns the jobs, whether a
        subscription had more due work than its room, and whether more subscriptions had due
        work than one claim takes (claim again at once)."""
        excluded = sorted(set(exclude))
        if excluded:
            subs = (await session.execute(self._candidates_excluding, {"now": now, "excluded": excluded})).all()
        else:
            subs = (await session.execute(self._candidates, {"now": now})).all()
        capped = len(subs) > MAX_SUBSCRIPTIONS_PER_CLAIM
        taken: list[Job] = []
        left = False
        for sub in subs[:MAX_SUBSCRIPTIONS_PER_CLAIM]:
            n = min(room.get(sub.id, default_room), limit - len(taken))
            if n <= 0:
                capped = True
                break
            rows = (await session.execute(self._due_rows, {"subscription_id": sub.id, "now": now, "n": n + 1})).all()
            if len(rows) > n:
                left, rows = True, rows[:n]
            scheme = SignatureScheme(sub.scheme)
            sub_id, version, integration_id, url, secret = sub.id, sub.version, sub.integration_id, sub.url, sub.secret
            headers, client_tls = sub.custom_headers_sealed or b"", sub.client_tls_sealed or b""
            previous = (sub.previous_secret or b"") if scheme is SignatureScheme.STANDARD_WEBHOOKS else b""
            previous_until = sub.previous_secret_expires_at
            taken += [
                Job(delivery_id=r.id, org_id=r.org_id, subscription_id=sub_id, subscription_version=version,
                    integration_id=integration_id, event_id=r.event_id, event_type=r.event_type, round=r.round,
                    attempt=r.attempts + 1, url=url, scheme=scheme, sealed_secret=secret, body=r.body,
                    trace_headers=r.trace_headers, test=r.test, occurred_at=r.occurred_at, sealed_headers=headers,
                    sealed_client_tls=client_tls, sealed_previous_secret=previous,
                    previous_secret_expires_at=previous_until)
                for r in rows
            ]
        if taken:
            # Conditional, so that a writer racing this claim (another replica without SKIP
            # LOCKED, on SQLite) cannot make two claims of one row: SQLite serialises writes.
            result = await session.execute(self._lease, {"ids": [j.delivery_id for j in taken], "now": now,
                                                         "lease_until": lease_until})
            won = set(result.scalars())
            if len(won) < len(taken):
                taken = [j for j in taken if j.delivery_id in won]
        return taken, left, capped

    async def next_due(self, session: AsyncSession, *, exclude: Iterable[str] = ()) -> dt.datetime | None:
        """When the earliest unleased pending delivery of an Active subscription (not excluded) is due.

        The first row in due order rather than min() over the join: PostgreSQL walks
        ix_deliveries_next from its low end and stops at the first that qualifies, where min()
        over a join was a scan of every pending delivery (0.8 s at a million, bench.curves.webhooks)."""
        d, s = deliveries, subscriptions
        query = (
            select(d.c.next_attempt_at)
            .select_from(d.join(s, s.c.id == d.c.subscription_id))
            .where(d.c.status == DeliveryStatus.PENDING.value, d.c.next_attempt_at.is_not(None),
                   d.c.lease_until.is_(None), s.c.status == SubscriptionStatus.ACTIVE.value,
                   s.c.integration_suspended.is_(False), s.c.deleted_at.is_(None))
            .order_by(d.c.next_attempt_at)
            .limit(1)
        )
        excluded = sorted(set(exclude))
        if excluded:
            query = query.where(d.c.subscription_id.not_in(excluded))
        due: dt.datetime | None = (await session.execute(query)).scalar_one_or_none()
        return due

    async def depth(self, session: AsyncSession) -> int:
        """Pending deliveries of every replica: due, leased or waiting for a retry."""
        query = select(func.count()).select_from(deliveries).where(deliveries.c.status == DeliveryStatus.PENDING.value)
        return int((await session.execute(query)).scalar_one())

    async def record(self, session: AsyncSession, completed: Sequence[Completed], now: dt.datetime) -> list[FailingSubscription]:
        """Writes the attempt rows and updates their deliveries (where this replica still holds
        them); subscriptions whose delivery exhausted the schedule become Failing."""
        conn = await session.connection()
        await conn.execute(attempts.insert(), [c.attempt_row for c in completed])
        d = deliveries
        held = and_(d.c.claimed_by == self.owner, d.c.status == DeliveryStatus.PENDING.value)
        # Deliveries whose attempt ended alike (most often: first attempt, 200) get one UPDATE by
        # id list; the rest (a retry's due time is its own) one row each in an executemany.
        alike: dict[tuple[object, ...], list[str]] = {}
        for c in completed:
            outcome = (c.status.value, c.job.attempt, c.next_attempt_at, c.attempt_row["status_code"],
                       c.attempt_row["error"], c.attempt_row["error_detail"])
            alike.setdefault(outcome, []).append(c.job.delivery_id)
        single = []
        for (status, attempt, next_at, code, error, detail), ids in alike.items():
            if len(ids) == 1:
                single.append({"b_id": ids[0], "b_status": status, "b_attempts": attempt, "b_next": next_at,
                               "b_code": code, "b_error": error, "b_detail": detail})
                continue
            await conn.execute(
                update(d).where(d.c.id.in_(ids), held)
                .values(status=status, attempts=attempt, next_attempt_at=next_at, lease_until=None, claimed_by=None,
                        updated_at=now, last_status_code=code, last_error=error, last_error_detail=detail))
        if single:
            await conn.execute(
                update(d).where(d.c.id == bindparam("b_id"), held)
                .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"),
                        next_attempt_at=bindparam("b_next", type_=UTCDateTime()), lease_until=None, claimed_by=None,
                        updated_at=now, last_status_code=bindparam("b_code"), last_error=bindparam("b_error"),
                        last_error_detail=bindparam("b_detail")),
                single)
        exhausted = sorted({c.job.subscription_id for c in completed if c.exhausted})
        if not exhausted:
            return []
        s = subscriptions
        result = await session.execute(
            update(s).where(s.c.id.in_(exhausted), s.c.status == SubscriptionStatus.ACTIVE.value)
            .values(status=SubscriptionStatus.FAILING.value, failing_since=now, updated_at=now, version=s.c.version + 1)
            .returning(s.c.id, s.c.org_id, s.c.integration_id, s.c.version)
        )
        return [FailingSubscription(r.id, r.org_id, r.integration_id, r.version) for r in result.all()]

    async def release(self, session: AsyncSession, delivery_ids: Sequence[str]) -> None:
        """Gives back claims not attempted (stale subscription data, or shutting down)."""
        if delivery_ids:
            await session.execute(update(deliveries)
                                  .where(deliveries.c.id.in_(list(delivery_ids)), deliveries.c.claimed_by == self.owner)
                                  .values(lease_until=None, claimed_by=None))

    async def renew(self, session: AsyncSession, lease_until: dt.datetime) -> int:
        result = await session.execute(update(deliveries)
                                       .where(deliveries.c.claimed_by == self.owner,
                                              deliveries.c.status == DeliveryStatus.PENDING.value)
                                       .values(lease_until=lease_until))
        return rowcount(result)

    async def release_all(self, session: AsyncSession) -> int:
        """Every claim of this replica: at stop, and at start (the claims of its previous run,
        which had the same owner name: the host and port it listens on)."""
        result = await session.execute(update(deliveries).where(deliveries.c.claimed_by == self.owner)
                                       .values(lease_until=None, claimed_by=None))
        return rowcount(result)
