"""Processes for the edge benchmark: servers pinned to a core, what they cost (CPU time, time spent
waiting for their core), and the load generators.

Closed-loop maximum throughput comes from wrk (`--latency` for p50/p99; Debian package `wrk`:
`apt-get install -y wrk`). wrk has no fixed-rate mode (that is wrk2, which Debian does not
package) and hey's `-q` fires all its workers in the same instant (bursts of `-c` requests), so
latency at a fixed rate comes from bench/edge/paced.py, run on the load core.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_CPU, LOAD_CPU = 0, 1
APPS = "bench.edge.apps"


@dataclass(frozen=True)
class Result:
    """One load run: achieved rate, latency percentiles in ms, and how many answers were not 2xx."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers plus socket errors
    non2xx: int = 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def waited_seconds(pid: int) -> float:
    """Time the process's main thread (the event loop's) has spent runnable but waiting for a CPU
    (schedstat run_delay): on a pinned process, the time other tasks held its core."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def stolen_seconds(cpu: int) -> float:
    """Steal time of `cpu` since boot (/proc/stat, in clock ticks): while the virtual CPU was
    runnable, the hypervisor ran something else. Neither our scheduler nor `waited` sees it."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                return int(line.split()[8]) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Watch:
    """Around a run: the CPU time of the process under test, and the share of the run it spent
    waiting for its core while other processes held it (other helpers' tests are not pinned and
    land there too): the noise in that run."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.own = 0.0  # seconds of CPU the process used
        self.waited = 0.0  # share of the run's wall time the process waited for its core
        self.stolen_ms = 0.0  # time the hypervisor ran something else on the server core's vCPU

    def __enter__(self) -> "Watch":
        self._start = (time.monotonic(), 0.0, 0.0)
        self._steal = stolen_seconds(SERVER_CPU)
        if self.pid:
            self._start = (time.monotonic(), cpu_seconds(self.pid), waited_seconds(self.pid))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stolen_ms = (stolen_seconds(SERVER_CPU) - self._steal) * 1000
        if not self.pid:
            return
        wall, own, waited = self._start
        self.own = cpu_seconds(self.pid) - own
        self.waited = (waited_seconds(self.pid) - waited) / max(time.monotonic() - wall, 1e-9)


def two_cores() -> bool:
    """Whether the server core and the load core both exist. Not this process's affinity: the
    driver pins itself to the load core, and its children must still reach the server core."""
    return (os.cpu_count() or 1) > max(SERVER_CPU, LOAD_CPU)


def pinned(cpu: int):  # noqa: ANN201 - a preexec_fn
    def pin() -> None:
        if two_cores():
            os.sched_setaffinity(0, {cpu})
    return pin


def missing_tools() -> list[str]:
    return [tool for tool in ("wrk",) if shutil.which(tool) is None]


def _script(name: str) -> str:
    return str(Path(sysconfig.get_path("scripts")) / name)


def server_command(server: str, factory: str, port: int) -> list[str]:
    """uvicorn (uvloop + httptools) or granian (ASGI interface), one worker, no access log."""
    target = f"{APPS}:{factory}"
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                "--lifespan", "on", "--backlog", "4096"]
    if server == "granian":
        return [_script("granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port),
                "--http", "1", "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--no-ws",
                "--log-level", "warning", "--backlog", "4096", target]
    raise ValueError(f"unknown server {server!r}")


class Process:
    """A child process on one core, stopped with SIGTERM (then SIGKILL) when done."""

    def __init__(self, args: Sequence[str], *, cpu: int, env: dict[str, str] | None = None, inherit_env: bool = True,
                 log: Path | None = None) -> None:
        out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
        try:
            environment = {**(os.environ if inherit_env else {}), **(env or {})}
            self.proc = subprocess.Popen(list(args), cwd=REPO, env=environment, preexec_fn=pinned(cpu), stdout=out,
                                         stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT if log else None)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        if two_cores() and os.sched_getaffinity(self.proc.pid) != {cpu}:
            self.stop()
            raise RuntimeError(f"{args[:3]} is not pinned to CPU {cpu}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_http(url: str, proc: Process, *, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
    """Until `url` answers 200 (the app finished its startup)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.proc.args[:4]} exited with {proc.proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as resp:
                if resp.status == 200:
                    return
                last = resp.status
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} not answering 200: {last}")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, *, seconds: float, connections: int, headers: dict[str, str] | None = None,
        script: Path | None = None) -> Result:
    """Closed-loop maximum: one wrk thread on the load core (`script`: a wrk Lua script)."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run(args + [url], capture_output=True, text=True, preexec_fn=pinned(LOAD_CPU), check=True,
                         timeout=seconds + 30).stdout
    lat = {m[1]: float(m[2]) * _UNITS[m[3]] for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rps and total and "50" in lat and "99" in lat):
        raise RuntimeError(f"could not read wrk output:\n{out}")
    bad = int(non2xx[1]) if non2xx else 0
    errors = bad + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Result(float(rps[1]), lat["50"], lat["99"], int(total[1]), errors, bad)


def paced(url: str, *, rate: float, seconds: float, connections: int = 64,
          headers: dict[str, str] | None = None, rotate: Path | None = None) -> Result:
    """A fixed rate with latency from each request's due time (bench/edge/paced.py) on the load core
    (`rotate`: a JSON list of header sets, one per request in turn)."""
    args = [sys.executable, "-m", "bench.edge.paced", url, "--rate", f"{rate:.1f}", "--seconds", str(seconds),
            "--connections", str(connections)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if rotate is not None:
        args += ["--rotate", str(rotate)]
    out = subprocess.run(args, capture_output=True, text=True, preexec_fn=pinned(LOAD_CPU), check=True, cwd=REPO,
                         timeout=seconds + 60).stdout
    r = json.loads(out)
    return Result(r["rps"], r["p50_ms"], r["p99_ms"], r["requests"], r["errors"], r["errors"])
