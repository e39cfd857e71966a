"""An export of 1,000,000 API log rows through the console, as CSV and as JSON Lines: streamed as
it is read, and the console's memory stays bounded whatever the size of the set. The chart of
the same rows counts every one of them (the logs service's histogram, counted in SQL).

The rows are generated straight into a logs SQLite store (one INSERT … SELECT over a recursive
CTE, its secondary indexes rebuilt after), not published through JetStream: that takes seconds
instead of minutes; once for the module, each test's logs service reading a copy. The console
runs as its own process (`python -m services.console`), so its resident memory is its own; the
real logs service streams the rows (about half a minute on two busy cores: its own pace, not the
console's)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path

import httpx2
import pytest

from services.kit.db import migrate
from services.kit.service import RunningService
from tests.support.settings import Settings
from tests.support.console import ConsoleUser, new_org
from tests.support.console_services import database_file, generate_requests, start_logs
from tests.support.ports import free_port
from tests.support.waiting import eventually

ROWS = 1_000_000
# What the console may grow by while it passes on the whole export (over 100 MB of CSV).
MEMORY_BOUND_BYTES = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def org() -> str:
    return new_org()


@pytest.fixture(scope="module")
def million_rows(tmp_path_factory: pytest.TempPathFactory, org: str) -> Path:
    """A migrated logs store holding ROWS requests of `org`, generated once for this module's
    tests (each reads it only, from a copy of its own)."""
    database = tmp_path_factory.mktemp("million") / "logs.db"
    migrate("logs", f"sqlite+aiosqlite:///{database}")
    generate_requests(database, org, ROWS)
    return database


@pytest.fixture
async def logs_service(make_settings: Callable[..., Settings], million_rows: Path) -> AsyncIterator[RunningService]:
    """The logs service over its own copy of the store of ROWS requests."""
    target = database_file(make_settings(), "logs")
    target.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(copy_database, million_rows, target)
    service = await start_logs(make_settings)
    yield service
    await service.stop(0)


def copy_database(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("format_", ["csv", "jsonl"])
async def test_an_export_of_a_million_rows_streams_in_bounded_memory(console_settings, logs_service, org: str,
                                                                     tmp_path: Path, format_: str) -> None:
    settings = console_settings()
    port = free_port()
    env = {**os.environ, "TRELLIS_MODE": "embedded", "TRELLIS_DATA_DIR": str(tmp_path / "console-data"),
           "TRELLIS_NATS_URL": settings.nats_url, "TRELLIS_REGISTRY_ADDR": settings.registry_addr,
           "TRELLIS_LOGS_ADDR": settings.logs_addr, "TRELLIS_WEBHOOKS_ADDR": settings.webhooks_addr,
           "TRELLIS_ACTOR_PRIVATE_KEY_FILE": settings.actor_private_key_file,
           "TRELLIS_ACTOR_ISSUER": settings.actor_issuer, "TRELLIS_ACTOR_AUDIENCE": settings.actor_audience,
           "TRELLIS_CONSOLE_ADDR": f"127.0.0.1:{port}", "TRELLIS_LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true"}
    process = subprocess.Popen([sys.executable, "-m", "services.console"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    quinn = ConsoleUser(f"http://127.0.0.1:{port}")
    try:
        async def up() -> bool:
            try:
                return (await quinn.get("/healthz")).status_code == 200
            except httpx2.HTTPError:
                return False

        await eventually(up, timeout=30, what="the console process")
        await quinn.sign_in("quinn", org, role="qa")
        # Warm up the export's code path (a few rows), then take the console's size.
        small = await quinn.get(f"/logs/export?format={format_}&endpoint=/v1/inventory/lots/999&since=2000-01-01")
        assert small.status_code == 200
        baseline = peak = resident_bytes(process.pid)

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, resident_bytes(process.pid))
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        first_byte = 0.0
        size = lines = 0
        last = b""
        async with quinn.client.stream("GET", f"/logs/export?format={format_}", timeout=180) as answer:
            assert answer.status_code == 200
            assert answer.headers["x-total-rows"] == str(ROWS)
            assert "content-length" not in answer.headers  # streamed, not assembled first
            async for chunk in answer.aiter_bytes():
                if not first_byte:
                    first_byte = time.monotonic() - started
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = (last + chunk)[-4096:]
        took = time.monotonic() - started
        watcher.cancel()
        peak = max(peak, resident_bytes(process.pid))

        if format_ == "csv":
            assert lines == ROWS + 1, lines  # a header line, then one line per request
        else:
            assert lines == ROWS, lines  # one JSON object per request
            assert json.loads(last.rstrip(b"\n").rsplit(b"\n", 1)[-1])["request_id"] == "req-0000000"  # oldest last
        assert size > 2.5 * MEMORY_BOUND_BYTES, size
        assert first_byte < took / 5, (first_byte, took)  # the download began long before the set was read
        grew = peak - baseline
        assert grew < MEMORY_BOUND_BYTES, f"the console grew by {grew / 2**20:.1f} MiB passing on {size / 2**20:.0f} MiB"
        print(f"\n{format_}: {ROWS:,} rows, {size / 2**20:.0f} MiB in {took:.1f} s (first byte after {first_byte:.2f} s); "
              f"console {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
    finally:
        await quinn.close()
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_the_chart_counts_every_one_of_a_million_rows(browser, logs_service, org: str) -> None:
    """Far more rows than a page could read: the chart's numbers are the whole range's, counted
    by the logs service, and the page says which range they cover."""
    quinn = browser()
    await quinn.sign_in("quinn", org, role="qa")
    started = time.monotonic()
    page = await quinn.page("/logs/chart")
    took = time.monotonic() - started
    assert f"All {ROWS:,} matching requests from" in page and "the whole range of the log" in page
    table = re.search(r'data-testid="chart-table">(.*?)</table>', page, re.S)
    assert table
    rows = [re.findall(r'<td class="num">([^<]*)</td>', row)
            for row in re.findall(r'<tr><td class="nowrap">[^<]+</td>(.*?)</tr>', table.group(1))]
    # Columns: the busiest five integrations, the other two together, all, errors, error rate, 429s.
    assert sum(int(r[-4]) for r in rows) == ROWS
    assert sum(int(r[0]) + int(r[1]) + int(r[2]) + int(r[3]) + int(r[4]) + int(r[5]) for r in rows) == ROWS
    assert sum(int(r[-1]) for r in rows) == ROWS // 50
    assert sum(int(r[-3]) for r in rows) == sum(1 for i in range(ROWS) if i % 50 == 0 or i % 97 == 0)
    print(f"\nchart of {ROWS:,} rows in {took:.2f} s")
