"""Start a Trellis service in-process on a real port, the way its `main.py` would."""

from __future__ import annotations

import importlib

import grpc

from services.kit.db import migrate_async
from services.kit.service import RunningService
from services.kit.settings import Settings


async def start_service(name: str, settings: Settings) -> RunningService:
    """Migrate the service's database, bootstrap it on 127.0.0.1:0, and start it."""
    await migrate_async(name, settings.database_url(name))
    main = importlib.import_module(f"services.{name}.main")
    service: RunningService = await main.bootstrap(settings, address="127.0.0.1:0")
    return await service.start()


def channel_to(service: RunningService) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
