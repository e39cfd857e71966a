"""The console as a process serves like the others: answers on a keep-alive connection leave
at once (no Nagle stall), health and readiness, and `python -m services.console`."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.support.ports import free_port


def _keep_alive_times(port: int, requests: int = 10) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            answer.read()
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
    return times


async def test_answers_on_a_kept_alive_connection_do_not_wait_for_an_ack(start_console) -> None:
    console = await start_console()
    times = await asyncio.to_thread(_keep_alive_times, console.port)
    # With Nagle's algorithm on, every answer after the first waits for the client's delayed ACK
    # (40 ms or more on Linux) before its body leaves.
    assert min(times[1:]) < 0.02, [round(t * 1000, 1) for t in times]


async def test_python_m_services_console_serves_and_stops_on_sigterm(console_settings, webhooks_service, logs_service,
                                                                    tmp_path: Path) -> None:
    settings = console_settings()
    port = free_port()
    env = {**os.environ, "TRELLIS_MODE": "embedded", "TRELLIS_DATA_DIR": str(tmp_path / "data"),
           "TRELLIS_NATS_URL": settings.nats_url, "TRELLIS_REGISTRY_ADDR": settings.registry_addr,
           "TRELLIS_WEBHOOKS_ADDR": settings.webhooks_addr, "TRELLIS_LOGS_ADDR": settings.logs_addr,
           "TRELLIS_ACTOR_PRIVATE_KEY_FILE": settings.actor_private_key_file, "TRELLIS_ACTOR_ISSUER": settings.actor_issuer,
           "TRELLIS_CONSOLE_ADDR": f"127.0.0.1:{port}", "TRELLIS_LOG_FORMAT": "json", "TRELLIS_LOG_LEVEL": "INFO"}
    process = subprocess.Popen([sys.executable, "-m", "services.console"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        async with httpx2.AsyncClient(trust_env=False, timeout=2) as client:
            while True:
                try:
                    answer = await client.get(f"http://127.0.0.1:{port}/readyz")
                    if answer.status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass
                assert time.monotonic() < deadline and process.poll() is None, "the console did not become ready"
                await asyncio.sleep(0.1)
            assert answer.json()["checks"] == {"registry": True, "webhooks": True, "logs": True, "nats": True}
            assert (await client.get(f"http://127.0.0.1:{port}/signin")).status_code == 200
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=20)
        assert process.returncode == 0, output.decode()[-2000:]
        lines = [line for line in output.decode().splitlines() if line.startswith("{")]
        assert any('"service": "console"' in line and "GET /signin 200" in line for line in lines), output.decode()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
