"""A durable JetStream pull consumer that hands each fetched batch to a handler: the loop every
service's event consumer shares (identity's and webhooks'; the logs service pulls on its own
inbox for throughput, services/logs/adapters/consumers.py).

Acks are the handler's: it acks each message after its own commit, naks to have it redelivered,
or terms what can never be applied. The loop keeps fetching through a NATS outage and stops by
flag, so a cancel that nats-py's fetch swallows (Python 3.11's wait_for drops a cancel that
lands as the awaited message arrives) cannot hang shutdown; a batch fetched while stopping is
neither handled nor acked, and goes to whoever consumes next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.kit.bus import while_electing

log = logging.getLogger(__name__)

RETRY_DELAY_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0

Handler = Callable[[list[Msg]], Awaitable[None]]


class PullLoop:
    """Fetches batches of up to `batch` messages from a durable consumer and awaits `handle` on each."""

    def __init__(self, js: JetStreamContext, *, subject: str, stream: str, durable: str, batch: int,
                 replay_history: bool = True, ack_wait_seconds: float = 30.0, wait_seconds: float = 1.0,
                 max_ack_pending: int = 20_000) -> None:
        self._js = js
        self.subject, self.stream, self.durable = subject, stream, durable
        self._replay = replay_history
        self._batch = batch
        self._ack_wait = ack_wait_seconds
        self._max_ack_pending = max_ack_pending
        # A fetch that found nothing waiting collects what arrives for this long, then returns
        # it: the bound on how long a message waits for its batch.
        self._wait = wait_seconds
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, handle: Handler) -> None:
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if self._replay else DeliverPolicy.NEW,
            ack_wait=self._ack_wait, max_deliver=-1, max_ack_pending=self._max_ack_pending,
        )
        self._sub = await while_electing(
            lambda: self._js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream, config=config),
            what=f"consumer {self.durable}")
        self._task = asyncio.create_task(self._run(handle), name=f"consumer-{self.durable}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=self._wait + STOP_GRACE_SECONDS)
            if not done:
                log.warning("consumer %s did not stop in time", self.durable)
            elif not self._task.cancelled() and self._task.exception() is not None:
                log.warning("consumer %s ended with an error", self.durable, exc_info=self._task.exception())
            self._task = None
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be closing
                log.debug("unsubscribe failed while stopping", exc_info=True)
            self._sub = None

    async def _run(self, handle: Handler) -> None:
        assert self._sub is not None
        while not self._stopping:
            try:
                messages = await self._sub.fetch(self._batch, timeout=self._wait)
            except TimeoutError:  # nothing to fetch (nats.errors.TimeoutError is a TimeoutError too)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep consuming through a NATS outage
                log.warning("fetching from %s failed; retrying", self.subject, exc_info=True)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            if self._stopping:
                return
            try:
                await handle(messages)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed ack or a bug must not end the consumer
                # What was not acked is redelivered after ack_wait; keep consuming.
                log.exception("handling a batch from %s failed; continuing", self.subject)
                await asyncio.sleep(RETRY_DELAY_SECONDS)


class LoopConsumer:
    """What every consumer on one PullLoop shares: the loop (`self.loop`, set by the subclass),
    its stream and durable name (what the service's metrics watch), start and stop. A subclass
    says what a fetched batch means in `handle_batch`."""

    loop: PullLoop

    @property
    def stream(self) -> str:
        return self.loop.stream

    @property
    def durable(self) -> str:
        return self.loop.durable

    async def start(self) -> None:
        await self.loop.start(self.handle_batch)

    async def stop(self) -> None:
        await self.loop.stop()

    async def handle_batch(self, messages: list[Msg]) -> None:
        raise NotImplementedError
