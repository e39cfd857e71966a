"""Wires logs together: database, NATS, the three consumers, the retention task and the gRPC
server. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.kit.auth import ActorVerifier
from services.kit.bus import connect, ensure_streams
from services.kit.db import create_engine, is_sqlite, session_factory
from services.kit.grpc_server import create_server
from services.kit.metrics import ServiceMetrics
from services.kit.service import Cleanup, RunningService, run_main
from services.kit.settingcheck import SettingError
from services.kit.settings import Mode, Settings
from services.logs.adapters.consumers import (
    APILOG_FETCH_BYTES,
    BatchConsumer,
    Durables,
    decode_audit,
    decode_integration,
    decode_requests,
    single,
)
from services.logs.domain.model import decode_audit_key
from services.logs.entrypoints.grpc_api import SERVICE_NAME, LogsServicer
from services.logs.application.handlers import LogsHandlers
from services.logs.adapters.store import LogsRepository

NAME = "logs"
log = logging.getLogger(__name__)

# SQLite page cache for the request log's indexes (KiB, negative per SQLite's convention).
SQLITE_CACHE_KIB = 65_536


def _bigger_sqlite_cache(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _cache(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()


class RetentionTask:
    """Deletes expired request records (and the platform log's beyond its bound) every
    `interval` seconds, in bounded batches."""

    def __init__(self, handlers: LogsHandlers, *, days: int, interval: float, platform_max_rows: int) -> None:
        self._handlers, self._days, self._interval = handlers, days, interval
        self._platform_max_rows = platform_max_rows
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="logs-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self._handlers.enforce_retention(self._days, platform_max_rows=self._platform_max_rows)
                if deleted:
                    log.info("retention: deleted %d request records older than %d days or beyond the platform "
                             "log's %d rows", deleted, self._days, self._platform_max_rows)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again next round
                log.warning("retention pass failed", exc_info=True)
            await asyncio.sleep(self._interval)


async def bootstrap(settings: Settings, *, address: str | None = None, durables: Durables | None = None,
                    batch: int = 2000) -> RunningService:
    """A ready-to-start logs service; the database must already be migrated.

    `durables` names the JetStream durable consumers (tests give each instance its own);
    `batch` is how many messages one fetch and one transaction take at most; an API-log fetch
    also stops at `APILOG_FETCH_BYTES`, since one edge message carries many records.
    """
    try:
        audit_key = decode_audit_key(settings.audit_hmac_key.get_secret_value(), embedded=settings.mode is Mode.EMBEDDED)
    except ValueError as exc:  # the form is checked with the settings: this is the production refusal
        raise SettingError("TRELLIS_AUDIT_HMAC_KEY", "base64 of at least 32 random bytes outside the embedded mode") from exc
    durables = durables or Durables()
    cleanups: list[Cleanup] = []
    metrics = ServiceMetrics(NAME)
    try:
        url = settings.database_url(NAME)
        engine = create_engine(url, echo=settings.database_echo)
        if is_sqlite(url):
            _bigger_sqlite_cache(engine)
        cleanups.append(engine.dispose)
        handlers = LogsHandlers(session_factory(engine), LogsRepository(postgres=not is_sqlite(url)), audit_key)

        nc = await connect(settings.nats_url, name=f"trellis-{NAME}")
        cleanups.append(nc.close)
        js = nc.jetstream()
        await ensure_streams(js, replicas=settings.nats_stream_replicas)

        consumers = [
            BatchConsumer(nc, subject="trellis.integration.>", stream="TRELLIS", durable=durables.integrations,
                          decode=single(decode_integration), store=handlers.apply_integrations, batch=min(batch, 200)),
            BatchConsumer(nc, subject="trellis.audit.>", stream="TRELLIS", durable=durables.audit,
                          decode=single(decode_audit), store=handlers.record_audit, batch=min(batch, 200)),
            BatchConsumer(nc, subject="apilog.>", stream="APILOG", durable=durables.apilog,
                          decode=decode_requests, store=handlers.record_requests, batch=batch,
                          max_bytes=APILOG_FETCH_BYTES),
        ]
        async def stop_consumers() -> None:
            await asyncio.gather(*(c.stop() for c in consumers))

        cleanups.append(stop_consumers)
        for consumer in consumers:
            await consumer.start()
            metrics.watch_consumer(js, consumer.stream, consumer.durable)

        retention = RetentionTask(handlers, days=settings.logs_retention_days,
                                  interval=settings.logs_retention_interval_seconds,
                                  platform_max_rows=settings.logs_platform_max_rows)
        retention.start()
        cleanups.append(retention.stop)

        servicer = LogsServicer(handlers)
        address = address or f"{settings.bind_host}:{settings.listen_port(NAME)}"
        server, port, health = create_server(
            address,
            register=lambda s: logs_pb2_grpc.add_LogsServicer_to_server(servicer, s),
            service_names=[SERVICE_NAME],
            verifier=ActorVerifier.from_settings(settings),
            metrics=metrics,
        )
    except BaseException:
        for cleanup in reversed(cleanups):
            await cleanup()
        raise
    return RunningService(name=NAME, server=server, port=port, health=health, service_names=[SERVICE_NAME],
                          cleanups=cleanups, metrics=metrics, metrics_address=settings.metrics_address(NAME, address))


def main() -> None:
    run_main(NAME, bootstrap)
