"""Wires webhooks: database, NATS and the outbox relay, the HTTP delivery client, the
dispatcher, the registry peer (TRELLIS_REGISTRY_ADDR: which integration an administrator may
name as a subscription's owner), the handlers, the subscription listener and the activity and
integration consumers, then the gRPC server. Nothing is wired at import time;
`python -m services.webhooks` runs it."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.builder import ServiceBuilder
from services.kit.bus import trace_headers
from services.kit.crypto import Envelope
from services.kit.periodic import Periodic
from services.kit.service import RunningService, run_main
from services.kit.telemetry import tracer
from services.webhooks.adapters.consumer import ActivityConsumer, IntegrationEventsConsumer, SubscriptionEventsListener
from services.webhooks.adapters.dispatcher import Dispatcher, Limits
from services.webhooks.adapters.metrics import WebhookMetrics
from services.webhooks.adapters.queue import WorkQueue
from services.webhooks.adapters.registry_client import RegistryIntegrations
from services.webhooks.adapters.sender import DeliveryClient, Lookup, SignedSender, system_lookup
from services.webhooks.adapters.ssrf import AddressPolicy, DestinationCheck
from services.webhooks.adapters.store import Database, SqlWebhooksUnitOfWork, failing_subscriptions, outbox
from services.webhooks.application.handlers import ActivityIngest, Retention, SecretCache, WebhookHandlers
from services.webhooks.domain.model import RetryPolicy
from services.webhooks.entrypoints.grpc_api import SERVICE_NAME, WebhooksServicer
from services.webhooks.entrypoints.settings import WebhooksProcessSettings

NAME = "webhooks"
log = logging.getLogger(__name__)


async def bootstrap(settings: WebhooksProcessSettings, *, address: str | None = None, replay_history: bool = True,
                    lookup: Lookup = system_lookup) -> RunningService:
    """A ready-to-start webhooks service; the database must already be migrated.

    The JetStream durables are named from `webhooks_consumer_name`; `replay_history=False`
    starts a new durable at the stream's end (tests). `lookup` resolves receivers' host names
    (tests point test names at loopback); every answer still passes the SSRF check.
    """
    async with ServiceBuilder(NAME, settings, address=address) as build:
        delivery_metrics = WebhookMetrics(build.metrics)
        built = build.database()
        db = Database(built.sessions, serialize_writes=built.sqlite)
        bus = await build.nats()
        relay = build.outbox_relay(built, outbox, bus)

        address_policy = AddressPolicy.allowing(settings.webhooks_allowed_private_networks)
        client = DeliveryClient(
            address_policy,
            timeout_seconds=settings.webhooks_timeout_seconds, ca_bundle=settings.webhooks_ca_bundle,
            max_connections=settings.webhooks_concurrency_total, lookup=lookup,
            record_exchange=settings.webhooks_record_attempt_details,
        )
        await client.start()
        build.on_close(client.close, "delivery client")

        envelope = Envelope(settings.kek_keys(), settings.kek_version)
        policy = RetryPolicy.of(settings.webhooks_retry_schedule_seconds)
        queue = WorkQueue(owner=replica_name(build.address), skip_locked=not built.sqlite)
        async with db.write() as session:
            if released := await queue.release_all(session):
                log.info("released %d deliveries this replica had claimed before it stopped", released)
        dispatcher = Dispatcher(
            db, queue, client, SecretCache(envelope), policy,
            Limits(per_subscription=settings.webhooks_concurrency_per_subscription,
                   total=settings.webhooks_concurrency_total, lease_seconds=settings.webhooks_lease_seconds,
                   poll_seconds=settings.webhooks_poll_seconds),
            user_agent=settings.webhooks_user_agent, notify=relay.notify, metrics=delivery_metrics,
        )

        async def queue_depth() -> int:
            async with db.read() as session:
                return await queue.depth(session)

        delivery_metrics.watch_queue(queue_depth)

        async def failing_count() -> int:
            async with db.read() as session:
                return await failing_subscriptions(session)

        delivery_metrics.watch_failing(failing_count)
        await build.start(dispatcher, "dispatcher")
        registry = RegistryIntegrations(registry_pb2_grpc.RegistryStub(build.peer(settings.registry_addr)))

        def unit_of_work(*, read_only: bool = False) -> SqlWebhooksUnitOfWork:
            return SqlWebhooksUnitOfWork(db, read_only=read_only)

        ingest = ActivityIngest(unit_of_work, dispatcher)
        handlers = WebhookHandlers(unit_of_work, envelope, SignedSender(client, spans=tracer(Dispatcher.__module__)),
                                   dispatcher, ingest, policy, user_agent=settings.webhooks_user_agent,
                                   integrations=registry, destinations=DestinationCheck(address_policy, lookup),
                                   trace_context=trace_headers, owner=queue.owner, notify=relay.notify,
                                   retention_days=settings.webhooks_retention_days)
        retention = Retention(unit_of_work, default_days=settings.webhooks_retention_days)

        async def retention_pass() -> None:
            deleted = await retention.enforce()
            if deleted:
                log.info("retention: deleted %d expired delivery log rows", deleted)

        await build.start(Periodic("webhooks-retention", retention_pass,
                                   interval=settings.webhooks_retention_interval_seconds), "retention task")

        await build.start(SubscriptionEventsListener(bus.nc, dispatcher.subscription_changed), "subscription listener")
        ack_wait = settings.webhooks_consumer_ack_wait_seconds
        await build.consumer(ActivityConsumer(bus.js, ingest, durable=f"{settings.webhooks_consumer_name}-activity",
                                              replay_history=replay_history, ack_wait_seconds=ack_wait,
                                              on_nonconforming=delivery_metrics.nonconforming_activity), bus)
        await build.consumer(IntegrationEventsConsumer(bus.js, handlers,
                                                       durable=f"{settings.webhooks_consumer_name}-integrations",
                                                       replay_history=replay_history, ack_wait_seconds=ack_wait), bus)

        servicer = WebhooksServicer(handlers)
        return build.serve(lambda server: webhooks_pb2_grpc.add_WebhooksServicer_to_server(servicer, server),
                           [SERVICE_NAME])


def replica_name(address: str) -> str:
    """This replica's name in delivery claims: host and port, so that a restart on the same
    port takes back the claims its previous run left (a port of 0 gets a unique name)."""
    port = address.rsplit(":", 1)[-1]
    if port in ("", "0"):
        return f"{socket.gethostname()}:{os.getpid()}-{uuid.uuid4().hex[:8]}"[:64]
    return f"{socket.gethostname()}:{port}"[:64]


def main() -> None:
    run_main(NAME, bootstrap, WebhooksProcessSettings)
