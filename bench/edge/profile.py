"""A py-spy profile of the edge under load, summed by cost centre and by function.

py-spy samples the edge's Python stacks from outside (`--nonblocking`: the edge is not paused),
pinned to the load core. C code (httptools, uvloop, hashlib, protobuf) counts for the Python
function that called it. A coroutine resumed by the event loop shows only its own chain of
awaits, so inclusive counts of outer frames are lower bounds; the cost centres classify each
sample by the first recognisable frame from the top of its stack, which needs no outer frames.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from bench.edge.load import LOAD_CPU, _script, paced, pinned, wrk


_CATEGORIES = (  # (path fragment, cost centre); a sample counts for the first match from the top of its stack
    ("/opentelemetry/", "tracing: OpenTelemetry span per request"),
    ("/prometheus_client/", "metrics: Prometheus histogram and counters"),
    ("services/edge/http/upstream_client.py", "upstream client and write consolidation (ours)"),
    ("services/edge/http/transport.py", "upstream client and write consolidation (ours)"),
    ("/uvicorn/", "HTTP server: uvicorn (httptools) request and response"),
    ("services/edge/adapters/ratelimit.py", "rate limiter (incl. its NATS leases)"),
    ("services/edge/domain/limits.py", "rate limiter (incl. its NATS leases)"),
    ("services/edge/adapters/apilog.py", "API log record publishing (incl. NATS)"),
    ("services/edge/adapters/credentials.py", "credentials: key hash, token cache, integration cache"),
    ("services/edge/adapters/cache.py", "credentials: key hash, token cache, integration cache"),
    ("services/edge/adapters/integrations.py", "credentials: key hash, token cache, integration cache"),
    ("services/edge/domain/model.py", "credentials: key hash, token cache, integration cache"),
    ("services/edge/", "edge request handling (app, pipeline, proxy, asgi)"),
)


def _short(frame: str) -> str:
    """`name (/full/path/pkg/mod.py)` -> `name (pkg/mod.py)`."""
    name, _, path = frame.partition(" (")
    path = path.rstrip(")")
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


_ROOT_FRAMES = ("services/edge/__main__.py", "services/edge/entrypoints/main.py")


def _category(frames: list[str]) -> str:
    nats = False
    for frame in reversed(frames):
        if any(root in frame for root in _ROOT_FRAMES):
            continue
        for fragment, name in _CATEGORIES:
            if fragment in frame:
                return name
        nats = nats or "/nats/" in frame
    return "NATS client: reading acks and messages" if nats else "event loop and other (asyncio, stdlib)"


def spy(pid: int, *, seconds: float, out: Path, rate: int = 200) -> subprocess.CompletedProcess[str]:
    """py-spy's raw stacks of `pid` for `seconds` at `rate` samples/s, from the load core."""
    return subprocess.run([_script("py-spy"), "record", "--pid", str(pid), "--duration", str(round(seconds)),
                           "--rate", str(rate), "--format", "raw", "--nolineno", "--full-filenames", "--nonblocking",
                           "--output", str(out)],
                          preexec_fn=pinned(LOAD_CPU), capture_output=True, text=True, timeout=seconds + 60)


def tally(out: Path) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """py-spy's raw stacks summed: all samples, by cost centre, by function on top (self), and by
    function anywhere on the stack (inclusive)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    centres: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        centres[_category(frames)] += n
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    return total, centres, own, inclusive


def profile(url: str, pid: int, script: Path, *, seconds: float, connections: int, out: Path,
            rate: float = 0.0, rotate: Path | None = None) -> list[str]:
    """py-spy on the edge while wrk loads it (or, with `rate`, bench.edge.paced at that fixed rate
    rotating over `rotate`): samples by cost centre, then the functions with the most samples on
    top of the stack (self) and anywhere on it (inclusive, a lower bound: a coroutine resumed by
    the event loop shows only its own chain of awaits)."""
    if not Path(_script("py-spy")).exists():
        return [f"py-spy not installed ({_script('py-spy')}); .venv/bin/pip install py-spy"]
    if rate:
        load = threading.Thread(target=lambda: paced(url, rate=rate, seconds=seconds + 3, rotate=rotate))
    else:
        load = threading.Thread(target=lambda: wrk(url, seconds=seconds + 3, connections=connections, script=script))
    load.start()
    time.sleep(1.5)
    rate = 200
    spied = spy(pid, seconds=seconds, out=out, rate=rate)
    load.join()
    if spied.returncode != 0:
        return [f"py-spy failed ({spied.returncode}): {spied.stderr.strip()[-500:]}"]
    total, centres, own, inclusive = tally(out)
    if not total:
        return ["py-spy recorded no samples"]
    busy = total / (rate * round(seconds))
    lines = [f"{total} samples at {rate}/s over {seconds:g} s ({busy:.0%} of the time in Python "
             f"frames; the rest in the kernel or idle)", "  by cost centre (first match from the top of each stack):"]
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in centres.most_common()]
    lines += ["  self (top of the stack; C code counts for its Python caller):"]
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(25)]
    lines += ["  inclusive, edge functions:"]
    edge_functions = [(name, c) for name, c in inclusive.most_common() if "services/edge/" in name]
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in edge_functions[:20]]
    return lines
