"""Webhooks as a real process (`python -m services.webhooks`), the way `trellis up` and
Kubernetes run it: for the tests that kill it or run two replicas."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.settings import Settings
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[3]

_PASSED = (
    "mode", "data_dir", "nats_url", "actor_issuer", "actor_audience", "actor_public_key_file", "kek", "outbox_poll_seconds",
    "webhooks_database_url", "webhooks_ca_bundle", "webhooks_allowed_private_networks", "webhooks_retry_schedule_seconds",
    "webhooks_timeout_seconds", "webhooks_poll_seconds", "webhooks_consumer_name", "webhooks_lease_seconds",
    "webhooks_concurrency_per_subscription", "webhooks_concurrency_total", "webhooks_consumer_ack_wait_seconds",
)


def environment(settings: Settings, port: int) -> dict[str, str]:
    """TRELLIS_* variables that reproduce `settings` in a child process listening on `port`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    for name in _PASSED:
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif hasattr(value, "value"):
            value = value.value
        env[f"TRELLIS_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    env["TRELLIS_WEBHOOKS_DATABASE_URL"] = settings.database_url("webhooks")
    env["TRELLIS_WEBHOOKS_ADDR"] = f"127.0.0.1:{port}"
    env["TRELLIS_LOG_LEVEL"] = "WARNING"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class WebhooksProcess:
    settings: Settings
    port: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> "WebhooksProcess":
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "services.webhooks"], cwd=ROOT,
                                        env=environment(self.settings, self.port), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        await eventually(self._serving, timeout=timeout, interval=0.1, what=f"webhooks on {self.address} (log {self.log_file})")
        return self

    async def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"webhooks exited with {self.process.returncode}:\n{self.log_file.read_text()[-3000:]}")
        async with grpc.aio.insecure_channel(self.address) as channel:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.aio.AioRpcError:
                return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
