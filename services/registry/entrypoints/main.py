"""Wires the registry: database, NATS and the outbox relay, the identity peer, handlers and
the gRPC server. Nothing is wired at import time; `python -m services.registry` runs it."""

from __future__ import annotations

from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import ActorVerifier
from services.kit.bus import connect, ensure_streams
from services.kit.db import create_engine, is_sqlite, session_factory
from services.kit.grpc_server import create_server
from services.kit.metrics import ServiceMetrics
from services.kit.outbox import OutboxRelay, jetstream_publisher
from services.kit.service import RunningService, run_main
from services.kit.settings import Settings
from services.kit.telemetry import peer_channel
from services.registry.entrypoints.grpc_api import SERVICE_NAME, RegistryServicer
from services.registry.application.handlers import RegistryHandlers
from services.registry.adapters.identity_client import IdentityCredentials
from services.registry.adapters.store import IntegrationRepository, outbox

NAME = "registry"


async def bootstrap(settings: Settings, *, address: str | None = None) -> RunningService:
    """The registry, wired and bound but not yet started (the caller awaits `start()`)."""
    url = settings.database_url(NAME)
    engine = create_engine(url, echo=settings.database_echo)
    sessions = session_factory(engine)
    cleanups = [engine.dispose]
    metrics = ServiceMetrics(NAME)
    try:
        nc = await connect(settings.nats_url, name=NAME)
        cleanups.append(nc.drain)
        js = nc.jetstream()
        await ensure_streams(js, replicas=settings.nats_stream_replicas)

        relay = OutboxRelay(
            sessions, outbox, jetstream_publisher(js),
            poll_seconds=settings.outbox_poll_seconds, skip_locked=not is_sqlite(url),
        )
        identity_channel = peer_channel(settings.identity_addr)

        async def close_identity() -> None:
            await identity_channel.close()

        cleanups.append(close_identity)
        handlers = RegistryHandlers(
            sessions,
            IntegrationRepository(postgres=not is_sqlite(url)),
            IdentityCredentials(identity_pb2_grpc.IdentityStub(identity_channel)),
            max_live_integrations=settings.max_live_integrations,
            flush=relay.flush,
        )
        address = address or f"{settings.bind_host}:{settings.listen_port(NAME)}"
        server, port, health = create_server(
            address,
            register=lambda s: registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(handlers), s),
            service_names=[SERVICE_NAME],
            verifier=ActorVerifier.from_settings(settings),
            metrics=metrics,
        )
        relay.start()
        cleanups.append(relay.stop)
        metrics.watch_outbox(relay)
    except BaseException:
        for cleanup in reversed(cleanups):
            await cleanup()
        raise
    return RunningService(NAME, server, port, health, [SERVICE_NAME], cleanups, metrics=metrics,
                          metrics_address=settings.metrics_address(NAME, address))


def main() -> None:
    run_main(NAME, bootstrap)
