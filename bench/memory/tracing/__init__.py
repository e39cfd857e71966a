"""Looking inside one service of the suite, for finding what grows (bench.soak `--inside
SERVICE`, `--tracemalloc SERVICE`): the environment that turns it on (sitecustomize.py beside
this file, on PYTHONPATH), its figures and snapshots taken on demand, and the difference of two
snapshots."""

from __future__ import annotations

import json
import os
import signal
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def enable(service: str, directory: Path, *, trace: bool) -> None:
    """Make the next suite started from this process answer SIGUSR2 in `service`, tracing its
    allocations too when `trace` (os.environ, inherited)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    os.environ["BENCH_TRACEMALLOC"] = f"{service}:trace" if trace else service
    os.environ["BENCH_TRACEMALLOC_DIR"] = str(directory)


@dataclass
class Inside:
    """The SIGUSR2 protocol of sitecustomize.py with one process: the n-th signal answers with
    `<n>.json` (and, when tracing, `<n>.snapshot` from n = 1 on)."""

    pid: int
    directory: Path
    taken: int = 0

    def stats(self, timeout: float = 120.0) -> dict[str, Any]:
        """Its figures now (the first call also starts tracing, when asked for)."""
        n, self.taken = self.taken, self.taken + 1
        done = self.directory / f"{n}.json"
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"pid {self.pid} did not answer SIGUSR2 with {done.name}")
            time.sleep(0.2)
        found: dict[str, Any] = json.loads(done.read_text())
        return found

    def snapshot(self) -> tracemalloc.Snapshot:
        """A tracemalloc snapshot now (tracing must have started with an earlier call)."""
        self.stats()
        return tracemalloc.Snapshot.load(str(self.directory / f"{self.taken - 1}.snapshot"))


def describe(stats: dict[str, Any]) -> str:
    mb = 1024 * 1024
    parts = [f"threads {stats.get('native_threads', '?')}"]
    if "sqlite_used" in stats:
        parts.append(f"sqlite {stats['sqlite_used'] / mb:.1f}"
                     + (f" (page caches {stats['sqlite_pagecache'] / mb:.1f})" if "sqlite_pagecache" in stats else ""))
    if "malloc_uordblks" in stats:
        parts.append(f"malloc used {stats['malloc_uordblks'] / mb:.1f} free {stats['malloc_fordblks'] / mb:.1f} "
                     f"mmap {stats['malloc_hblkhd'] / mb:.1f}")
    if "traced" in stats:
        parts.append(f"traced {stats['traced'] / mb:.1f}")
    return ", ".join(parts)


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
