"""Webhooks' use cases: in one unit of work (application/ports.py), load through its
repositories, apply the domain rule, write the events in the same transaction, commit; then
wake the outbox relay and the dispatcher. A test send goes out through `DeliveryPort`.

Who sees what (`caller_for`): administrators act in their token's organisation and see every
subscription; the edge acts for one partner integration and sees only what it owns.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, Actor
from services.kit.clock import utcnow
from services.kit.crypto import Envelope
from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.kit.ids import new_id
from services.webhooks.application import commands
from services.webhooks.domain import client_tls
from services.webhooks.domain.client_tls import ClientCertificate
from services.webhooks.application.ports import (
    Accepted, ActivityRecord, AttemptRecord, DeliveryPort, DeliveryRecord, DestinationsPort, DispatcherPort,
    IntegrationsPort, Scope, TraceContext, UnitsOfWork, WebhooksUnitOfWork, attempt_row,
)
from services.webhooks.domain.filters import check_filter
from services.webhooks.domain.schemas import check_data
from services.webhooks.domain.model import (
    CATALOGUE, DEFAULT_RETENTION_DAYS, SUBSCRIPTION_RECOVERED_TYPE, RECOVERY_BATCH, RETENTION_BATCH, SENT_BODY_LIMIT, SYSTEM_ACTOR, TEST_TYPE,
    ActivityType, DeliveryStatus, HeaderSent, IncomingActivity, Recovery, RetryPolicy, Subscription, SubscriptionStatus,
    check_activity_types, check_description, check_published_type, check_recovery_range, check_retention_days,
    check_sender, check_url, delivery_body, headers_sent, new_signing_secret, outcome_of, page_size, parse_data,
    iso_utc, pending_delivery_text, previous_secret_aad, sample_data, secret_aad, subscription_alert, waits_for,
    check_custom_headers, custom_headers_aad, header_hints, opened_form, seal_form,
)

log = logging.getLogger(__name__)

MAX_EVENT_ID_LENGTH = 128


@dataclass(frozen=True)
class Caller:
    """Who acts, in which organisation, and which integration's subscriptions they see (None: all)."""

    actor_id: str
    org_id: str
    integration_id: str | None
    partner: bool

    @property
    def scope(self) -> Scope:
        return Scope(self.org_id, self.integration_id)


def caller_for(actor: Actor, view: commands.View) -> Caller:
    """An administrator in their own organisation, or the edge on behalf of one integration."""
    if ADMIN_PERMISSION in actor.permissions:
        if view.org_id and view.org_id != actor.org_id:
            raise PermissionDenied("org_id may name only the caller's own organisation", org_id=view.org_id)
        return Caller(actor.user_id, actor.org_id, view.integration_id or None, partner=False)
    if EDGE_PERMISSION in actor.permissions:
        if not view.org_id or not view.integration_id:
            raise InvalidArgument("the edge acts for one integration: set org_id and integration_id")
        return Caller(f"integration:{view.integration_id}", view.org_id, view.integration_id, partner=True)
    actor.require(ADMIN_PERMISSION)
    raise AssertionError("unreachable")


def _check_owner(integration_id: str, status: str | None) -> None:
    if status == "revoked":
        raise FailedPrecondition(
            f"integration {integration_id} is revoked: a revoked integration's subscriptions are disabled for good, "
            "so it cannot own a new one",
            integration_id=integration_id, state="revoked",
        )


async def _waiting_for(uow: WebhooksUnitOfWork, org_id: str, subscription_id: str) -> str:
    """What an unfinished recovery's deliveries wait for: their subscription's state, or nothing
    once it is deleted (its deliveries cancelled, the recovery finishes)."""
    try:
        return waits_for(await uow.subscriptions.get(Scope(org_id), subscription_id))
    except NotFound:
        return ""


@dataclass(frozen=True)
class RetentionView:
    """What retention applies to an organisation."""

    days: int
    overridden: bool
    default_days: int


@dataclass(frozen=True)
class TestResult:
    delivery: DeliveryRecord
    attempt: AttemptRecord
    subscription: Subscription


@dataclass(frozen=True)
class SentRequest:
    """What each attempt of a delivery POSTs, as far as the log can say without the secret."""

    body: bytes
    truncated: bool
    size: int
    headers: builtins.list[HeaderSent]


@dataclass(frozen=True)
class SubscriptionPage:
    subscriptions: builtins.list[Subscription]
    next_page_token: str
    last_attempts: builtins.list[AttemptRecord]


@dataclass(frozen=True)
class DeliveryView:
    delivery: DeliveryRecord
    attempts: builtins.list[AttemptRecord]
    request: SentRequest


class SecretCache:
    """Opened signing secrets by subscription, re-opened whenever the sealed value changes."""

    def __init__(self, envelope: Envelope) -> None:
        self._envelope = envelope
        self._open: dict[str, tuple[bytes, str]] = {}
        self._headers: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._tls: dict[str, tuple[bytes, tuple[str, str]]] = {}
        self._previous: dict[str, tuple[bytes, str]] = {}

    def secret(self, subscription_id: str, sealed: bytes) -> str:
        cached = self._open.get(subscription_id)
        if cached is not None and cached[0] == sealed:
            return cached[1]
        plain = self._envelope.open(sealed, secret_aad(subscription_id)).decode()
        self._open[subscription_id] = (sealed, plain)
        return plain

    def headers(self, subscription_id: str, sealed: bytes) -> dict[str, str]:
        """The subscription's custom headers, opened (none when `sealed` is empty)."""
        if not sealed:
            return {}
        cached = self._headers.get(subscription_id)
        if cached is not None and cached[0] == sealed:
            return dict(cached[1])
        plain = opened_form(self._envelope.open(sealed, custom_headers_aad(subscription_id)))
        self._headers[subscription_id] = (sealed, plain)
        return dict(plain)

    def previous(self, subscription_id: str, sealed: bytes) -> str | None:
        """The previous signing secret during an overlap, opened; None when there is none."""
        if not sealed:
            return None
        cached = self._previous.get(subscription_id)
        if cached is not None and cached[0] == sealed:
            return cached[1]
        plain = self._envelope.open(sealed, previous_secret_aad(subscription_id)).decode()
        self._previous[subscription_id] = (sealed, plain)
        return plain

    def client_tls(self, subscription_id: str, sealed: bytes) -> tuple[str, str] | None:
        """The subscription's client certificate and key (PEM), opened; None when it has none."""
        if not sealed:
            return None
        cached = self._tls.get(subscription_id)
        if cached is not None and cached[0] == sealed:
            return cached[1]
        pair = client_tls.opened_form(self._envelope.open(sealed, client_tls.client_tls_aad(subscription_id)))
        self._tls[subscription_id] = (sealed, pair)
        return pair

    def forget(self, subscription_id: str) -> None:
        self._open.pop(subscription_id, None)
        self._headers.pop(subscription_id, None)
        self._tls.pop(subscription_id, None)
        self._previous.pop(subscription_id, None)


class ActivityIngest:
    """Stores activities and their deliveries in one transaction, then wakes the dispatcher."""

    def __init__(self, units: UnitsOfWork, dispatcher: DispatcherPort,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._units = units
        self._dispatcher = dispatcher
        self._clock = clock

    async def accept(self, batch: Sequence[IncomingActivity]) -> list[Accepted]:
        bodies = [delivery_body(a) for a in batch]
        async with self._units() as uow:
            accepted = await uow.activities.ingest(batch, bodies, self._clock())
            await uow.commit()
        if any(a.deliveries for a in accepted):
            self._dispatcher.wake()
        return accepted


class Retention:
    """Deletes each organisation's finished deliveries, attempts and activities older than its
    retention (its override, else the default), in bounded batches."""

    def __init__(self, units: UnitsOfWork, *, default_days: int = DEFAULT_RETENTION_DAYS,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._units = units
        self._default_days = default_days
        self._clock = clock

    async def enforce(self, *, batch: int = RETENTION_BATCH) -> int:
        """`batch` rows per transaction (as the logs service's retention), so deliveries never
        wait long for a lock or, on SQLite, the write turn; returns how many rows went."""
        now = self._clock()
        async with self._units(read_only=True) as uow:
            orgs = await uow.activities.log_orgs()
            overrides = await uow.activities.retention_overrides()
        total = 0
        for org in orgs:
            cutoff = now - dt.timedelta(days=overrides.get(org, self._default_days))
            while True:
                async with self._units() as uow:
                    deleted = await uow.activities.delete_expired(org, cutoff, limit=batch)
                    await uow.commit()
                total += deleted
                await asyncio.sleep(0)  # let deliveries in between batches
                if deleted == 0:
                    break
        # A secret overlap that ended leaves the previous key behind in its column: erase it.
        async with self._units() as uow:
            erased = await uow.subscriptions.erase_ended_overlaps(now)
            await uow.commit()
        if erased:
            log.info("retention: erased the previous signing secret of %d subscriptions whose overlap ended", erased)
        return total


class WebhookHandlers:
    """Every webhooks use case, each short: domain rule, unit of work, events, dispatcher."""

    def __init__(
        self,
        units: UnitsOfWork,
        envelope: Envelope,
        delivery: DeliveryPort,
        dispatcher: DispatcherPort,
        ingest: ActivityIngest,
        policy: RetryPolicy,
        *,
        user_agent: str,
        integrations: IntegrationsPort,
        destinations: DestinationsPort,
        trace_context: TraceContext,
        owner: str = "",
        notify: Callable[[], None] = lambda: None,
        clock: Callable[[], dt.datetime] = utcnow,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        recovery_batch: int = RECOVERY_BATCH,
    ) -> None:
        self._retention_days = retention_days
        self._recovery_batch = recovery_batch
        self._units = units
        self._integrations = integrations
        self._destinations = destinations
        self._trace_context = trace_context
        self._owner = owner
        self._envelope = envelope
        self._delivery = delivery
        self._dispatcher = dispatcher
        self._ingest = ingest
        self._policy = policy
        self._user_agent = user_agent
        self._notify = notify
        self._clock = clock
        self._secrets = SecretCache(envelope)

    def activity_types(self, actor: Actor) -> tuple[ActivityType, ...]:
        return CATALOGUE

    def _seal(self, subscription_id: str, secret: str) -> bytes:
        return self._envelope.seal(secret.encode(), secret_aad(subscription_id))

    def _checked_tls(self, pems: commands.ClientTls | None, now: dt.datetime) -> ClientCertificate | None:
        if pems is None:
            return None
        return client_tls.check_client_certificate(pems.certificate_pem, pems.private_key_pem, now)

    def _seal_tls(self, subscription_id: str, pems: commands.ClientTls | None) -> bytes:
        """The client certificate and key sealed at rest; b"" for none."""
        if pems is None:
            return b""
        return self._envelope.seal(client_tls.seal_form(pems.certificate_pem, pems.private_key_pem),
                                   client_tls.client_tls_aad(subscription_id))

    def _seal_headers(self, subscription_id: str, headers: Mapping[str, str]) -> bytes:
        """The custom headers sealed at rest; b"" for none."""
        return self._envelope.seal(seal_form(headers), custom_headers_aad(subscription_id)) if headers else b""

    # --- subscriptions ---------------------------------------------------------------------

    async def create(self, actor: Actor, cmd: commands.CreateSubscription) -> tuple[Subscription, str]:
        """A new Active subscription and its signing secret, returned this once."""
        caller = caller_for(actor, cmd.view)
        now = self._clock()
        subscription = Subscription(
            id=new_id("whk"), org_id=caller.org_id, integration_id=caller.integration_id or "",
            url=check_url(cmd.url), activity_types=check_activity_types(cmd.activity_types),
            description=check_description(cmd.description), scheme=cmd.scheme, created_by=caller.actor_id,
            created_at=now, updated_at=now, secret_created_at=now, filter=check_filter(cmd.filter),
        )
        headers = check_custom_headers(cmd.custom_headers)
        subscription.custom_headers = header_hints(headers)
        subscription.client_certificate = self._checked_tls(cmd.client_tls, now)
        await self._check_destination(caller, subscription.url)
        secret = new_signing_secret()
        if subscription.integration_id and not caller.partner:
            # An administrator names the owner: it must be an integration of their organisation,
            # and not revoked. The edge's partner names its own, verified Active at the edge.
            status = await self._integrations.status(actor, subscription.integration_id, cmd.view.request_id)
            _check_owner(subscription.integration_id, status)
            subscription.integration_suspended = status == "suspended"
        async with self._units() as uow:
            if subscription.integration_id:
                # What this replica last heard on the bus: a revocation consumed since the
                # registry answered still stops it.
                heard = await uow.subscriptions.integration_status(caller.org_id, subscription.integration_id)
                _check_owner(subscription.integration_id, heard)
                if caller.partner:
                    subscription.integration_suspended = heard == "suspended"
            await uow.subscriptions.add(subscription, self._seal(subscription.id, secret),
                                        sealed_headers=self._seal_headers(subscription.id, headers),
                                        sealed_client_tls=self._seal_tls(subscription.id, cmd.client_tls))
            await uow.changed_and_audited("created", before=None, after=subscription, actor_id=caller.actor_id,
                                          now=now, request_id=cmd.view.request_id)
            await uow.commit()
        self._notify()
        return subscription, secret

    async def _check_destination(self, caller: Caller, url: str) -> None:
        """InvalidArgument, naming the setting that allows it, when an administrator gives a URL
        no delivery could reach. Partners are not told: for them a refused address and a name
        that does not resolve read the same (`unusable_host` in their delivery log), so the
        partner API cannot map which internal names exist."""
        if caller.partner:
            return
        refusal = await self._destinations.refusal(url)
        if refusal is not None:
            raise InvalidArgument(refusal, field="url")

    async def get(self, actor: Actor, ref: commands.SubscriptionRef) -> Subscription:
        caller = caller_for(actor, ref.view)
        async with self._units(read_only=True) as uow:
            return await uow.subscriptions.get(caller.scope, ref.subscription_id)

    async def list(self, actor: Actor, query: commands.ListSubscriptions) -> SubscriptionPage:
        """A page of subscriptions and, when asked, the latest attempt of each (one query for all)."""
        caller = caller_for(actor, query.view)
        async with self._units(read_only=True) as uow:
            found, token = await uow.subscriptions.list_page(caller.scope, statuses=query.statuses,
                                                             size=page_size(query.page_size), token=query.page_token)
            last: builtins.list[AttemptRecord] = []
            if query.with_last_attempts and found:
                last = await uow.activities.last_attempts(caller.scope, [s.id for s in found])
        return SubscriptionPage(found, token, last)

    async def _change(self, actor: Actor, view: commands.View, subscription_id: str, kind: str,
                      mutate: Callable[[Subscription, dt.datetime], object], *, new_secret: str | None = None,
                      new_headers: Mapping[str, str] | None = None,
                      new_tls: tuple[commands.ClientTls | None] | None = None,
                      previous: bytes | None = None) -> Subscription:
        caller = caller_for(actor, view)
        now = self._clock()
        async with self._units() as uow:
            subscription = await uow.subscriptions.get(caller.scope, subscription_id, for_update=True)
            before = replace(subscription)
            mutate(subscription, now)
            if subscription.version == before.version:
                return subscription  # nothing changed (pause of a paused one, say)
            sealed = self._seal(subscription.id, new_secret) if new_secret is not None else None
            headers = self._seal_headers(subscription.id, new_headers) if new_headers is not None else None
            tls = self._seal_tls(subscription.id, new_tls[0]) if new_tls is not None else None
            await uow.subscriptions.save(subscription, sealed_secret=sealed, sealed_headers=headers, sealed_client_tls=tls,
                                         sealed_previous_secret=previous)
            await uow.changed_and_audited(kind, before=before, after=subscription, actor_id=caller.actor_id,
                                          now=now, request_id=view.request_id)
            await uow.commit()
        self._notify()
        self._dispatcher.subscription_changed(subscription.id, subscription.version)
        return subscription

    async def update(self, actor: Actor, cmd: commands.UpdateSubscription) -> Subscription:
        """New URL, types, description, scheme or filter: they apply from the next attempt on (a
        filter: from the next event on)."""
        if not cmd.changes:
            raise InvalidArgument("update_mask names nothing to change")
        if "url" in cmd.changes:
            await self._check_destination(caller_for(actor, cmd.view), check_url(str(cmd.changes["url"])))
        headers = None
        if "custom_headers" in cmd.changes:  # the whole set is replaced; checked before anything is written
            headers = check_custom_headers(cast("Mapping[str, str]", cmd.changes["custom_headers"]))
        changes = dict(cmd.changes)
        tls: tuple[commands.ClientTls | None] | None = None
        if "client_certificate" in changes:  # checked here, sealed with the change; None removes it
            pems = cast("commands.ClientTls | None", changes["client_certificate"])
            changes["client_certificate"] = self._checked_tls(pems, self._clock())
            tls = (pems,)
        return await self._change(actor, cmd.view, cmd.subscription_id, "updated", lambda s, now: s.update(changes, now),
                                  new_headers=headers, new_tls=tls)

    async def pause(self, actor: Actor, ref: commands.SubscriptionRef) -> Subscription:
        return await self._change(actor, ref.view, ref.subscription_id, "paused", lambda s, now: s.pause(now))

    async def resume(self, actor: Actor, ref: commands.SubscriptionRef) -> Subscription:
        """Paused -> Active; deliveries it held go out again."""
        subscription = await self._change(actor, ref.view, ref.subscription_id, "resumed", lambda s, now: s.resume(now))
        self._dispatcher.wake()
        return subscription

    async def regenerate_secret(self, actor: Actor, ref: commands.SubscriptionRef,
                                overlap: dt.timedelta = dt.timedelta(0)) -> tuple[Subscription, str]:
        """A new secret, sealed in place of the old one. Without an overlap nothing is signed with
        the old one after; with one (Standard Webhooks, at most 7 days) the old one signs too until
        it ends, kept sealed in its own column. The refusals come before anything is written."""
        secret = new_signing_secret()
        if not overlap:
            subscription = await self._change(actor, ref.view, ref.subscription_id, "secret_regenerated",
                                              lambda s, now: s.secret_regenerated(now), new_secret=secret,
                                              previous=b"")
            return subscription, secret
        caller = caller_for(actor, ref.view)
        now = self._clock()
        async with self._units() as uow:
            subscription = await uow.subscriptions.get(caller.scope, ref.subscription_id, for_update=True)
            before = replace(subscription)
            subscription.secret_regenerated(now, overlap)
            old = self._envelope.open(await uow.subscriptions.sealed_secret(subscription.id), secret_aad(subscription.id))
            await uow.subscriptions.save(subscription, sealed_secret=self._seal(subscription.id, secret),
                                         sealed_previous_secret=self._envelope.seal(old, previous_secret_aad(subscription.id)))
            await uow.changed_and_audited("secret_regenerated", before=before, after=subscription,
                                          actor_id=caller.actor_id, now=now, request_id=ref.view.request_id)
            await uow.commit()
        self._notify()
        self._dispatcher.subscription_changed(subscription.id, subscription.version)
        return subscription, secret

    async def delete(self, actor: Actor, ref: commands.SubscriptionRef) -> int:
        """Deletes it for good and cancels its pending deliveries; returns how many."""
        caller = caller_for(actor, ref.view)
        now = self._clock()
        async with self._units() as uow:
            subscription = await uow.subscriptions.get(caller.scope, ref.subscription_id, for_update=True)
            cancelled = await uow.subscriptions.delete(subscription, now)
            before = replace(subscription)
            subscription.version += 1
            subscription.updated_at = now
            await uow.changed_and_audited("deleted", before=before, after=subscription, actor_id=caller.actor_id,
                                          now=now, request_id=ref.view.request_id)
            await uow.commit()
        self._notify()
        self._dispatcher.subscription_changed(subscription.id, subscription.version)
        return cancelled

    async def send_test(self, actor: Actor, ref: commands.SubscriptionRef) -> TestResult:
        """Sends a `webhook.test` event now and logs it; success returns a Failing subscription to
        Active and lets its queue go out, oldest first."""
        caller = caller_for(actor, ref.view)
        now = self._clock()
        async with self._units(read_only=True) as uow:
            subscription = await uow.subscriptions.get(caller.scope, ref.subscription_id)
            sealed = await uow.subscriptions.sealed_secret(subscription.id)
            sealed_headers = await uow.subscriptions.sealed_headers(subscription.id)
            sealed_tls = await uow.subscriptions.sealed_client_tls(subscription.id)
            sealed_previous = await uow.subscriptions.sealed_previous_secret(subscription.id)
        if subscription.status is SubscriptionStatus.DISABLED:
            raise FailedPrecondition("this subscription is disabled", subscription_id=subscription.id)
        sender = ("integration", caller.integration_id) if caller.partner else ("user", actor.user_id)
        activity = IncomingActivity(event_id=new_id("evt"), type=TEST_TYPE, org_id=subscription.org_id, occurred_at=now,
                                    sender_type=sender[0], sender_id=sender[1] or "", data=sample_data(subscription),
                                    trace_headers=self._trace_context())
        body = delivery_body(activity)
        delivery_id = new_id("dlv")
        async with self._units() as uow:
            await uow.activities.add_test(activity, body, subscription.id, delivery_id, now)
            await uow.commit()
        secret = self._secrets.secret(subscription.id, sealed)
        result, started = await self._delivery.send(url=subscription.url, scheme=subscription.scheme, secret=secret,
                                                    event_id=activity.event_id, event_type=TEST_TYPE, body=body,
                                                    user_agent=self._user_agent,
                                                    custom_headers=self._secrets.headers(subscription.id, sealed_headers),
                                                    client_tls=self._secrets.client_tls(subscription.id, sealed_tls),
                                                    previous_secret=self._secrets.previous(subscription.id, sealed_previous)
                                                    if subscription.signs_with_previous(now) else None)
        outcome = outcome_of(result, 1, started, self._policy, test=True)
        row = attempt_row(new_id("att"), org_id=subscription.org_id, delivery_id=delivery_id, subscription_id=subscription.id,
                          event_id=activity.event_id, event_type=TEST_TYPE, round_=1, attempt=1, attempted_at=started,
                          url=subscription.url, test=True, status_code=result.status_code, succeeded=result.succeeded,
                          error=result.error, error_detail=result.error_detail, response_body=result.response_body,
                          duration_ms=result.duration_ms, sent_by=self._owner, exchange=result.exchange)
        recovered = False
        async with self._units() as uow:
            await uow.activities.finish_test(delivery_id, row, outcome.status, self._clock())
            if result.succeeded:
                current = await uow.subscriptions.get(caller.scope, subscription.id, for_update=True)
                failing_since = current.failing_since
                if current.recover(self._clock()):
                    recovered = True
                    await uow.subscriptions.save(current)
                    await self._log_recovery(uow, current, failing_since)
                subscription = current
            delivery = await uow.activities.get_delivery(caller.scope, delivery_id)
            attempt = (await uow.activities.attempts_of(caller.scope, delivery_id))[-1]
            await uow.commit()
        if recovered:
            self._notify()
            self._dispatcher.subscription_changed(subscription.id, subscription.version)
            self._dispatcher.wake()
        return TestResult(delivery, attempt, subscription)

    async def _log_recovery(self, uow: WebhooksUnitOfWork, subscription: Subscription,
                            failing_since: dt.datetime | None) -> None:
        now = subscription.updated_at
        released = await uow.subscriptions.release_queue(subscription.id, now)
        log.info("webhook subscription %s is Active again; %d queued deliveries go out", subscription.id, released)
        await uow.changed("recovered", subscription, actor_id=SYSTEM_ACTOR, now=now)
        await uow.alerted(subscription_alert(
            SUBSCRIPTION_RECOVERED_TYPE, event_id=new_id("evt"), org_id=subscription.org_id,
            subscription_id=subscription.id, integration_id=subscription.integration_id, url=subscription.url,
            failing_since=failing_since, now=now, recovered_at=iso_utc(now), queued_deliveries=released,
        ), integration_id=subscription.integration_id, url=subscription.url, failing_since=failing_since, now=now)

    # --- the delivery log --------------------------------------------------------------------

    async def list_deliveries(self, actor: Actor, query: commands.ListDeliveries) -> tuple[builtins.list[DeliveryRecord], str]:
        caller = caller_for(actor, query.view)
        async with self._units(read_only=True) as uow:
            if query.subscription_id:
                await uow.subscriptions.get(caller.scope, query.subscription_id)  # NotFound if not theirs
            return await uow.activities.list_deliveries(
                caller.scope, subscription_id=query.subscription_id, statuses=query.statuses,
                event_id=query.event_id, size=page_size(query.page_size), token=query.page_token,
            )

    async def get_delivery(self, actor: Actor, ref: commands.DeliveryRef) -> DeliveryView:
        """The delivery, its attempts oldest first, and what they POST (bounded, no secret)."""
        caller = caller_for(actor, ref.view)
        async with self._units(read_only=True) as uow:
            delivery = await uow.activities.get_delivery(caller.scope, ref.delivery_id)
            attempts = await uow.activities.attempts_of(caller.scope, ref.delivery_id)
            sent = await uow.activities.sent_body(delivery, SENT_BODY_LIMIT)
        headers = headers_sent(sent.scheme, event_id=delivery.event_id, event_type=delivery.event_type,
                               user_agent=self._user_agent)
        return DeliveryView(delivery, attempts, SentRequest(sent.body, sent.size > len(sent.body), sent.size, headers))

    async def list_attempts(self, actor: Actor, query: commands.ListAttempts) -> tuple[builtins.list[AttemptRecord], str]:
        caller = caller_for(actor, query.view)
        async with self._units(read_only=True) as uow:
            if query.subscription_id:
                await uow.subscriptions.get(caller.scope, query.subscription_id)
            return await uow.activities.list_attempts(
                caller.scope, subscription_id=query.subscription_id, succeeded=query.succeeded,
                event_id=query.event_id, delivery_id=query.delivery_id, size=page_size(query.page_size),
                token=query.page_token,
            )

    async def get_attempt(self, actor: Actor, ref: commands.AttemptRef) -> AttemptRecord:
        """One attempt with the headers it sent and the answer it got (when they were recorded)."""
        caller = caller_for(actor, ref.view)
        async with self._units(read_only=True) as uow:
            return await uow.activities.get_attempt(caller.scope, ref.attempt_id)

    async def redeliver(self, actor: Actor, ref: commands.DeliveryRef) -> DeliveryRecord:
        """A failed delivery gets a new round of the schedule, starting now, same event id."""
        caller = caller_for(actor, ref.view)
        now = self._clock()
        async with self._units() as uow:
            delivery = await uow.activities.get_delivery(caller.scope, ref.delivery_id)
            if delivery.status is DeliveryStatus.PENDING:
                subscription = await uow.subscriptions.get(Scope(caller.org_id), delivery.subscription_id)
                when = pending_delivery_text(attempts=delivery.attempts, round_=delivery.round,
                                             next_attempt_at=delivery.next_attempt_at, subscription=subscription, now=now)
                raise FailedPrecondition(f"only a failed delivery can be redelivered; this one is pending: {when}",
                                         delivery_id=delivery.id, status=delivery.status.value)
            if delivery.status is not DeliveryStatus.FAILED:
                raise FailedPrecondition(f"only a failed delivery can be redelivered; this one is {delivery.status.value}",
                                         delivery_id=delivery.id, status=delivery.status.value)
            subscription = await uow.subscriptions.get(Scope(caller.org_id), delivery.subscription_id)
            if subscription.status is SubscriptionStatus.DISABLED:
                raise FailedPrecondition("its subscription is disabled", subscription_id=subscription.id)
            await uow.activities.redeliver(delivery, now)
            delivery = await uow.activities.get_delivery(caller.scope, ref.delivery_id)
            await uow.commit()
        self._dispatcher.wake()
        return delivery

    # --- recovery after an outage -----------------------------------------------------------------

    async def start_recovery(self, actor: Actor, cmd: commands.StartRecovery) -> Recovery:
        """Sends again every failed delivery of the subscription whose event arrived in the range:
        each keeps its event id and starts a new round of the schedule. Queued in batches of
        `recovery_batch`, each its own transaction, so the dispatcher works on between them and
        the first go out while the rest are queued; returns once all are queued."""
        caller = caller_for(actor, cmd.view)
        now = self._clock()
        since, until = check_recovery_range(cmd.since, cmd.until, now)
        recovery = Recovery(id=new_id("rcv"), org_id=caller.org_id, subscription_id=cmd.subscription_id, since=since,
                            until=until, created_by=caller.actor_id, created_at=now)
        async with self._units() as uow:
            subscription = await uow.subscriptions.get(caller.scope, cmd.subscription_id)
            if subscription.status is SubscriptionStatus.DISABLED:
                raise FailedPrecondition("its subscription is disabled: nothing would be sent",
                                         subscription_id=subscription.id)
            await uow.activities.add_recovery(recovery)
            await uow.commit()
        queued, after = 0, None
        while True:
            async with self._units() as uow:
                count, after = await uow.activities.recover_batch(recovery, after=after, limit=self._recovery_batch,
                                                                  now=self._clock())
                queued += count
                await uow.activities.set_recovery_queued(recovery.id, queued)
                await uow.commit()
            if count:
                self._dispatcher.wake()
            if after is None:
                break
            await asyncio.sleep(0)  # let the deliveries' own work in between batches
        log.info("recovery %s of subscription %s: %d failed deliveries sent again", recovery.id, subscription.id, queued)
        return await self.get_recovery(actor, commands.RecoveryRef(recovery.id, cmd.view))

    async def get_recovery(self, actor: Actor, ref: commands.RecoveryRef) -> Recovery:
        """The recovery's progress, and what its queued deliveries wait for while it lasts."""
        caller = caller_for(actor, ref.view)
        async with self._units(read_only=True) as uow:
            recovery = await uow.activities.get_recovery(caller.scope, ref.recovery_id)
            if recovery.finished:
                return recovery
            return replace(recovery, waiting_for=await _waiting_for(uow, caller.org_id, recovery.subscription_id))

    async def list_recoveries(self, actor: Actor, query: commands.ListRecoveries) -> tuple[builtins.list[Recovery], str]:
        """The organisation's recoveries, newest first; an unfinished one says what its
        deliveries wait for, as get_recovery does."""
        caller = caller_for(actor, query.view)
        async with self._units(read_only=True) as uow:
            if query.subscription_id:
                await uow.subscriptions.get(caller.scope, query.subscription_id)  # NotFound if not theirs
            found, token = await uow.activities.list_recoveries(
                caller.scope, subscription_id=query.subscription_id, size=page_size(query.page_size),
                token=query.page_token)
            waiting = {subscription_id: await _waiting_for(uow, caller.org_id, subscription_id)
                       for subscription_id in {r.subscription_id for r in found if not r.finished}}
        return [r if r.finished else replace(r, waiting_for=waiting[r.subscription_id]) for r in found], token

    # --- retention -----------------------------------------------------------------------------

    async def get_retention(self, actor: Actor, view: commands.View) -> RetentionView:
        caller = caller_for(actor, view)
        async with self._units(read_only=True) as uow:
            days = await uow.activities.retention_override(caller.org_id)
        return RetentionView(days or self._retention_days, days is not None, self._retention_days)

    async def set_retention(self, actor: Actor, cmd: commands.SetRetention) -> RetentionView:
        """The organisation's own retention (administrators only; 0 returns to the default)."""
        caller = caller_for(actor, cmd.view)
        if caller.partner:
            raise PermissionDenied("retention is set by the organisation's administrators")
        days = check_retention_days(cmd.days)
        now = self._clock()
        async with self._units() as uow:
            before = await uow.activities.retention_override(caller.org_id)
            await uow.activities.set_retention_override(caller.org_id, days or None, actor_id=caller.actor_id, now=now)
            if before != (days or None):
                await uow.retention_changed(caller.org_id, before=before, after=days or None,
                                            default_days=self._retention_days, actor_id=caller.actor_id, now=now,
                                            request_id=cmd.view.request_id)
            await uow.commit()
        self._notify()
        log.info("webhook retention of organisation %s set to %s by %s", caller.org_id,
                 f"{days} days" if days else "the default", caller.actor_id)
        return await self.get_retention(actor, cmd.view)

    # --- activities ----------------------------------------------------------------------------

    async def publish(self, actor: Actor, cmd: commands.PublishActivity) -> Accepted:
        """Takes one activity as if it came on `activity.<type>`; a known event id is a duplicate.
        Its `data` must fit its type's schema (domain/schemas.py), unlike on the bus: this caller hears why."""
        caller = caller_for(actor, cmd.view)
        event_id = cmd.event_id.strip() or new_id("evt")
        if len(event_id) > MAX_EVENT_ID_LENGTH:
            raise InvalidArgument(f"event_id is longer than {MAX_EVENT_ID_LENGTH} characters")
        if caller.partner:
            sender = ("integration", caller.integration_id or "")
        elif cmd.sender_type or cmd.sender_id:
            sender = check_sender(cmd.sender_type, cmd.sender_id)
        else:
            sender = ("user", actor.user_id)
        activity_type = check_published_type(cmd.type)
        activity = IncomingActivity(
            event_id=event_id, type=activity_type, org_id=caller.org_id,
            occurred_at=cmd.occurred_at or self._clock(), sender_type=sender[0], sender_id=sender[1],
            data=check_data(activity_type, parse_data(cmd.data_json)), trace_headers=self._trace_context(),
        )
        return (await self._ingest.accept([activity]))[0]

    async def list_activities(self, actor: Actor, query: commands.ListActivities) -> tuple[builtins.list[ActivityRecord], str]:
        caller = caller_for(actor, query.view)
        async with self._units(read_only=True) as uow:
            return await uow.activities.list_activities(caller.org_id, types=[t.strip() for t in query.types if t.strip()],
                                                        size=page_size(query.page_size), token=query.page_token,
                                                        hide_alerts=caller.partner)

    # --- the owning integration's lifecycle ------------------------------------------------------

    async def apply_integration_change(self, change: commands.ApplyIntegrationChange) -> None:
        """Suspended holds its subscriptions' deliveries, reactivation releases them, Revoked
        disables them for good (pending ones cancelled). Idempotent by event id."""
        now = self._clock()
        changed: list[Subscription] = []
        async with self._units() as uow:
            if not await uow.subscriptions.mark_processed(change.event_id, now):
                return
            if not await uow.subscriptions.record_integration(change.org_id, change.integration_id, change.status,
                                                              change.version, now):
                await uow.commit()  # the event is marked processed all the same
                return
            for subscription in await uow.subscriptions.of_integration(change.org_id, change.integration_id):
                kind = subscription.integration_status_changed(change.status, now)
                if kind is None:
                    continue
                await uow.subscriptions.save(subscription)
                if kind == "disabled":
                    await uow.subscriptions.cancel_pending([subscription.id], now)
                await uow.changed(kind, subscription, actor_id=SYSTEM_ACTOR, now=now)
                changed.append(subscription)
            await uow.commit()
        if changed:
            self._notify()
            for subscription in changed:
                self._dispatcher.subscription_changed(subscription.id, subscription.version)
            self._dispatcher.wake()
