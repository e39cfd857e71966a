"""Loaded by every Python process started with this directory on PYTHONPATH (bench.memory and
bench.soak `--inside SERVICE` / `--tracemalloc SERVICE` put it there): in the process running
`-m services.<SERVICE>`, and only there, a SIGUSR2 handler. Each SIGUSR2 writes
`$BENCH_TRACEMALLOC_DIR/<n>.json`, n = 0, 1, …: what the process's memory is made of, from
inside (SQLite's own allocator count, glibc's malloc statistics, the Python objects by
tracemalloc when tracing, the threads). With `BENCH_TRACEMALLOC=<SERVICE>:trace` the first
SIGUSR2 also starts tracemalloc (`TRACE_FRAMES` frames a trace) and each later one writes
snapshot n to `<n>.snapshot` first. Tracing from the interpreter's start would slow start-up
past the launcher's patience on a busy machine; started later it sees every allocation still
alive that was made after it started, which is what growth is. A measuring tool: tracing slows
the process and costs memory of its own, so its figures are not the service's."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import threading
import tracemalloc
from pathlib import Path

TRACE_FRAMES = 12


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _stats() -> dict[str, object]:
    found: dict[str, object] = {"threads": threading.active_count(),
                                "native_threads": len(os.listdir("/proc/self/task"))}
    try:
        sqlite = ctypes.CDLL("libsqlite3.so.0")  # the library _sqlite3 already loaded: the same instance
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
        found["sqlite_used"] = sqlite.sqlite3_memory_used()
        found["sqlite_highwater"] = sqlite.sqlite3_memory_highwater(0)
        current, peak = ctypes.c_int64(), ctypes.c_int64()
        # SQLITE_STATUS_PAGECACHE_OVERFLOW (2): the page caches' bytes, from malloc here (no
        # SQLITE_CONFIG_PAGECACHE); the rest of sqlite_used is prepared statements, schemas, lookaside.
        if sqlite.sqlite3_status64(2, ctypes.byref(current), ctypes.byref(peak), 0) == 0:
            found["sqlite_pagecache"] = current.value
    except (OSError, AttributeError):
        pass
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
        # arena: bytes the heaps hold from the kernel (brk and thread arenas); hblkhd: large
        # blocks mmap'd on their own; uordblks: in use; fordblks: free but held.
        found.update({f"malloc_{k}": getattr(info, k) for k in ("arena", "hblkhd", "uordblks", "fordblks")})
    except (OSError, AttributeError):
        pass
    if tracemalloc.is_tracing():
        found["traced"] = tracemalloc.get_traced_memory()[0]
    return found


def _install() -> None:
    wanted, directory = os.environ.get("BENCH_TRACEMALLOC", ""), os.environ.get("BENCH_TRACEMALLOC_DIR")
    if not wanted or not directory:
        return
    service, _, mode = wanted.partition(":")
    argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    if f"services.{service}".encode() not in argv:
        return
    taken = [0]

    def on_signal(signum: int, frame: object) -> None:
        n = taken[0]
        taken[0] += 1
        if mode == "trace":
            if not tracemalloc.is_tracing():
                tracemalloc.start(TRACE_FRAMES)
            elif n:
                tracemalloc.take_snapshot().dump(str(Path(directory) / f"{n}.snapshot"))
        (Path(directory) / f"{n}.part").write_text(json.dumps(_stats()))
        os.replace(Path(directory) / f"{n}.part", Path(directory) / f"{n}.json")

    signal.signal(signal.SIGUSR2, on_signal)


_install()
