"""What every service's `main.py` shares: a running-service handle (with its /metrics
endpoint), peer calls on the actor's behalf, logging, and the `python -m services.<name>` entry
point."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc_health.v1 import health

from services.kit.auth import Actor
from services.kit.grpc_server import mark_serving, serve_until_signalled
from services.kit.ids import is_request_id
from services.kit.logcontext import JsonFormatter, RedactSecrets, TextFormatter
from services.kit.metrics import MetricsServer, ServiceMetrics
from services.kit.settingcheck import exit_on_bad_settings
from services.kit.settings import KitSettings, load_settings
from services.kit.telemetry import setup_tracing

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]
S = TypeVar("S", bound=KitSettings)


@dataclass
class RunningService:
    """A started service: its server, bound port, and what to close when it stops."""

    name: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    cleanups: list[Cleanup] = field(default_factory=list)
    # Served at GET /metrics on `metrics_address` (KitSettings.metrics_address) from start();
    # `metrics_port` is the port bound (0 until started, or with no address).
    metrics: ServiceMetrics | None = None
    metrics_address: str | None = None
    metrics_port: int = 0
    _metrics_server: MetricsServer | None = field(default=None, repr=False)

    async def start(self) -> "RunningService":
        if self.metrics is not None and self.metrics_address:
            self._metrics_server = MetricsServer(self.metrics.render, self.metrics_address)
            self.metrics_port = await self._metrics_server.start()
        await self.server.start()
        await mark_serving(self.health, self.service_names)
        return self

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._metrics_server is not None:
            await self._metrics_server.stop()
            self._metrics_server = None
        for cleanup in reversed(self.cleanups):
            try:
                await cleanup()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.warning("cleanup failed while stopping %s", self.name, exc_info=True)


def actor_metadata(actor: Actor, request_id: str = "") -> tuple[tuple[str, str], ...]:
    """Call metadata that forwards the actor's token to a peer service, and the request id when
    it is one metadata can carry (gRPC fails the call on anything else)."""
    metadata: list[tuple[str, str]] = [("authorization", f"Bearer {actor.token}")]
    if request_id and is_request_id(request_id):
        metadata.append(("x-request-id", request_id))
    return tuple(metadata)


def configure_logging(settings: KitSettings | None = None, service: str = "") -> None:
    """Root logging for a service process: level from TRELLIS_LOG_LEVEL, one JSON object per line
    or text (`KitSettings.effective_log_format()`; text without settings), secrets masked."""
    level = os.environ.get("TRELLIS_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    json_lines = settings is not None and settings.effective_log_format() == "json"
    handler.setFormatter(JsonFormatter(service) if json_lines else TextFormatter())
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def run_main(name: str, bootstrap: Callable[[S], Awaitable[RunningService]], settings_type: type[S]) -> None:
    """Entry point of `python -m services.<name>`: settings (`settings_type`, the process's own
    class in its entrypoints/settings.py; every group checked),
    logging, tracing, serve until SIGTERM. A bad setting, read or found at start, is one line on
    stderr and exit code 2."""
    with exit_on_bad_settings():
        settings = load_settings(settings_type)
    configure_logging(settings, name)

    async def main() -> None:
        setup_tracing(name, namespace=settings.otel_service_namespace, sample_ratio=settings.otel_sample_ratio)
        service = await (await bootstrap(settings)).start()
        log.info("%s serving on port %d", name, service.port)
        await serve_until_signalled(service.server, grace=settings.grpc_grace_seconds, on_stop=lambda: service.stop(0))

    with exit_on_bad_settings():
        asyncio.run(main())
