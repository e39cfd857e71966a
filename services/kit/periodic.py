"""A step a service runs every so often beside its server (retention passes): started with the
service (ServiceBuilder.start), stopped with it; a step that fails is logged and runs again at
the next round, so one bad pass never stops the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `step` at once and then every `interval` seconds until stopped."""

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], *, interval: float) -> None:
        self.name = name
        self._step, self._interval = step, interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again next round
                log.warning("%s failed; it runs again in %g s", self.name, self._interval, exc_info=True)
            await asyncio.sleep(self._interval)
