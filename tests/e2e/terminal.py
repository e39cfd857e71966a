"""Drives the installed `trellis` console script in subprocesses, the way a person would:
`trellis up` in one "terminal", CLI commands in another, on free ports in a temporary directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from services.cli.launcher import READY_LINE
from tests.support.ports import free_ports

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


def suite_environment() -> dict[str, str]:
    """The caller's environment without its TRELLIS_* settings or HTTP proxies, `trellis` on PATH,
    and the gRPC services and NATS on free ports. The edge keeps 127.0.0.1:8080 (and the example
    upstream 127.0.0.1:8090), the addresses the README's commands and examples/routes.toml name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_") and not k.lower().endswith("_proxy")}
    identity, registry, webhooks, logs, nats = free_ports(5)
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "TRELLIS_IDENTITY_ADDR": f"127.0.0.1:{identity}",
        "TRELLIS_REGISTRY_ADDR": f"127.0.0.1:{registry}",
        "TRELLIS_WEBHOOKS_ADDR": f"127.0.0.1:{webhooks}",
        "TRELLIS_LOGS_ADDR": f"127.0.0.1:{logs}",
        "TRELLIS_NATS_URL": f"nats://127.0.0.1:{nats}",
    })
    return env


@dataclass
class RunningTrellis:
    """One `trellis up` process; its output goes to files so it can never block on a pipe."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    # Every process of the summary table, by its SERVICE label.
    processes: dict[str, int] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return list(self.processes.values())

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        # Seven processes started one after another, each waited for (about 17 s on a loaded
        # 2-core machine): the bound is for a machine shared with other suites, not the usual case.
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"`trellis up` exited with {self.process.returncode}:\n{self.output()}")
            return READY_LINE in self.stdout.read_text(errors="replace")

        wait_until(ready, timeout=timeout, what="`trellis up` to print its ready line")
        # The summary table: "<service>  <address>  <pid>  <log>  <database>" (a label may hold spaces).
        self.processes = {m.group(1): int(m.group(2)) for m in
                          re.finditer(r"^(\S.*?)\s{2,}\S+:\d+\s+(\d+)\s", self.stdout.read_text(), re.M)}
        assert {"nats", "identity", "registry"} <= self.processes.keys(), f"unexpected summary:\n{self.output()}"

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
