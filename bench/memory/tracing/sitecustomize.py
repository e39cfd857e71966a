"""Loaded by every Python process started with this directory on PYTHONPATH (bench.memory and
bench.soak `--tracemalloc SERVICE` put it there): in the process running `-m services.<SERVICE>`,
and only there, a SIGUSR2 handler. The first SIGUSR2 starts tracemalloc (`TRACE_FRAMES` frames a
trace) and writes `$BENCH_TRACEMALLOC_DIR/0.done`; each later one writes snapshot n to
`<n>.snapshot`, then `<n>.done`. Tracing from the start would slow start-up past the launcher's
patience on a busy machine; started later it sees every allocation still alive that was made
after it started, which is what growth is. A measuring tool: tracing slows the process and costs
memory of its own, so its figures are not the service's."""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path

TRACE_FRAMES = 12


def _install() -> None:
    service, directory = os.environ.get("BENCH_TRACEMALLOC", ""), os.environ.get("BENCH_TRACEMALLOC_DIR")
    if not service or not directory:
        return
    argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    if f"services.{service}".encode() not in argv:
        return
    taken = [0]

    def on_signal(signum: int, frame: object) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACE_FRAMES)
            (Path(directory) / "0.done").write_text("tracing")
            return
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(Path(directory) / f"{taken[0]}.snapshot"))
        (Path(directory) / f"{taken[0]}.done").write_text(str(tracemalloc.get_traced_memory()))

    signal.signal(signal.SIGUSR2, on_signal)


_install()
