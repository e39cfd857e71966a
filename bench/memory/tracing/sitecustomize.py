"""Loaded by every Python process started with this directory on PYTHONPATH (bench.memory
`--tracemalloc SERVICE` puts it there): in the process running `-m services.<SERVICE>`, and only
there, tracemalloc traces from the interpreter's start (`TRACE_FRAMES` frames a trace), and each
SIGUSR2 writes a snapshot to `$TRELLIS_BENCH_TRACEMALLOC_DIR/<n>.snapshot`. A measuring tool:
tracing slows the process and costs memory of its own, so its figures are not the service's."""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path

TRACE_FRAMES = 12


def _install() -> None:
    service, directory = os.environ.get("TRELLIS_BENCH_TRACEMALLOC", ""), os.environ.get("TRELLIS_BENCH_TRACEMALLOC_DIR")
    if not service or not directory:
        return
    argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    if f"services.{service}".encode() not in argv:
        return
    tracemalloc.start(TRACE_FRAMES)
    taken = [0]

    def dump(signum: int, frame: object) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(Path(directory) / f"{taken[0]}.snapshot"))
        (Path(directory) / f"{taken[0]}.done").write_text(str(tracemalloc.get_traced_memory()))

    signal.signal(signal.SIGUSR2, dump)


_install()
