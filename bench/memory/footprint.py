"""What a process holds in memory, read from /proc, and a sampler that reads it for every process
of the suite at a fixed interval.

RSS is what the target is about (what `top` and a container's memory limit count). PSS shares
each shared page among the processes mapping it, USS counts only the pages of this process
alone (Private_Clean + Private_Dirty): both from /proc/<pid>/smaps_rollup, one read per process
(a few hundred microseconds), so they are sampled with RSS. VmHWM is the kernel's own peak RSS
of the process since it started, which no sampling interval can miss.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class Footprint:
    """One reading of one process, in bytes."""

    rss: int
    pss: int
    uss: int
    hwm: int  # peak RSS since the process started


def read(pid: int) -> Footprint | None:
    """The footprint of `pid` now, or None if it has exited."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    kb = {}
    for line in rollup.splitlines()[1:]:
        name, _, rest = line.partition(":")
        kb[name] = int(rest.split()[0])
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return Footprint(kb.get("Rss", 0) * 1024, kb.get("Pss", 0) * 1024,
                     (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024, hwm * 1024)


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic()
    phase: str
    footprints: dict[str, Footprint]


@dataclass
class Sampler:
    """Reads every process of `pids` (name -> pid) each `interval` seconds in a thread, each
    sample labelled with the phase the benchmark says it is in (`phase`)."""

    pids: dict[str, int]
    interval: float = 1.0
    phase: str = "start"
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def take(self) -> Sample:
        """One sample now (also kept)."""
        found = {name: fp for name, pid in self.pids.items() if (fp := read(pid)) is not None}
        sample = Sample(time.monotonic(), self.phase, found)
        with self._lock:
            self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.interval)

    def of(self, phase: str) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.phase == phase]


def median_rss(samples: list[Sample], name: str) -> float:
    values = [s.footprints[name].rss for s in samples if name in s.footprints]
    return statistics.median(values) / MB if values else float("nan")


def median_uss(samples: list[Sample], name: str) -> float:
    values = [s.footprints[name].uss for s in samples if name in s.footprints]
    return statistics.median(values) / MB if values else float("nan")


def peak_rss(samples: list[Sample], name: str) -> float:
    values = [s.footprints[name].rss for s in samples if name in s.footprints]
    return max(values) / MB if values else float("nan")


def last_hwm(samples: list[Sample], name: str) -> float:
    values = [s.footprints[name].hwm for s in samples if name in s.footprints]
    return values[-1] / MB if values else float("nan")
