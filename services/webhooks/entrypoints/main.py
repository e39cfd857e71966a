"""Wires webhooks together: database, NATS, outbox relay, the HTTP delivery client, the
dispatcher, the activity and integration consumers, the registry peer (TRELLIS_REGISTRY_ADDR:
which integration an administrator may name as a subscription's owner), and the gRPC server.
Nothing here runs at import time."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ActorVerifier
from services.kit.bus import connect, ensure_streams
from services.kit.crypto import Envelope
from services.kit.db import create_engine, is_sqlite, session_factory
from services.kit.grpc_server import create_server
from services.kit.metrics import ServiceMetrics
from services.kit.outbox import OutboxRelay, jetstream_publisher
from services.kit.service import Cleanup, RunningService, run_main
from services.kit.settings import Settings
from services.kit.telemetry import peer_channel
from services.webhooks.adapters.consumer import ActivityConsumer, IntegrationEventsConsumer, SubscriptionEventsListener
from services.webhooks.adapters.dispatcher import Dispatcher, Limits, SecretCache
from services.webhooks.domain.model import RetryPolicy
from services.webhooks.entrypoints.grpc_api import SERVICE_NAME, WebhooksServicer
from services.webhooks.application.handlers import ActivityIngest, WebhookHandlers
from services.webhooks.adapters.metrics import WebhookMetrics
from services.webhooks.adapters.registry_client import RegistryIntegrations
from services.webhooks.adapters.sender import DeliveryClient, Lookup, system_lookup
from services.webhooks.adapters.ssrf import AddressPolicy, DestinationCheck
from services.webhooks.adapters.queue import WorkQueue
from services.webhooks.adapters.store import ActivityLog, Database, outbox

NAME = "webhooks"
log = logging.getLogger(__name__)


async def bootstrap(settings: Settings, *, address: str | None = None, replay_history: bool = True,
                    lookup: Lookup = system_lookup) -> RunningService:
    """A ready-to-start webhooks service; the database must already be migrated.

    The JetStream durables are named from `webhooks_consumer_name`; `replay_history=False`
    starts a new durable at the stream's end (tests). `lookup` resolves receivers' host names
    (tests point test names at loopback); every answer still passes the SSRF check.
    """
    cleanups: list[Cleanup] = []
    metrics = ServiceMetrics(NAME)
    delivery_metrics = WebhookMetrics(metrics)
    try:
        url = settings.database_url(NAME)
        engine = create_engine(url, echo=settings.database_echo)
        cleanups.append(engine.dispose)
        sessions = session_factory(engine)
        sqlite = is_sqlite(url)
        db = Database(sessions, serialize_writes=sqlite)

        nc = await connect(settings.nats_url, name=f"trellis-{NAME}")
        cleanups.append(nc.close)
        js = nc.jetstream()
        await ensure_streams(js, replicas=settings.nats_stream_replicas)

        relay = OutboxRelay(sessions, outbox, jetstream_publisher(js), poll_seconds=settings.outbox_poll_seconds,
                            skip_locked=not sqlite)
        relay.start()
        cleanups.append(relay.stop)
        metrics.watch_outbox(relay)

        address_policy = AddressPolicy.allowing(settings.webhooks_allowed_private_networks)
        client = DeliveryClient(
            address_policy,
            timeout_seconds=settings.webhooks_timeout_seconds, ca_bundle=settings.webhooks_ca_bundle,
            max_connections=settings.webhooks_concurrency_total, lookup=lookup,
        )
        await client.start()
        cleanups.append(client.close)

        envelope = Envelope(settings.kek_keys(), settings.kek_version)
        policy = RetryPolicy.of(settings.webhooks_retry_schedule_seconds)
        address = address or f"{settings.bind_host}:{settings.listen_port(NAME)}"
        queue = WorkQueue(owner=replica_name(address), skip_locked=not sqlite)
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
        dispatcher.start()
        cleanups.append(dispatcher.stop)

        registry_channel = peer_channel(settings.registry_addr)

        async def close_registry() -> None:
            await registry_channel.close()

        cleanups.append(close_registry)
        ingest = ActivityIngest(db, ActivityLog(), dispatcher)
        handlers = WebhookHandlers(db, envelope, client, dispatcher, ingest, policy,
                                   user_agent=settings.webhooks_user_agent,
                                   integrations=RegistryIntegrations(registry_pb2_grpc.RegistryStub(registry_channel)),
                                   destinations=DestinationCheck(address_policy, lookup),
                                   owner=queue.owner, notify=relay.notify)

        listener = SubscriptionEventsListener(nc, dispatcher.subscription_changed)
        await listener.start()
        cleanups.append(listener.stop)
        consumers = (
            ActivityConsumer(js, ingest, durable=f"{settings.webhooks_consumer_name}-activity", replay_history=replay_history,
                             ack_wait_seconds=settings.webhooks_consumer_ack_wait_seconds),
            IntegrationEventsConsumer(js, handlers, durable=f"{settings.webhooks_consumer_name}-integrations",
                                      replay_history=replay_history, ack_wait_seconds=settings.webhooks_consumer_ack_wait_seconds),
        )
        for consumer in consumers:
            await consumer.start()
            cleanups.append(consumer.stop)
            metrics.watch_consumer(js, consumer.loop.stream, consumer.loop.durable)

        servicer = WebhooksServicer(handlers)
        server, port, health = create_server(
            address,
            register=lambda s: webhooks_pb2_grpc.add_WebhooksServicer_to_server(servicer, s),
            service_names=[SERVICE_NAME],
            verifier=ActorVerifier.from_settings(settings),
            metrics=metrics,
        )
    except BaseException:
        for cleanup in reversed(cleanups):
            await cleanup()
        raise
    return RunningService(name=NAME, server=server, port=port, health=health, service_names=[SERVICE_NAME], cleanups=cleanups,
                          metrics=metrics, metrics_address=settings.metrics_address(NAME, address))


def replica_name(address: str) -> str:
    """This replica's name in delivery claims: host and port, so that a restart on the same
    port takes back the claims its previous run left (a port of 0 gets a unique name)."""
    port = address.rsplit(":", 1)[-1]
    if port in ("", "0"):
        return f"{socket.gethostname()}:{os.getpid()}-{uuid.uuid4().hex[:8]}"[:64]
    return f"{socket.gethostname()}:{port}"[:64]


def main() -> None:
    run_main(NAME, bootstrap)
