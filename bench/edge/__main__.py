"""Edge benchmark: a GET through the edge to an upstream on loopback, beside the same GET sent
straight to that upstream and a bare ASGI hello-world, with one load generator in one run.

The server under test runs alone on CPU 0; the load generators, the upstream behind the edge and
the nats-server share CPU 1 (this machine has two). Each target gets a 1 s warm-up, then
`--seconds` of wrk (closed loop, `--connections` connections) for requests per second, p50 and
p99; then bench.edge.paced holds a fixed rate of half the edge's maximum against the edge and against the
upstream for the p99 the edge adds. Last, RateLimiter.check calls per second in-process.

    apt-get install -y wrk              # the load generator (Debian package)
    .venv/bin/pip install uvicorn uvloop httptools granian aiohttp httpx   # candidates
    .venv/bin/python -m bench.edge [--seconds 5] [--connections 64] [--server granian] [--client aiohttp]
    .venv/bin/python -m bench.edge --choose    # the server and client comparison
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.edge.load import (LOAD_CPU, SERVER_CPU, Process, Result, free_port, missing_tools, paced, server_command,
                             two_cores, wait_http, wrk)
from services.kit.natsproc import NatsServer

SERVER, CLIENT = "uvicorn", "aiohttp"  # chosen with `--choose`; see docs/benchmarks.md "## Edge"
MAX_CALLS = 2_000_000


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def upstream(cpu: int) -> Iterator[str]:
    port = free_port()
    with Process([sys.executable, "-m", "bench.edge.upstream", "--port", str(port)], cpu=cpu) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", proc)
        yield url


@contextlib.contextmanager
def asgi(server: str, factory: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    with Process(server_command(server, factory, port), cpu=SERVER_CPU, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/lots", proc)
        yield url + "/lots"


@contextlib.contextmanager
def nats_server(workdir: Path) -> Iterator[str]:
    server = NatsServer(workdir / "nats", log_file=workdir / "nats.log").start()
    try:
        if two_cores() and server.process is not None:
            os.sched_setaffinity(server.process.pid, {LOAD_CPU})
        yield server.url
    finally:
        server.stop()


# ══ HOOK: the real edge ═══════════════════════════════════════════════════════════════════════
# When services.edge.app exists, fill in `edge_target`: start the edge pinned to SERVER_CPU
# (server_command(server, <its factory>, port) or its own main) in front of `upstream_url`,
# with identity and registry running (see bench/identity for starting a service), an Active
# integration whose route table sends GET /lots to `upstream_url`, its rate limit high enough
# never to refuse, and yield Target("edge (full pipeline)", url, {"Authorization": "Bearer …",
# "X-API-Key": "…"}) for an authenticated, scope-checked, rate-limited, logged GET.
# Until then it yields None and the run measures `edge_sketch` (bench/edge/apps.py) instead,
# printed as a sketch: proxy + request id + NATS rate limit + API log record, no auth.
@contextlib.contextmanager
def edge_target(upstream_url: str, nats_url: str, workdir: Path, server: str) -> Iterator[Target | None]:
    if importlib.util.find_spec("services.edge.app") is not None:
        print("note: services.edge.app exists but bench/edge/__main__.py edge_target is not filled in yet;"
              " measuring the sketch", file=sys.stderr)
    yield None
# ══ end of HOOK ═══════════════════════════════════════════════════════════════════════════════


def measure(target: Target, *, seconds: float, connections: int) -> Result:
    wrk(target.url, seconds=1, connections=connections, headers=target.headers)  # warm-up
    return wrk(target.url, seconds=seconds, connections=connections, headers=target.headers)


def row(name: str, r: Result) -> str:
    return f"{name:<46}{r.rps:>10,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}"


HEADER = f"{'target':<46}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"


async def call_rate(call: Callable[[], Awaitable[object]], seconds: float) -> float:
    for _ in range(1000):
        await call()
    done, start = 0, time.perf_counter()
    deadline = start + seconds
    while done < MAX_CALLS and time.perf_counter() < deadline:
        for _ in range(100):
            await call()
        done += 100
    return done / (time.perf_counter() - start)


async def limiter_rates(nats_url: str, seconds: float) -> dict[str, float]:
    """RateLimiter.check calls per second on one hot integration, beside a no-op coroutine."""
    from services.edge.ratelimit import RateLimiter
    from services.kit.bus import connect

    nc = await connect(nats_url, name="bench-limiter")
    try:
        leased = RateLimiter(nc.jetstream())
        every_call = RateLimiter(nc.jetstream(), max_lease=1)
        await leased.start()

        async def noop(integration_id: str, limit: int, quota: int) -> None:
            return None

        rates = {
            "no-op coroutine": await call_rate(lambda: noop("int_hot", 10**9, 0), seconds),
            "check, leased (max_lease 100)": await call_rate(lambda: leased.check("int_hot", 10**9, 0), seconds),
            "check + daily quota, leased": await call_rate(lambda: leased.check("int_hotq", 10**9, 10**9), seconds),
            "check, a NATS round trip each (max_lease 1)": await call_rate(
                lambda: every_call.check("int_hot1", 10**9, 0), seconds),
        }
        await leased.close()
        await every_call.close()
        return rates
    finally:
        await nc.close()


def in_process_on(cpu: int, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    before = os.sched_getaffinity(0)
    if two_cores():
        os.sched_setaffinity(0, {cpu})
    try:
        return run()
    finally:
        os.sched_setaffinity(0, before)


def median(results: list[Result]) -> Result:
    return Result(statistics.median(r.rps for r in results), statistics.median(r.p50_ms for r in results),
                  statistics.median(r.p99_ms for r in results), sum(r.requests for r in results),
                  sum(r.errors for r in results))


def run_standard(args: argparse.Namespace) -> None:
    """The three targets (and the proxy alone) interleaved for `--rounds` rounds, medians printed."""
    seconds, conns = args.seconds, args.connections
    with tempfile.TemporaryDirectory(prefix="trellis-bench-edge-") as tmp, contextlib.ExitStack() as stack:
        nats_url = stack.enter_context(nats_server(Path(tmp)))
        behind = stack.enter_context(upstream(LOAD_CPU))
        direct = Target("upstream direct (raw asyncio + uvloop)", stack.enter_context(upstream(SERVER_CPU)) + "/lots")
        env = {"BENCH_UPSTREAM": behind, "BENCH_NATS_URL": nats_url, "BENCH_CLIENT": args.client}
        # Idle servers cost nothing measurable, so all of them stay up and the rounds interleave.
        hello = Target(f"ASGI hello world ({args.server})", stack.enter_context(asgi(args.server, "hello")))
        proxy = Target(f"proxy only ({args.server} + {args.client})",
                       stack.enter_context(asgi(args.server, f"proxy_{args.client}", env)))
        edge = stack.enter_context(edge_target(behind, nats_url, Path(tmp), args.server)) or Target(
            "edge SKETCH: proxy+limit+log, no auth",
            stack.enter_context(asgi(args.server, "edge_sketch", env)))
        targets = [direct, hello, proxy, edge]
        runs: dict[str, list[Result]] = {t.name: [] for t in targets}
        for _ in range(args.rounds):
            for target in targets:
                runs[target.name].append(measure(target, seconds=seconds, connections=conns))
        results = {name: median(r) for name, r in runs.items()}
        rate = results[edge.name].rps / 2
        half_edge = paced(edge.url, rate=rate, seconds=seconds, headers=edge.headers)
        half_direct = paced(direct.url, rate=rate, seconds=seconds)
        limiter = in_process_on(SERVER_CPU, lambda: asyncio.run(limiter_rates(nats_url, min(seconds, 3))))

    print(f"\nedge benchmark, {args.server} + {args.client}: server under test alone on CPU {SERVER_CPU}; wrk and bench.edge.paced, the upstream "
          f"behind the edge and nats-server on CPU {LOAD_CPU}; wrk -t1 -c{conns} {seconds:g}s after a 1 s warm-up, "
          f"median of {args.rounds} interleaved rounds (req/s of each round in brackets)")
    print(HEADER)
    for target in targets:
        print(row(target.name, results[target.name]) + "   [" + ", ".join(f"{r.rps:,.0f}" for r in runs[target.name]) + "]")
    e, d, h, p = (results[t.name].rps for t in (edge, direct, hello, proxy))
    print(f"ratios (req/s): edge/upstream direct {e / d:.3f}   edge/hello world {e / h:.3f}   edge/proxy only {e / p:.3f}")
    print(f"\nfixed rate {rate:,.0f} req/s (half the edge maximum), bench.edge.paced over 64 connections, {seconds:g}s:")
    print(HEADER)
    print(row(edge.name, half_edge))
    print(row(direct.name, half_direct))
    print(f"p99 added by the edge at half load: {half_edge.p99_ms - half_direct.p99_ms:.2f} ms "
          f"(p50 added {half_edge.p50_ms - half_direct.p50_ms:.2f} ms)")
    print(f"\nRateLimiter.check in-process on CPU {SERVER_CPU}, nats-server on CPU {LOAD_CPU}:")
    noop = limiter["no-op coroutine"]
    for name, value in limiter.items():
        if value:
            print(f"  {name:<46}{value:>12,.0f} calls/s {1e6 / value:>8.2f} µs/call"
                  + ("" if name == "no-op coroutine" else f"  (+{1e6 / value - 1e6 / noop:.2f} µs over no-op)"))


def run_choose(args: argparse.Namespace) -> None:
    """Every server x app, in `--rounds` interleaved rounds (the machine may be shared), medians;
    then each server at one fixed rate, where tail latency tells the servers apart."""
    seconds, conns = args.seconds, args.connections
    configs = [(server, factory) for server in ("uvicorn", "granian")
               for factory in ("hello", "proxy_aiohttp", "proxy_httpx", "edge_sketch")]
    runs: dict[str, list[Result]] = {}
    fixed: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="trellis-bench-edge-") as tmp, nats_server(Path(tmp)) as nats_url, \
            upstream(LOAD_CPU) as behind, upstream(SERVER_CPU) as direct_url:
        env = {"BENCH_UPSTREAM": behind, "BENCH_NATS_URL": nats_url, "BENCH_CLIENT": "aiohttp"}
        for _ in range(args.rounds):
            runs.setdefault("upstream direct (raw asyncio + uvloop)", []).append(
                measure(Target("d", direct_url + "/lots"), seconds=seconds, connections=conns))
            for server, factory in configs:
                with asgi(server, factory, env) as url:
                    runs.setdefault(f"{server} {factory}", []).append(
                        measure(Target(factory, url), seconds=seconds, connections=conns))
        rate = min(median(runs[f"{server} edge_sketch"]).rps for server in ("uvicorn", "granian")) / 2
        fixed["upstream direct (raw asyncio + uvloop)"] = paced(direct_url + "/lots", rate=rate, seconds=seconds)
        for server, factory in configs:
            if factory != "proxy_httpx":  # far below this rate
                with asgi(server, factory, env) as url:
                    paced(url, rate=rate, seconds=1)  # warm-up
                    fixed[f"{server} {factory}"] = paced(url, rate=rate, seconds=seconds)
    print(f"\nserver and client choice: app alone on CPU {SERVER_CPU}; wrk, the upstream behind proxies and "
          f"nats-server on CPU {LOAD_CPU}; wrk -t1 -c{conns} {seconds:g}s after a 1 s warm-up; "
          f"median of {args.rounds} interleaved rounds (req/s of each round in brackets); "
          f"edge_sketch = proxy_aiohttp + RateLimiter + ApiLogPublisher")
    print(HEADER)
    for name, results in runs.items():
        print(row(name, median(results)) + "   [" + ", ".join(f"{r.rps:,.0f}" for r in results) + "]")
    print(f"\nfixed rate {rate:,.0f} req/s (half the slower edge_sketch), bench.edge.paced, {seconds:g}s:")
    print(HEADER)
    for name, result in fixed.items():
        print(row(name, result))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measured run (1-30)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--server", choices=("granian", "uvicorn"), default=SERVER)
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default=CLIENT)
    parser.add_argument("--choose", action="store_true", help="compare servers and clients instead")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 1.0), 30.0)
    if missing := missing_tools():
        sys.exit(f"missing load generator(s): {', '.join(missing)}; install with: apt-get install -y wrk")
    if not two_cores():
        print("warning: fewer than 2 CPUs; server and load generator share a core", file=sys.stderr)
    (run_choose if args.choose else run_standard)(args)


if __name__ == "__main__":
    main()
