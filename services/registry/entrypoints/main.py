"""Wires the registry: database, NATS and the outbox relay, the identity peer, handlers and
the gRPC server. Nothing is wired at import time; `python -m services.registry` runs it."""

from __future__ import annotations

from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.builder import ServiceBuilder
from services.kit.crypto import Envelope
from services.kit.service import RunningService, run_main
from services.registry.adapters.identity_client import IdentityCredentials
from services.registry.adapters.store import SqlRegistryUnitOfWork, outbox
from services.registry.application.handlers import RegistryHandlers, SetupRequestHandlers
from services.registry.entrypoints.grpc_api import SERVICE_NAME, RegistryServicer
from services.registry.entrypoints.settings import RegistryProcessSettings

NAME = "registry"


async def bootstrap(settings: RegistryProcessSettings, *, address: str | None = None) -> RunningService:
    """The registry, wired and bound but not yet started (the caller awaits `start()`); its
    database must already be migrated."""
    async with ServiceBuilder(NAME, settings, address=address) as build:
        db = build.database()
        bus = await build.nats()
        relay = build.outbox_relay(db, outbox, bus)
        identity = IdentityCredentials(identity_pb2_grpc.IdentityStub(build.peer(settings.identity_addr)))

        def unit_of_work() -> SqlRegistryUnitOfWork:
            return SqlRegistryUnitOfWork(db.sessions, postgres=not db.sqlite, flush=relay.flush)

        handlers = RegistryHandlers(unit_of_work, identity, max_live_integrations=settings.max_live_integrations)
        setup = SetupRequestHandlers(unit_of_work, Envelope(settings.kek_keys(), settings.kek_version))
        servicer = RegistryServicer(handlers, setup)
        return build.serve(lambda server: registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server),
                           [SERVICE_NAME])


def main() -> None:
    run_main(NAME, bootstrap, RegistryProcessSettings)
