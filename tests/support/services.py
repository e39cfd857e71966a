"""Start a Trellis service in-process on a real port, the way its `main.py` would."""

from __future__ import annotations

import importlib
import importlib.util

import grpc

from services.kit.db import migrate_async
from services.kit.service import RunningService
from tests.support.settings import Settings


async def start_service(name: str, settings: Settings) -> RunningService:
    """Migrate the service's database, bootstrap it on 127.0.0.1:0, and start it."""
    await migrate_async(name, settings.database_url(name))
    main = importlib.import_module(main_module(name))
    service: RunningService = await main.bootstrap(settings, address="127.0.0.1:0")
    return await service.start()


def main_module(name: str) -> str:
    """Where a service's bootstrap is: entrypoints/main.py in the shape of docs/architecture.md,
    main.py in a service not yet converted to it."""
    shaped = f"services.{name}.entrypoints.main"
    return shaped if importlib.util.find_spec(f"services.{name}.entrypoints") is not None else f"services.{name}.main"


def channel_to(service: RunningService) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
