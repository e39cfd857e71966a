"""Periodic: the step runs at once and then every interval; a failing step is logged and the
loop goes on; stop ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.kit.periodic import Periodic
from tests.support.waiting import eventually


async def test_a_failing_step_is_logged_and_the_next_round_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def step() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionResetError("database went away")

    async def three_rounds() -> bool:
        return len(runs) >= 3

    task = Periodic("test-retention", step, interval=0.01)
    with caplog.at_level(logging.WARNING):
        task.start()
        try:
            await eventually(three_rounds, timeout=10, what="three rounds")
        finally:
            await task.stop()
    assert "test-retention failed" in caplog.text and "database went away" in caplog.text
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "test-retention"]  # the loop ended with stop
