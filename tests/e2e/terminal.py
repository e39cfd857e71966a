"""Drives the installed `trellis` console script in subprocesses, the way a person would:
`trellis up` in one "terminal", CLI commands in another, on free ports in a temporary directory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from services.cli.launcher import READY_LINE

VENV_BIN = Path(sys.executable).parent
TRELLIS = VENV_BIN / "trellis"
COMMAND_TIMEOUT = 30.0
T = TypeVar("T")


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Call `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def suite_environment() -> dict[str, str]:
    """The caller's environment without its TRELLIS_* settings, every port free, `trellis` on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    identity, registry, webhooks, logs, edge, nats = free_ports(6)
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "TRELLIS_IDENTITY_ADDR": f"127.0.0.1:{identity}",
        "TRELLIS_REGISTRY_ADDR": f"127.0.0.1:{registry}",
        "TRELLIS_WEBHOOKS_ADDR": f"127.0.0.1:{webhooks}",
        "TRELLIS_LOGS_ADDR": f"127.0.0.1:{logs}",
        "TRELLIS_EDGE_ADDR": f"127.0.0.1:{edge}",
        "TRELLIS_NATS_URL": f"nats://127.0.0.1:{nats}",
    })
    return env


@dataclass
class RunningTrellis:
    """One `trellis up` process; its output goes to files so it can never block on a pipe."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    pids: list[int] = field(default_factory=list)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def wait_ready(self, timeout: float = 45.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"`trellis up` exited with {self.process.returncode}:\n{self.output()}")
            return READY_LINE in self.stdout.read_text(errors="replace")

        wait_until(ready, timeout=timeout, what="`trellis up` to print its ready line")
        # The summary table: "<service>  <address>  <pid>  <log>  <database>".
        self.pids = [int(m.group(1)) for m in re.finditer(r"^\S+\s+\S+:\d+\s+(\d+)\s", self.stdout.read_text(), re.M)]
        assert len(self.pids) >= 3, f"expected nats, identity and registry in the summary:\n{self.output()}"

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C: SIGINT to the launcher only, as a terminal would with its own process group."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def children_alive(self) -> list[int]:
        alive = []
        for pid in self.pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive.append(pid)
        return alive

    def kill_everything(self) -> None:
        """Cleanup after a failed test: nothing may outlive it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.children_alive():
            os.kill(pid, signal.SIGKILL)


class Terminal:
    """Runs commands from a working directory with the suite's environment."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self._logs = 0

    def up(self, *args: str) -> RunningTrellis:
        self._logs += 1
        stdout, stderr = self.workdir / f"up-{self._logs}.out", self.workdir / f"up-{self._logs}.err"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = subprocess.Popen([str(TRELLIS), "up", *args], cwd=self.workdir, env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        return RunningTrellis(process, stdout, stderr)

    def sh(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        """One shell command, exactly as written in the README."""
        return subprocess.run(["bash", "-c", command], cwd=self.workdir, env={**self.env, **env},
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result
