"""tracemalloc in one service of the suite, for finding what grows (`--tracemalloc SERVICE` of
bench.memory and bench.soak): the environment that turns it on (sitecustomize.py beside this
file, on PYTHONPATH), a snapshot taken on demand, and the difference of two snapshots."""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).parent


def enable(service: str, directory: Path) -> None:
    """Make the next suite started from this process trace `service` (os.environ, inherited)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    os.environ["BENCH_TRACEMALLOC"] = service
    os.environ["BENCH_TRACEMALLOC_DIR"] = str(directory)


def _signal(pid: int, done: Path, timeout: float) -> None:
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} did not answer SIGUSR2 with {done.name}")
        time.sleep(0.2)


def start(pid: int, directory: Path, timeout: float = 60.0) -> None:
    """Start tracing in the process (its first SIGUSR2)."""
    _signal(pid, directory / "0.done", timeout)


def snapshot(pid: int, directory: Path, n: int, timeout: float = 120.0) -> tracemalloc.Snapshot:
    """Ask the traced process for its `n`-th snapshot (a later SIGUSR2) and load it."""
    _signal(pid, directory / f"{n}.done", timeout)
    return tracemalloc.Snapshot.load(str(directory / f"{n}.snapshot"))


def difference(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 12) -> str:
    """What grew most between two snapshots: by line, then the tracebacks of the largest three."""
    noise = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
             tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>")]
    before, after = before.filter_traces(noise), after.filter_traces(noise)
    total = sum(s.size for s in after.statistics("filename")) - sum(s.size for s in before.statistics("filename"))
    lines = [f"traced Python memory grew by {total / 1024:,.0f} KiB; largest growth by line:"]
    for stat in after.compare_to(before, "lineno")[:top]:
        lines.append(f"  {stat.size_diff / 1024:+10,.0f} KiB {stat.count_diff:+8,} blocks  {stat.traceback[0]}")
    for stat in after.compare_to(before, "traceback")[:3]:
        lines.append(f"  {stat.size_diff / 1024:+,.0f} KiB, {stat.count_diff:+,} blocks, allocated at:")
        lines += [f"      {frame}" for frame in stat.traceback.format()[-2 * 8:]]
    return "\n".join(lines)
