"""Trellis services as real OS processes for end-to-end tests (`python -m services.<name>` with
TRELLIS_* settings in the environment, as `trellis up` and Kubernetes run them): start, probe
readiness, SIGKILL, stop, and the tail of each one's log for a failure report."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` of a log file, headed by its path."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path}: (no log)"
    return f"--- {path} (last {min(lines, len(text))} lines)\n" + "\n".join(text[-lines:])


@dataclass
class ChildProcess:
    """One service process. `probe` is how readiness shows: "grpc" (grpc.health.v1 SERVING),
    "http" (GET /readyz answers 200) or "tcp" (the port accepts)."""

    label: str
    argv: list[str]
    env: dict[str, str]
    address: str              # host:port it listens on
    log_file: Path
    probe: str = "grpc"
    process: subprocess.Popen[bytes] | None = None
    killed_at: float | None = field(default=None)  # time.monotonic() of a SIGKILL

    @classmethod
    def service(cls, name: str, label: str, env: dict[str, str], address: str, log_dir: Path, probe: str = "grpc") -> ChildProcess:
        return cls(label, [sys.executable, "-m", f"services.{name}"], env, address, log_dir / f"{label}.log", probe)

    def start(self) -> ChildProcess:
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self.process.returncode if self.process is not None else None
                raise RuntimeError(f"{self.label} exited with {code} while starting\n{tail(self.log_file)}")
            if await _probe(self.probe, self.address):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.label} was not ready on {self.address} within {timeout}s\n{tail(self.log_file)}")

    def kill(self) -> None:
        """SIGKILL: nothing of the service's shutdown runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.killed_at = time.monotonic()

    def terminate(self) -> None:
        """SIGTERM, without waiting (see `stop_all`)."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        stop_all([self], timeout)


def stop_all(children: list[ChildProcess], timeout: float = 10.0) -> None:
    """SIGTERM to every child at once, then SIGKILL to any still running after `timeout` seconds."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


async def _probe(kind: str, address: str) -> bool:
    if kind == "grpc":
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.aio.AioRpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    if kind == "http":
        try:
            async with aiohttp.ClientSession(trust_env=False) as session, \
                    session.get(f"http://{address}/readyz", timeout=aiohttp.ClientTimeout(total=1.0)) as answer:
                return answer.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


def base_environment() -> dict[str, str]:
    """The caller's environment without its TRELLIS_*, OTEL_* settings or HTTP proxies."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TRELLIS_", "OTEL_")) and not k.lower().endswith("_proxy")}
