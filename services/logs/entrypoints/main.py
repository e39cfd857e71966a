"""Wires logs together: database, NATS, the three consumers, the retention task and the gRPC
server, through the kit's ServiceBuilder. Nothing here runs at import time;
`python -m services.logs` runs it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.kit.builder import ServiceBuilder
from services.kit.periodic import Periodic
from services.kit.service import RunningService, run_main
from services.kit.settingcheck import SettingError
from services.kit.settings import Mode
from services.logs.adapters.consumers import (
    APILOG_FETCH_BYTES,
    BatchConsumer,
    Durables,
    decode_audit,
    decode_integration,
    decode_requests,
    single,
)
from services.logs.adapters.store import LogsRepository, units_of_work
from services.logs.application.handlers import LogsHandlers
from services.logs.domain.model import decode_audit_key
from services.logs.entrypoints.grpc_api import SERVICE_NAME, LogsServicer
from services.logs.entrypoints.settings import LogsProcessSettings

NAME = "logs"
log = logging.getLogger(__name__)

# SQLite page cache for the request log's indexes (KiB, negative per SQLite's convention).
SQLITE_CACHE_KIB = 65_536


def _bigger_sqlite_cache(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _cache(dbapi_conn: Any, _record: Any) -> None:  # the DBAPI connection: untyped in SQLAlchemy too
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()


class ConsumerGroup:
    """The consumers as one component: started in order (all stopped when one fails to start),
    stopped at once, so stopping the service waits for the slowest, not for their sum."""

    def __init__(self, consumers: Sequence[BatchConsumer[Any]]) -> None:
        self._consumers = list(consumers)

    async def start(self) -> None:
        try:
            for consumer in self._consumers:
                await consumer.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self._consumers))


async def bootstrap(settings: LogsProcessSettings, *, address: str | None = None, durables: Durables | None = None,
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
    async with ServiceBuilder(NAME, settings, address=address) as build:
        db = build.database()
        if db.sqlite:
            _bigger_sqlite_cache(db.engine)
        handlers = LogsHandlers(units_of_work(db.sessions, LogsRepository(postgres=not db.sqlite)), audit_key)
        bus = await build.nats()
        consumers: list[BatchConsumer[Any]] = [
            BatchConsumer(bus.nc, subject="trellis.integration.>", stream="TRELLIS", durable=durables.integrations,
                          decode=single(decode_integration), store=handlers.apply_integrations, batch=min(batch, 200)),
            BatchConsumer(bus.nc, subject="trellis.audit.>", stream="TRELLIS", durable=durables.audit,
                          decode=single(decode_audit), store=handlers.record_audit, batch=min(batch, 200)),
            BatchConsumer(bus.nc, subject="apilog.>", stream="APILOG", durable=durables.apilog,
                          decode=decode_requests, store=handlers.record_requests, batch=batch,
                          max_bytes=APILOG_FETCH_BYTES),
        ]
        # Started in order and stopped together, each finishing the batch in hand.
        await build.start(ConsumerGroup(consumers), "consumers")
        for consumer in consumers:
            build.metrics.watch_consumer(bus.js, consumer.stream, consumer.durable)
        days, platform_max_rows = settings.logs_retention_days, settings.logs_platform_max_rows

        async def retention_pass() -> None:
            deleted = await handlers.enforce_retention(days, platform_max_rows=platform_max_rows)
            if deleted:
                log.info("retention: deleted %d request records older than %d days or beyond the platform log's %d "
                         "rows", deleted, days, platform_max_rows)

        await build.start(Periodic("logs-retention", retention_pass, interval=settings.logs_retention_interval_seconds),
                          "retention task")
        servicer = LogsServicer(handlers)
        return build.serve(
            lambda server: logs_pb2_grpc.add_LogsServicer_to_server(servicer, server),
            [SERVICE_NAME])


def main() -> None:
    run_main(NAME, bootstrap, LogsProcessSettings)
