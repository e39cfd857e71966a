"""The delivery engine of one replica: claims due deliveries from the database, POSTs them with
bounded concurrency, and records every attempt.

- Work lives in the `deliveries` table (`next_attempt_at`); a replica claims due rows with a
  lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and renews the leases it holds while it works,
  so a replica that dies gives its rows back within one lease and another takes them.
- Concurrency is bounded per subscription and in total: a subscription whose receiver hangs
  fills only its own slots, and the claim skips subscriptions whose local queue is full, so
  every other subscription's deliveries keep flowing.
- New work wakes the claim loop at once (`wake()`); a retry's due time sets a timer; polling
  every `poll_seconds` is only the fallback (another replica's new work, expired leases).
- Results are written in batches by one writer task: the attempt rows, the delivery updates
  and, when an event's last attempt failed, the subscription's move to Failing (with its event)
  in one transaction.
- A claimed delivery is attempted only if its subscription has not changed since the claim
  (`subscription_changed()`, called by this replica's handlers and on every replica by the
  `trellis.subscription.*` events): after a pause, delete, edit or new secret, nothing goes out
  with stale data.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.kit.clock import utcnow
from services.kit.telemetry import tracer
from services.webhooks.adapters import events
from services.webhooks.adapters.metrics import WebhookMetrics
from services.webhooks.adapters.queue import Completed, Job, WorkQueue
from services.webhooks.adapters.sender import DeliveryClient, send_attempt
from services.webhooks.adapters.store import Database, row_id, write_alert, write_event
from services.webhooks.application.handlers import SecretCache
from services.webhooks.application.ports import attempt_row
from services.webhooks.domain.model import (
    SUBSCRIPTION_FAILING_TYPE, RetryPolicy, SubscriptionStatus, outcome_of, subscription_alert,
)

log = logging.getLogger(__name__)

CLAIM_BATCH = 500
WRITE_BATCH = 500
# The writer lingers this long for more results when it has only a few: one transaction per
# batch of attempts, not one per attempt.
WRITE_LINGER_SECONDS = 0.01
WRITE_LINGER_BELOW = 64
# Claimed deliveries a replica holds per subscription (running and waiting), in multiples of
# its concurrency; the claim refills a subscription when fewer than one round waits.
BUFFER_ROUNDS = 8
# After a slot frees while more work waits, claim again after this pause (one claim per batch
# of finished attempts, not one per attempt).
REFILL_DELAY_SECONDS = 0.003
RETRY_DELAY_SECONDS = 0.5


@dataclass(frozen=True)
class Limits:
    per_subscription: int
    total: int
    lease_seconds: float
    poll_seconds: float


class Dispatcher:
    """Claims, attempts and records deliveries until stopped."""

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        client: DeliveryClient,
        secrets: SecretCache,
        policy: RetryPolicy,
        limits: Limits,
        *,
        user_agent: str,
        notify: Callable[[], None] = lambda: None,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._queue = queue
        self._client = client
        self._secrets = secrets
        self._policy = policy
        self._limits = limits
        self._user_agent = user_agent
        self._notify = notify
        self._buffer_per_sub = BUFFER_ROUNDS * limits.per_subscription
        self._buffer_total = 2 * limits.total
        self._waiting: dict[str, collections.deque[Job]] = {}
        self._running: dict[str, int] = {}
        self._running_total = 0
        self._held: set[str] = set()  # delivery ids claimed and not yet recorded or released
        self._versions: dict[str, int] = {}
        self._results: asyncio.Queue[Completed | Job] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._refill: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._more_waiting = False
        self._attempts: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self.attempted = 0
        self._spans = tracer(__name__)

    # --- signals from outside ----------------------------------------------------------------

    def wake(self) -> None:
        """New or newly due work was committed: claim now."""
        self._wake.set()

    def subscription_changed(self, subscription_id: str, version: int) -> None:
        """Forget what this replica holds of an older version of the subscription."""
        if version <= self._versions.get(subscription_id, 0):
            return
        self._versions[subscription_id] = version
        self._secrets.forget(subscription_id)
        stale = self._waiting.pop(subscription_id, None)
        for job in stale or ():
            self._results.put_nowait(job)  # released by the writer
        self.wake()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="webhooks-claim"),
            asyncio.create_task(self._write_loop(), name="webhooks-write"),
            asyncio.create_task(self._renew_loop(), name="webhooks-renew"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Stops claiming, lets attempts in flight finish within `grace`, records, releases the rest."""
        self._stopping = True
        claim, writer, renew = self._loops or (None, None, None)
        for task in (claim, renew):
            if task is not None:
                task.cancel()
        for handle in (self._timer, self._refill):
            if handle is not None:
                handle.cancel()
        for queue in self._waiting.values():
            for job in queue:
                self._results.put_nowait(job)
        self._waiting.clear()
        if self._attempts:
            _, pending = await asyncio.wait(set(self._attempts), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        if writer is not None:
            try:
                async with asyncio.timeout(grace):
                    await self._results.join()
            except TimeoutError:
                log.warning("webhooks: %d results not recorded at stop", self._results.qsize())
            writer.cancel()
        # Bounded: a loop whose cancel was swallowed (Python 3.11's wait_for) ends on the flag.
        _, stuck = await asyncio.wait([t for t in self._loops if t is not None], timeout=grace)
        if stuck:
            log.warning("webhooks dispatcher: %d loops did not stop in time", len(stuck))
        self._loops = []
        try:
            async with self._db.write() as session:
                await self._queue.release_all(session)
        except Exception:  # noqa: BLE001 - the leases expire by themselves
            log.warning("could not release delivery claims at stop", exc_info=True)

    # --- claiming ----------------------------------------------------------------------------

    def _buffered(self, subscription_id: str) -> int:
        return len(self._waiting.get(subscription_id, ())) + self._running.get(subscription_id, 0)

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            try:
                claimed, more, capped, skipped = await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must outlive a database outage
                log.warning("claiming deliveries failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            # Due work left behind (a subscription's buffer is full or was skipped as still
            # stocked): a finished attempt of that subscription asks for a refill.
            self._more_waiting = more or bool(skipped)
            self._start_runnable()
            if capped and claimed and self._room() > 0:
                continue
            timeout = self._limits.poll_seconds
            if not self._more_waiting:
                try:
                    due = await self._next_due()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001
                    due = None
                if due is not None:
                    timeout = min(timeout, max(0.0, (due - utcnow()).total_seconds()))
            try:
                async with asyncio.timeout_at(loop.time() + timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _room(self) -> int:
        held = sum(len(q) for q in self._waiting.values()) + self._running_total
        return self._buffer_total - held

    async def _claim(self) -> tuple[int, bool, bool, list[str]]:
        """Claims what fits: returns how many, whether a subscription had more due work than its
        room, whether more was due than one claim takes, and the subscriptions skipped as still
        stocked (at least one round waiting: they are refilled when they run low, in batches)."""
        held = set(self._waiting) | set(self._running)
        skipped = [s for s in held if len(self._waiting.get(s, ())) >= self._limits.per_subscription
                   or self._buffered(s) >= self._buffer_per_sub]
        room = self._room()
        if room <= 0:
            return 0, True, False, skipped
        per_sub_room = {s: self._buffer_per_sub - self._buffered(s) for s in held}
        limit = min(room, CLAIM_BATCH)
        now = utcnow()
        lease_until = now + dt.timedelta(seconds=self._limits.lease_seconds)
        async with self._db.write() as session:
            jobs, more, capped = await self._queue.claim(
                session, now, limit=limit, lease_until=lease_until, exclude=skipped,
                room=per_sub_room, default_room=self._buffer_per_sub,
            )
        for job in jobs:
            self._held.add(job.delivery_id)
            known = self._versions.get(job.subscription_id, 0)
            if job.subscription_version > known:
                self._versions[job.subscription_id] = job.subscription_version
            self._waiting.setdefault(job.subscription_id, collections.deque()).append(job)
        return len(jobs), more, capped, skipped

    async def _next_due(self) -> dt.datetime | None:
        async with self._db.read() as session:
            return await self._queue.next_due(session)

    def _wake_at(self, when: dt.datetime) -> None:
        """Wake the claim loop when `when` comes (a retry falls due)."""
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, (when - utcnow()).total_seconds())
        if at >= self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at

        def fire() -> None:
            self._timer, self._timer_at = None, float("inf")
            self.wake()

        self._timer = loop.call_at(at, fire)

    def _refill_soon(self) -> None:
        if self._refill is None and not self._stopping:
            def fire() -> None:
                self._refill = None
                self.wake()

            self._refill = asyncio.get_running_loop().call_later(REFILL_DELAY_SECONDS, fire)

    # --- attempting --------------------------------------------------------------------------

    def _start_runnable(self) -> None:
        """Start every waiting job that has a slot: after a claim, or when a slot of the total
        freed (then the walk ends as soon as the total is full again)."""
        if self._stopping:
            return
        emptied = []
        for subscription_id, queue in self._waiting.items():
            if self._running_total >= self._limits.total:
                break
            self._start_from(subscription_id, queue)
            if not queue:
                emptied.append(subscription_id)
        for subscription_id in emptied:
            del self._waiting[subscription_id]

    def _start_from(self, subscription_id: str, queue: collections.deque[Job]) -> None:
        """Start the subscription's waiting jobs while it and the total have slots."""
        while queue and self._running.get(subscription_id, 0) < self._limits.per_subscription \
                and self._running_total < self._limits.total:
            job = queue.popleft()
            if job.subscription_version < self._versions.get(subscription_id, 0):
                self._results.put_nowait(job)  # stale: give it back, claim it afresh
                continue
            self._running[subscription_id] = self._running.get(subscription_id, 0) + 1
            self._running_total += 1
            task = asyncio.create_task(self._attempt(job))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

    def _slot_freed(self, subscription_id: str, *, total_was_full: bool) -> None:
        """An attempt ended. Every other waiting subscription is at its own limit or waits for
        the total (each claim and each freed slot of the total start all that can run), so
        unless the total was full only this subscription can start another job: no walk over
        every waiting subscription per attempt."""
        if self._stopping:
            return
        if total_was_full:
            self._start_runnable()
            return
        queue = self._waiting.get(subscription_id)
        if queue is not None:
            self._start_from(subscription_id, queue)
            if not queue:
                del self._waiting[subscription_id]

    async def _attempt(self, job: Job) -> None:
        recorded = False
        try:
            secret = self._secrets.secret(job.subscription_id, job.sealed_secret)
            result, started = await send_attempt(
                self._client, url=job.url, scheme=job.scheme, secret=secret, event_id=job.event_id,
                event_type=job.event_type, body=job.body, user_agent=self._user_agent, trace_headers=job.trace_headers,
                spans=self._spans, custom_headers=self._secrets.headers(job.subscription_id, job.sealed_headers),
                client_tls=self._secrets.client_tls(job.subscription_id, job.sealed_client_tls),
                previous_secret=self._secrets.previous(job.subscription_id, job.sealed_previous_secret)
                if job.previous_secret_expires_at is not None and utcnow() < job.previous_secret_expires_at else None,
            )
            outcome = outcome_of(result, job.attempt, started, self._policy, test=job.test)
            if self._metrics is not None:
                self._metrics.attempted(outcome.status, occurred_at=job.occurred_at, answered_at=utcnow(), test=job.test)
            self._results.put_nowait(Completed(
                job=job,
                attempt_row=attempt_row(
                    row_id("att"), org_id=job.org_id, delivery_id=job.delivery_id, subscription_id=job.subscription_id,
                    event_id=job.event_id, event_type=job.event_type, round_=job.round, attempt=job.attempt,
                    attempted_at=started, url=job.url, test=job.test, status_code=result.status_code,
                    succeeded=result.succeeded, error=result.error, error_detail=result.error_detail,
                    response_body=result.response_body, duration_ms=result.duration_ms, sent_by=self._queue.owner,
                    exchange=result.exchange,
                ),
                status=outcome.status, next_attempt_at=outcome.next_attempt_at, exhausted=outcome.exhausted,
            ))
            recorded = True
            self.attempted += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one broken job must not stop the others
            log.exception("delivery %s failed before its attempt was recorded", job.delivery_id)
        finally:
            if not recorded:
                self._results.put_nowait(job)
            self._running[job.subscription_id] -= 1
            if not self._running[job.subscription_id]:
                del self._running[job.subscription_id]
            total_was_full = self._running_total >= self._limits.total
            self._running_total -= 1
            self._slot_freed(job.subscription_id, total_was_full=total_was_full)
            if self._more_waiting and len(self._waiting.get(job.subscription_id, ())) < self._limits.per_subscription:
                self._refill_soon()

    # --- recording ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:  # ended by stop(), once everything queued is recorded
            batch = [await self._results.get()]
            if self._results.qsize() < WRITE_LINGER_BELOW and not self._stopping:
                await asyncio.sleep(WRITE_LINGER_SECONDS)
            while len(batch) < WRITE_BATCH and not self._results.empty():
                batch.append(self._results.get_nowait())
            while True:
                try:
                    await self._write(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - keep the results and try again
                    log.warning("recording %d delivery results failed; retrying", len(batch), exc_info=True)
                    await asyncio.sleep(RETRY_DELAY_SECONDS)
            for _ in batch:
                self._results.task_done()

    async def _write(self, batch: list[Completed | Job]) -> None:
        completed = [item for item in batch if isinstance(item, Completed)]
        released = [item.delivery_id for item in batch if isinstance(item, Job)]
        now = utcnow()
        failing = []
        alerted = 0
        async with self._db.write() as session:
            if completed:
                failing = await self._queue.record(session, completed, now)
                for sub in failing:
                    await write_event(session, events.subscription_changed(
                        "failing", subscription_id=sub.id, org_id=sub.org_id, integration_id=sub.integration_id,
                        status=SubscriptionStatus.FAILING, version=sub.version, actor_id=events.SYSTEM_ACTOR, now=now,
                    ))
                    last = next(c for c in completed if c.exhausted and c.job.subscription_id == sub.id)
                    alerted += await write_alert(session, subscription_alert(
                        SUBSCRIPTION_FAILING_TYPE, event_id=row_id("evt"), org_id=sub.org_id, subscription_id=sub.id,
                        integration_id=sub.integration_id, url=last.job.url, failing_since=now, now=now,
                        failed_event_id=last.job.event_id, failed_event_type=last.job.event_type,
                        last_error=str(last.attempt_row["error_detail"]),
                    ), integration_id=sub.integration_id, url=last.job.url, failing_since=now, now=now)
            if released:
                await self._queue.release(session, released)
        for item in batch:
            self._held.discard(item.job.delivery_id if isinstance(item, Completed) else item.delivery_id)
        if failing:
            self._notify()
            for sub in failing:
                log.warning("webhook subscription %s is Failing: all attempts of an event failed", sub.id)
                self.subscription_changed(sub.id, sub.version)
        retries = [c.next_attempt_at for c in completed if c.next_attempt_at is not None]
        if retries:
            self._wake_at(min(retries))
        if released or alerted:
            self.wake()

    async def _renew_loop(self) -> None:
        interval = self._limits.lease_seconds / 3
        while not self._stopping:
            await asyncio.sleep(interval)
            if not self._held:
                continue
            try:
                async with self._db.write() as session:
                    lease_until = utcnow() + dt.timedelta(seconds=self._limits.lease_seconds)
                    await self._queue.renew(session, lease_until)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.warning("renewing delivery claims failed", exc_info=True)
