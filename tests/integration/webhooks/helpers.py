"""Small waits for the webhooks tests: on a condition with a deadline, or that one holds."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


async def holds(check: Callable[[], Awaitable[bool]], *, seconds: float, interval: float = 0.05, what: str = "condition") -> None:
    """Assert `check()` stays true for `seconds` (for what must NOT happen: no delivery, say)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await check(), f"{what} stopped holding"
        await asyncio.sleep(interval)


def code_blocks(language: str, path: Path = ROOT / "docs" / "receivers.md") -> list[str]:
    """The fenced code blocks of one language in a markdown file, in order."""
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.DOTALL)
