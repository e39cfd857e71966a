"""Wires identity: database, NATS and the outbox relay, signing keys, the integration-events
consumer, handlers and the gRPC server. Nothing is wired at import time; `python -m
services.identity` runs it."""

from __future__ import annotations

from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.identity.adapters.consumer import IntegrationEventsConsumer
from services.identity.adapters.external_issuer import ExternalIssuer
from services.identity.adapters.signing import JwtSigning
from services.identity.adapters.store import SqlIdentityUnitOfWork, outbox
from services.identity.application.handlers import CredentialHandlers, PartnerEndpoints
from services.identity.application.tokens import SigningKeyRing, TokenHandlers
from services.identity.domain.model import TokenSettings
from services.identity.entrypoints.grpc_api import PUBLIC_METHODS, SERVICE_NAME, IdentityServicer
from services.identity.entrypoints.settings import IdentityProcessSettings
from services.kit.builder import ServiceBuilder
from services.kit.crypto import Envelope
from services.kit.service import RunningService, run_main

NAME = "identity"


async def bootstrap(settings: IdentityProcessSettings, *, address: str | None = None,
                    consumer_durable: str = "identity") -> RunningService:
    """A ready-to-start identity service (the caller awaits `start()`); the database must
    already be migrated.

    On first start (no current signing key) the first key is created. `consumer_durable` names
    the JetStream durable consumer of integration events (tests give each instance its own).
    """
    async with ServiceBuilder(NAME, settings, address=address) as build:
        db = build.database()
        bus = await build.nats()
        relay = build.outbox_relay(db, outbox, bus)

        def unit_of_work(*, read_only: bool = False) -> SqlIdentityUnitOfWork:
            if read_only:
                return SqlIdentityUnitOfWork(db.read_sessions, read_only=True)
            return SqlIdentityUnitOfWork(db.sessions, flush=relay.flush)

        signing = JwtSigning(Envelope(settings.kek_keys(), settings.kek_version), settings.token_algorithm)
        ring = SigningKeyRing(unit_of_work, signing)
        await ring.ensure_current()

        credentials = CredentialHandlers(
            unit_of_work,
            PartnerEndpoints(
                api_key_prefix=settings.api_key_prefix, token_url=settings.token_url, issuer=settings.token_issuer,
                audience=settings.token_audience, external_issuer=settings.external_issuer,
            ),
        )
        tokens = TokenHandlers(
            unit_of_work,
            ring,
            TokenSettings(issuer=settings.token_issuer, audience=settings.token_audience, ttl_seconds=settings.token_ttl_seconds),
            external=ExternalIssuer.from_settings(settings),
        )
        await build.consumer(IntegrationEventsConsumer(bus.js, credentials, durable=consumer_durable), bus)

        servicer = IdentityServicer(credentials, tokens)
        return build.serve(lambda server: identity_pb2_grpc.add_IdentityServicer_to_server(servicer, server),
                           [SERVICE_NAME], public_methods=PUBLIC_METHODS)


def main() -> None:
    run_main(NAME, bootstrap, IdentityProcessSettings)
