"""Wires identity together: database, NATS, outbox relay, signing keys, the integration-events
consumer and the gRPC server. Nothing here runs at import time."""

from __future__ import annotations

from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.identity.adapters.consumer import IntegrationEventsConsumer
from services.identity.domain.model import TokenSettings
from services.identity.entrypoints.grpc_api import PUBLIC_METHODS, SERVICE_NAME, IdentityServicer
from services.identity.application.handlers import CredentialHandlers, PartnerEndpoints
from services.identity.adapters.store import outbox
from services.identity.application.tokens import ExternalIssuer, SigningKeyRing, TokenHandlers
from services.kit.auth import ActorVerifier
from services.kit.bus import connect, ensure_streams
from services.kit.crypto import Envelope
from services.kit.db import create_engine, is_sqlite, session_factory
from services.kit.grpc_server import create_server
from services.kit.metrics import ServiceMetrics
from services.kit.outbox import OutboxRelay, jetstream_publisher
from services.kit.service import Cleanup, RunningService, run_main
from services.kit.settings import Settings

NAME = "identity"


async def bootstrap(settings: Settings, *, address: str | None = None, consumer_durable: str = "identity") -> RunningService:
    """A ready-to-start identity service; the database must already be migrated.

    On first start (no current signing key) the first key is created. `consumer_durable` names
    the JetStream durable consumer of integration events (tests give each instance its own).
    """
    cleanups: list[Cleanup] = []
    metrics = ServiceMetrics(NAME)
    try:
        url = settings.database_url(NAME)
        engine = create_engine(url, echo=settings.database_echo)
        cleanups.append(engine.dispose)
        sessions = session_factory(engine)

        nc = await connect(settings.nats_url, name=f"trellis-{NAME}")
        cleanups.append(nc.close)
        js = nc.jetstream()
        await ensure_streams(js, replicas=settings.nats_stream_replicas)

        relay = OutboxRelay(
            sessions, outbox, jetstream_publisher(js), poll_seconds=settings.outbox_poll_seconds, skip_locked=not is_sqlite(url)
        )
        relay.start()
        cleanups.append(relay.stop)
        metrics.watch_outbox(relay)

        ring = SigningKeyRing(sessions, Envelope(settings.kek_keys(), settings.kek_version), settings.token_algorithm)
        await ring.ensure_current()

        credentials = CredentialHandlers(
            sessions,
            PartnerEndpoints(
                api_key_prefix=settings.api_key_prefix, token_url=settings.token_url, issuer=settings.token_issuer,
                audience=settings.token_audience, external_issuer=settings.external_issuer,
            ),
            flush=relay.flush,
        )
        tokens = TokenHandlers(
            sessions,
            ring,
            TokenSettings(issuer=settings.token_issuer, audience=settings.token_audience, ttl_seconds=settings.token_ttl_seconds),
            external=ExternalIssuer.from_settings(settings),
            flush=relay.flush,
        )

        consumer = IntegrationEventsConsumer(js, credentials, durable=consumer_durable)
        await consumer.start()
        cleanups.append(consumer.stop)
        metrics.watch_consumer(js, consumer.loop.stream, consumer.loop.durable)

        servicer = IdentityServicer(credentials, tokens)
        address = address or f"{settings.bind_host}:{settings.listen_port(NAME)}"
        server, port, health = create_server(
            address,
            register=lambda s: identity_pb2_grpc.add_IdentityServicer_to_server(servicer, s),
            service_names=[SERVICE_NAME],
            verifier=ActorVerifier.from_settings(settings),
            public_methods=PUBLIC_METHODS,
            metrics=metrics,
        )
    except BaseException:
        for cleanup in reversed(cleanups):
            await cleanup()
        raise
    return RunningService(name=NAME, server=server, port=port, health=health, service_names=[SERVICE_NAME], cleanups=cleanups,
                          metrics=metrics, metrics_address=settings.metrics_address(NAME, address))


def main() -> None:
    run_main(NAME, bootstrap)
