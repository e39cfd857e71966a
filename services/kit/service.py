"""What every service's `main.py` shares: a running-service handle, peer calls on the actor's
behalf, logging, and the `python -m services.<name>` entry point."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health

from services.kit.auth import Actor
from services.kit.grpc_server import mark_serving, serve_until_signalled
from services.kit.settings import Settings
from services.kit.telemetry import setup_tracing

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


@dataclass
class RunningService:
    """A started service: its server, bound port, and what to close when it stops."""

    name: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    cleanups: list[Cleanup] = field(default_factory=list)

    async def start(self) -> "RunningService":
        await self.server.start()
        await mark_serving(self.health, self.service_names)
        return self

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for cleanup in reversed(self.cleanups):
            try:
                await cleanup()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.warning("cleanup failed while stopping %s", self.name, exc_info=True)


def actor_metadata(actor: Actor, request_id: str = "") -> tuple[tuple[str, str], ...]:
    """Call metadata that forwards the actor's token to a peer service."""
    metadata: list[tuple[str, str]] = [("authorization", f"Bearer {actor.token}")]
    if request_id:
        metadata.append(("x-request-id", request_id))
    return tuple(metadata)


def configure_logging() -> None:
    level = os.environ.get("TRELLIS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_main(name: str, bootstrap: Callable[[Settings], Awaitable[RunningService]]) -> None:
    """Entry point of `python -m services.<name>`: settings, tracing, serve until SIGTERM."""
    configure_logging()

    async def main() -> None:
        settings = Settings()
        setup_tracing(name, namespace=settings.otel_service_namespace)
        service = await (await bootstrap(settings)).start()
        log.info("%s serving on port %d", name, service.port)
        await serve_until_signalled(service.server, grace=settings.grpc_grace_seconds, on_stop=lambda: service.stop(0))

    asyncio.run(main())
