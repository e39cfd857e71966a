"""Edge benchmark: an authenticated (API key + JWT), scope-checked, rate-limited, logged GET through
the real edge to an upstream on loopback, beside the same GET sent straight to that upstream, a
bare ASGI hello-world on the edge's server (uvicorn) and a plain proxy, with one load generator
(wrk) in one run. Beside the untraced edge, two more with their traces exported over OTLP (the
SDK's exporter) to a sink the bench runs: one at the default sample ratio
(TRELLIS_OTEL_SAMPLE_RATIO unset), one at 1.0 (every request traced).

Setup (bench/edge/stack.py): a nats-server, identity and registry as processes, 60 Active
integrations (10,000 requests/minute each, the registry's cap) with a token each from the edge's
/oauth/token, and `python -m services.edge` with a route table sending GET /lots to the upstream.
The edge (and each server under test) runs alone on CPU 0; wrk, bench.edge.paced, the upstream
behind the edge, identity, registry and nats-server share CPU 1 (this machine has two). Every
request carries the next integration's (Authorization, X-API-Key) pair (a wrk Lua script), the
same bytes to every target. Each target gets a 1 s warm-up, then `--seconds` of wrk (closed
loop, `--connections` connections) in `--rounds` interleaved rounds, medians printed, with the
non-2xx count of every run (a run with non-2xx answers from the edge is marked INVALID). Then
bench.edge.paced holds half the edge's maximum against the edge and against the upstream for the
p99 the edge adds. Last, the rate limiter's cost per call, and (`--profile`) a py-spy profile of
the edge under load. The run stops by itself (about 3 minutes with the defaults).

    apt-get install -y wrk              # the load generator (Debian package)
    .venv/bin/pip install py-spy        # only for --profile (not a project dependency)
    .venv/bin/python -m bench.edge [--seconds 5] [--rounds 3] [--connections 64] [--profile 10]
    .venv/bin/python -m bench.edge --choose    # the server and client comparison (needs granian, httpx)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.edge.limiter import in_process_on, lease_cpu, limiter_rates
from bench.edge.load import (LOAD_CPU, SERVER_CPU, Process, Result, Watch, missing_tools, paced,
                             server_command, two_cores, wait_http, wrk)
from bench.edge.profile import profile
from bench.edge.stack import PATH, check_all, edge_process, edge_stack, wrk_script
from services.kit.natsproc import NatsServer
from services.kit.settings import DEFAULT_SAMPLE_RATIO
from tests.support.ports import free_port

SERVER, CLIENT = "uvicorn", "trellis"  # chosen with `--choose`; see docs/benchmarks.md "## Edge"
INVALID_SHARE = 0.001  # more non-2xx answers than this share of the requests invalidates a run


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    pid: int = 0  # the server process, for its CPU time per request


@dataclass(frozen=True)
class Measured:
    result: Result
    cpu_us: float  # CPU time of the server process per request (0: not measured)
    waited: float = 0.0  # share of the run the server waited for its core while other processes held it
    stolen_ms: float = 0.0  # hypervisor steal time on the server core during the run


@contextlib.contextmanager
def upstream(cpu: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    with Process([sys.executable, "-m", "bench.edge.upstream", "--port", str(port)], cpu=cpu) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", proc)
        yield url, proc.proc.pid


@contextlib.contextmanager
def asgi(server: str, factory: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    port = free_port()
    with Process(server_command(server, factory, port), cpu=SERVER_CPU, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/lots", proc)
        yield url + "/lots", proc.proc.pid


@dataclass(frozen=True)
class Sink:
    url: str
    count_file: Path

    def spans(self) -> int:
        """Spans received so far (the sink rewrites the count after each export)."""
        try:
            return int(self.count_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0


@contextlib.contextmanager
def otlp_sink(workdir: Path) -> Iterator[Sink]:
    """An OTLP/gRPC collector that counts and discards spans (bench/edge/otlp_sink.py), on the load core."""
    port = free_port()
    count_file = workdir / "otlp-sink.count"
    with Process([sys.executable, "-m", "bench.edge.otlp_sink", "--port", str(port), "--count-file", str(count_file)],
                 cpu=LOAD_CPU):
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the OTLP sink did not start") from None
                time.sleep(0.05)
        yield Sink(f"http://127.0.0.1:{port}", count_file)


@contextlib.contextmanager
def nats_server(workdir: Path) -> Iterator[str]:
    server = NatsServer(workdir / "nats", log_file=workdir / "nats.log").start()
    try:
        if two_cores() and server.process is not None:
            os.sched_setaffinity(server.process.pid, {LOAD_CPU})
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def edge_target(upstream_url: str, nats_url: str, workdir: Path,
                others: dict[str, dict[str, str]]) -> Iterator[tuple[list[Target], list[dict[str, str]], Path]]:
    """The real edge (bench/edge/stack.py) in front of `upstream_url`, and beside it one more
    edge per entry of `others` (label: what it adds to the environment; by default its traces
    exported over OTLP to a sink at the default sample ratio and at 1.0, to price tracing; the
    first edge has no exporter, so no tracer, as deployed without one): yields the targets, the
    credential pairs the load rotates over, and the first edge's log file."""
    with edge_stack(upstream_url, nats_url, workdir / "edge") as stack, contextlib.ExitStack() as more:
        targets = [Target("edge: key+JWT, scope, limit, log, proxy", stack.url, pid=stack.pid)]
        for n, (label, env) in enumerate(others.items()):
            base, pid = more.enter_context(edge_process(stack.env, workdir / "edge" / f"edge-{n + 2}.log", **env))
            targets.append(Target(f"edge, {label}"[:41], base + PATH, pid=pid))
        yield targets, stack.credentials, stack.log


def measure(target: Target, *, seconds: float, connections: int, script: Path | None = None) -> Measured:
    wrk(target.url, seconds=1, connections=connections, headers=target.headers, script=script)  # warm-up
    with Watch(target.pid) as watch:
        result = wrk(target.url, seconds=seconds, connections=connections, headers=target.headers, script=script)
    return Measured(result, watch.own / result.requests * 1e6 if result.requests and target.pid else 0.0, watch.waited)


def measure_paced(target: Target, *, rate: float, seconds: float, rotate: Path) -> Measured:
    with Watch(target.pid) as watch:
        result = paced(target.url, rate=rate, seconds=seconds, rotate=rotate)
    return Measured(result, watch.own / result.requests * 1e6 if result.requests else 0.0, watch.waited,
                    watch.stolen_ms)


_BUCKET = re.compile(r'^trellis_edge_request_duration_seconds_bucket\{le="([^"]+)",route="/lots"\} (\S+)$', re.M)


def own_latency(edge: Target) -> dict[float, float]:
    """The edge's own request-duration histogram for the measured route (cumulative counts by
    upper bound, seconds), from its /metrics: the time from the app's first line to its last,
    without the load generator, the kernel or uvicorn's parsing."""
    base = edge.url[: -len(PATH)]
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    return {float(le): float(count) for le, count in _BUCKET.findall(text)}


def p99_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest histogram bound (ms) under which 99 % of the requests between two scrapes fell."""
    total = after[math.inf] - before[math.inf]
    for le in sorted(after):
        if total and (after[le] - before[le]) / total >= 0.99:
            return le * 1000
    return math.inf


def row(name: str, r: Result, cpu_us: float = 0.0, waited: float | None = None) -> str:
    return (f"{name:<42}{r.rps:>9,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.non2xx:>9}{r.errors - r.non2xx:>9}"
            + (f"{cpu_us:>11.0f}" if cpu_us else f"{'':>11}")
            + (f"{100 * waited:>8.1f}%" if waited is not None else ""))


HEADER = (f"{'target':<42}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}{'CPU µs/req':>11}"
          f"{'waited':>9}")


def median(results: list[Result]) -> Result:
    return Result(statistics.median(r.rps for r in results), statistics.median(r.p50_ms for r in results),
                  statistics.median(r.p99_ms for r in results), sum(r.requests for r in results),
                  sum(r.errors for r in results), sum(r.non2xx for r in results))


async def _stream_seqs(nats_url: str) -> dict[str, int]:
    from services.kit.bus import connect

    nc = await connect(nats_url, name="bench-streams")
    try:
        js = nc.jetstream()
        return {name: (await js.stream_info(name)).state.last_seq for name in ("RATELIMIT", "APILOG")}
    finally:
        await nc.close()


def stream_seqs(nats_url: str) -> dict[str, int]:
    """Messages ever published to the rate-limit counters and the API log (their last sequence)."""
    return asyncio.run(_stream_seqs(nats_url))


def drained(nats_url: str, timeout: float = 30.0) -> tuple[dict[str, int], float]:
    """Once the API log stream stops growing (the edge published what it had queued): the
    streams' sequences and how long that took."""
    start = time.monotonic()
    seqs, still = stream_seqs(nats_url), 0
    while still < 3 and time.monotonic() - start < timeout:
        time.sleep(0.1)
        now = stream_seqs(nats_url)
        still = still + 1 if now["APILOG"] == seqs["APILOG"] else 0
        seqs = now
    return seqs, max(0.0, time.monotonic() - start - 0.3)


@dataclass(frozen=True)
class EdgeRun:
    measured: Measured
    published: dict[str, int]  # messages the edge published per stream for the run's requests
    backlog: int  # API log records still queued in the edge when the load stopped
    drain_s: float


def measure_edge(target: Target, nats_url: str, *, seconds: float, connections: int, script: Path) -> EdgeRun:
    """As `measure`, but the edge's CPU time and NATS publishes run until its API log is drained:
    the log is published off the response path, so under saturation it lags behind the load."""
    wrk(target.url, seconds=1, connections=connections, script=script)  # warm-up
    before, _ = drained(nats_url)
    with Watch(target.pid) as whole:
        with Watch(target.pid) as loaded:
            result = wrk(target.url, seconds=seconds, connections=connections, script=script)
        at_stop = stream_seqs(nats_url)
        after, drain_s = drained(nats_url)
    return EdgeRun(Measured(result, whole.own / result.requests * 1e6 if result.requests else 0.0, loaded.waited),
                   {k: after[k] - before[k] for k in after}, after["APILOG"] - at_stop["APILOG"], drain_s)


@dataclass
class Findings:
    """Everything one standard run measured, for the report."""

    edge: Target
    others: list[Target]  # the edge again, with what --second-edge adds (by default: traced)
    baselines: list[Target]  # upstream direct, hello world, proxy only
    integrations: int
    runs: dict[str, list[Measured]]
    edge_runs: list[EdgeRun]
    rate: float = 0.0
    half_edge: list[Measured] = field(default_factory=list)
    half_direct: list[Measured] = field(default_factory=list)
    half_behind: list[Measured] = field(default_factory=list)  # the edge's own upstream (CPU 1), direct
    half_edge_own_p99: list[float] = field(default_factory=list)  # ms, the edge's own histogram bound
    spans: dict[str, list[float]] = field(default_factory=dict)  # spans the sink received per request, by target
    limiter: dict[str, float] = field(default_factory=dict)
    per_lease_us: float = 0.0
    profile: list[str] = field(default_factory=list)
    profile_half: list[str] = field(default_factory=list)  # at the half-load fixed rate

    @property
    def targets(self) -> list[Target]:
        return [self.edge, *self.others, *self.baselines]

    def result(self, target: Target) -> Result:
        return median([m.result for m in self.runs[target.name]])

    def cpu_us(self, target: Target) -> float:
        return statistics.median(m.cpu_us for m in self.runs[target.name])

    def noise(self, target: Target) -> float:
        """Median share of the server core that other processes used while `target` was measured."""
        return statistics.median(m.waited for m in self.runs[target.name])

    def edge_requests(self) -> int:
        return sum(r.measured.result.requests for r in self.edge_runs)

    def published(self, stream: str) -> float:
        """Messages the edge published to `stream` per request."""
        return sum(r.published[stream] for r in self.edge_runs) / self.edge_requests()


def run_standard(args: argparse.Namespace) -> None:
    """The edge, a second edge (by default with its traces exported), the upstream direct, the hello world
    and the proxy alone, interleaved for `--rounds` rounds; then the p99 added at half load, the limiter's
    cost and, with `--profile`, where the edge's time goes."""
    seconds, conns = args.seconds, args.connections
    with tempfile.TemporaryDirectory(prefix="trellis-bench-edge-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        nats_url = stack.enter_context(nats_server(root))
        behind, behind_pid = stack.enter_context(upstream(LOAD_CPU))
        direct_url, direct_pid = stack.enter_context(upstream(SERVER_CPU))
        direct = Target("upstream direct (raw asyncio + uvloop)", direct_url + "/lots", pid=direct_pid)
        env = {"BENCH_UPSTREAM": behind, "BENCH_NATS_URL": nats_url, "BENCH_CLIENT": args.client}
        # Idle servers cost nothing measurable, so all of them stay up and the rounds interleave.
        hello_url, hello_pid = stack.enter_context(asgi(SERVER, "hello"))
        proxy_url, proxy_pid = stack.enter_context(asgi(SERVER, f"proxy_{args.client}", env))
        baselines = [direct, Target(f"ASGI hello world ({SERVER}, as the edge)", hello_url, pid=hello_pid),
                     Target(f"proxy only ({SERVER} + {args.client})", proxy_url, pid=proxy_pid)]
        sink: Sink | None = None
        if args.second_edge:
            others = {" ".join(f"{k}={v}" for k, v in args.second_edge.items()): args.second_edge}
        else:  # the default: the same edge with its traces exported over OTLP, at the default ratio and at 1.0
            sink = stack.enter_context(otlp_sink(root))
            otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
            others = {f"OTLP, ratio {DEFAULT_SAMPLE_RATIO:g} (default)": otlp,
                      "OTLP, ratio 1.0": {**otlp, "TRELLIS_OTEL_SAMPLE_RATIO": "1.0"}}
        edges, credentials, edge_log = stack.enter_context(edge_target(behind, nats_url, root, others))
        edge, *rest = edges
        script = wrk_script(root / "rotate.lua", credentials)
        rotate = root / "rotate.json"
        rotate.write_text(json.dumps(credentials))
        for target in edges:
            statuses = check_all(target.url, credentials)
            print(f"before measuring, one GET per integration through {target.name}: {dict(sorted(statuses.items()))}",
                  flush=True)
            if set(statuses) != {200}:
                sys.exit(f"{target.name} does not answer 200 to every integration; "
                         f"edge log:\n{edge_log.read_text()[-3000:]}")

        found = Findings(edge, rest, baselines, len(credentials), {t.name: [] for t in [*edges, *baselines]}, [])
        for n in range(args.rounds):
            for target in found.targets:
                if target in edges:
                    spans_before = sink.spans() if sink else 0
                    run = measure_edge(target, nats_url, seconds=seconds, connections=conns, script=script)
                    found.runs[target.name].append(run.measured)
                    if sink and target is not edge:  # after the API log drained: a second or more for the last batch
                        found.spans.setdefault(target.name, []).append(
                            (sink.spans() - spans_before) / max(1, run.measured.result.requests))
                    if target is edge:
                        found.edge_runs.append(run)
                else:
                    found.runs[target.name].append(measure(target, seconds=seconds, connections=conns, script=script))
            done = (f"{t.name.split(':')[0].split(' (')[0]} {found.runs[t.name][-1].result.rps:,.0f}"
                    for t in found.targets)
            print(f"round {n + 1}/{args.rounds}: " + ", ".join(done), flush=True)
        found.rate = args.rate or found.result(edge).rps / 2
        for _ in range(args.rounds):
            # A 1 s warm-up before each round, as wrk's: the other targets' rounds leave the edge idle
            # for ~12 s, long enough for cached keys and integrations (30 s TTL, refreshed on use)
            # to expire, and a round would otherwise start by loading all of them at once.
            paced(edge.url, rate=found.rate, seconds=1, rotate=rotate)
            before = own_latency(edge)
            found.half_edge.append(measure_paced(edge, rate=found.rate, seconds=seconds, rotate=rotate))
            found.half_edge_own_p99.append(p99_bound(before, own_latency(edge)))
            found.half_direct.append(measure_paced(direct, rate=found.rate, seconds=seconds, rotate=rotate))
            found.half_behind.append(measure_paced(Target("the edge's upstream, direct", behind + "/lots", pid=behind_pid),
                                                   rate=found.rate, seconds=seconds, rotate=rotate))
        found.limiter = in_process_on(SERVER_CPU, lambda: asyncio.run(limiter_rates(nats_url, min(seconds, 3))))
        found.per_lease_us = in_process_on(
            SERVER_CPU, lambda: {"us": asyncio.run(lease_cpu(nats_url, min(seconds, 3)))})["us"]
        if args.profile:
            found.profile = profile(edge.url, edge.pid, script, seconds=args.profile, connections=conns,
                                    out=args.profile_out or root / "edge.spy.txt")
            found.profile_half = profile(edge.url, edge.pid, script, seconds=args.profile, connections=conns,
                                         out=root / "edge-half.spy.txt", rate=found.rate, rotate=rotate)
    report_load(found, args)
    report_half_load(found, args)
    report_limiter(found)
    if found.profile:
        print(f"\npy-spy profile of the edge under wrk load ({args.profile:g} s)"
              + (f", raw stacks in {args.profile_out}:" if args.profile_out else ":"))
        print("\n".join(found.profile))
        print(f"\npy-spy profile of the edge at the half-load fixed rate ({found.rate:,.0f} req/s, {args.profile:g} s):")
        print("\n".join(found.profile_half))


def report_load(found: Findings, args: argparse.Namespace) -> None:
    print(f"\nedge benchmark: each server under test alone on CPU {SERVER_CPU}; wrk, bench.edge.paced, the upstream "
          f"behind the edge, identity, registry and nats-server on CPU {LOAD_CPU}; every request with the next of "
          f"{found.integrations} integrations' (Authorization, X-API-Key) pairs; wrk -t1 -c{args.connections} "
          f"{args.seconds:g}s after a 1 s warm-up, median of {args.rounds} interleaved rounds (req/s of each round in "
          f"brackets); CPU µs/req: the server process's user+system time over the run / requests; waited: the "
          f"share of the run the server was runnable but other processes held CPU {SERVER_CPU} "
          f"(schedstat run_delay: the noise)")
    print(HEADER)
    for target in found.targets:
        print(row(target.name, found.result(target), found.cpu_us(target), found.noise(target))
              + "   [" + ", ".join(f"{m.result.rps:,.0f}" for m in found.runs[target.name]) + "]")
    for target in (found.edge, *found.others):
        r = found.result(target)
        if r.errors > INVALID_SHARE * r.requests:
            print(f"INVALID: {target.name} answered {r.non2xx} non-2xx and had {r.errors - r.non2xx} socket errors in "
                  f"{r.requests} requests")
    e = found.result(found.edge).rps
    direct, hello, proxy = (found.result(t).rps for t in found.baselines)
    print(f"ratios (req/s): edge/upstream direct {e / direct:.3f}   edge/hello world {e / hello:.3f}   "
          f"edge/proxy only {e / proxy:.3f}")
    for other in found.others:
        spans = found.spans.get(other.name)
        print(f"  {other.name} / untraced edge: {found.result(other).rps / e:.3f} by req/s, "
              f"{found.cpu_us(found.edge) / found.cpu_us(other):.3f} by CPU µs per request"
              + (f"   (spans the sink received per request, by round: {', '.join(f'{x:.3f}' for x in spans)}; "
                 f"the warm-up's and the drain's spans count too)" if spans else ""))
    cpu = found.cpu_us(found.edge)
    print(f"edge per request: 1/throughput {1e6 / e:.0f} µs; CPU time {cpu:.0f} µs (until its API log was drained), "
          f"i.e. {1e6 / cpu:,.0f} req/s if it had the core to itself; NATS publishes per request: rate-limit leases "
          f"{found.published('RATELIMIT'):.3f}, API log {found.published('APILOG'):.3f} "
          f"(over {found.edge_requests():,} measured requests)")
    print("API log records still queued in the edge when wrk stopped: " + ", ".join(
        f"{r.backlog:,} of {r.measured.result.requests:,} (drained in {r.drain_s:.1f} s)" for r in found.edge_runs))


def report_half_load(found: Findings, args: argparse.Namespace) -> None:
    how = "given with --rate" if args.rate else "half the edge's maximum"
    print(f"\nfixed rate {found.rate:,.0f} req/s ({how}), bench.edge.paced over 64 connections, "
          f"{args.seconds:g}s, same rotation, {args.rounds} interleaved rounds, medians "
          f"(each round's p99 in brackets):")
    print(HEADER)
    for name, half in ((found.edge.name, found.half_edge), (found.baselines[0].name, found.half_direct),
                       ("the edge's upstream (CPU 1), direct", found.half_behind)):
        print(row(name, median([m.result for m in half]), statistics.median(m.cpu_us for m in half),
                  statistics.median(m.waited for m in half))
              + "   [p99 " + ", ".join(f"{m.result.p99_ms:.2f}" for m in half)
              + "; waited " + ", ".join(f"{100 * m.waited:.1f}%" for m in half)
              + "; stolen " + ", ".join(f"{m.stolen_ms:.0f} ms" for m in half) + "]")
    edge = median([m.result for m in found.half_edge])
    if edge.errors > INVALID_SHARE * edge.requests:
        print(f"INVALID: the edge answered {edge.non2xx} non-2xx at the fixed rate")
    pairs = [(a.result, b.result) for a, b in zip(found.half_edge, found.half_direct)]
    added = [a.p99_ms - b.p99_ms for a, b in pairs]
    print(f"p99 added by the edge at half load: {statistics.median(added):.2f} ms, median of {len(added)} rounds "
          f"[{', '.join(f'{x:.2f}' for x in added)}] (p50 added "
          f"{statistics.median(a.p50_ms - b.p50_ms for a, b in pairs):.2f} ms)")
    behind = [a.result.p99_ms - b.result.p99_ms for a, b in zip(found.half_edge, found.half_behind)]
    print(f"p99 added against the same GET sent straight to the upstream behind the edge (CPU 1, shared with the "
          f"load generator, as the edge's upstream is): {statistics.median(behind):.2f} ms "
          f"[{', '.join(f'{x:.2f}' for x in behind)}]")
    print("the edge's own handling time at half load (its /metrics histogram, route /lots): p99 under "
          + ", ".join(f"{x:g} ms" for x in found.half_edge_own_p99) + " by round")


def report_limiter(found: Findings) -> None:
    print(f"\nRateLimiter.check in-process on CPU {SERVER_CPU}, nats-server on CPU {LOAD_CPU}:")
    noop = found.limiter["no-op coroutine"]
    for name, value in found.limiter.items():
        if value:
            print(f"  {name:<46}{value:>12,.0f} calls/s {1e6 / value:>8.2f} µs/call"
                  + ("" if name == "no-op coroutine" else f"  (+{1e6 / value - 1e6 / noop:.2f} µs over no-op)"))
    hot = 1e6 / found.limiter["check, leased (max_lease 100)"] - 1e6 / noop
    leases = found.published("RATELIMIT")
    in_edge = hot + leases * (found.per_lease_us - hot)
    rps, cpu = found.result(found.edge).rps, found.cpu_us(found.edge)
    per_request = 1e6 / rps
    print(f"  check with a lease every call, 32 concurrent callers: {found.per_lease_us:.1f} µs of CPU per call")
    print(f"  per request through the edge (1/throughput {per_request:.0f} µs): the leased check {hot:.1f} µs = "
          f"{100 * hot / per_request:.1f} %; with the edge's {leases:.3f} leases per request (its leases stay small at "
          f"{rps / found.integrations:.0f} req/s per integration), {hot:.1f} + {leases:.3f} x "
          f"{found.per_lease_us - hot:.1f} = {in_edge:.1f} µs = {100 * in_edge / per_request:.1f} % "
          f"({100 * in_edge / cpu:.1f} % of its CPU time per request, {cpu:.0f} µs)")


def run_choose(args: argparse.Namespace) -> None:
    """Every server x app, in `--rounds` interleaved rounds (the machine may be shared), medians;
    then each server at one fixed rate, where tail latency tells the servers apart."""
    seconds, conns = args.seconds, args.connections
    configs = [(server, factory) for server in ("uvicorn", "granian")
               for factory in ("hello", "proxy_aiohttp", "proxy_httpx", "proxy_trellis", "edge_sketch")]
    runs: dict[str, list[Result]] = {}
    fixed: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="trellis-bench-edge-") as tmp, nats_server(Path(tmp)) as nats_url, \
            upstream(LOAD_CPU) as (behind, _), upstream(SERVER_CPU) as (direct_url, _):
        env = {"BENCH_UPSTREAM": behind, "BENCH_NATS_URL": nats_url, "BENCH_CLIENT": "aiohttp"}
        for _ in range(args.rounds):
            runs.setdefault("upstream direct (raw asyncio + uvloop)", []).append(
                measure(Target("d", direct_url + "/lots"), seconds=seconds, connections=conns).result)
            for server, factory in configs:
                with asgi(server, factory, env) as (url, _):
                    runs.setdefault(f"{server} {factory}", []).append(
                        measure(Target(factory, url), seconds=seconds, connections=conns).result)
        rate = min(median(runs[f"{server} edge_sketch"]).rps for server in ("uvicorn", "granian")) / 2
        fixed["upstream direct (raw asyncio + uvloop)"] = paced(direct_url + "/lots", rate=rate, seconds=seconds)
        for server, factory in configs:
            if factory != "proxy_httpx":  # far below this rate
                with asgi(server, factory, env) as (url, _):
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
    parser.add_argument("--server", choices=("granian", "uvicorn"), default=SERVER, help="--choose only")
    parser.add_argument("--client", choices=("aiohttp", "httpx", "trellis"), default=CLIENT, help="the proxy-only row's client")
    parser.add_argument("--choose", action="store_true", help="compare servers and clients instead")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="the fixed rate for the added-latency rounds (default: half the edge's measured maximum)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    parser.add_argument("--profile", type=float, default=0.0, help="seconds of py-spy on the edge under load (0: none)")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw stacks in this file")
    parser.add_argument("--second-edge", metavar="NAME=VALUE", action="append", default=[],
                        help="environment of the second edge measured (default: two, traces exported over OTLP "
                             "to a sink at the default sample ratio and at 1.0)")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 1.0), 30.0)
    args.rounds = min(max(args.rounds, 1), 7)
    args.profile = min(max(args.profile, 0.0), 30.0)
    args.second_edge = dict(v.split("=", 1) for v in args.second_edge)
    if missing := missing_tools():
        sys.exit(f"missing load generator(s): {', '.join(missing)}; install with: apt-get install -y wrk")
    if two_cores():
        os.sched_setaffinity(0, {LOAD_CPU})  # this driver too stays off the server's core
    else:
        print("warning: fewer than 2 CPUs; server and load generator share a core", file=sys.stderr)
    (run_choose if args.choose else run_standard)(args)


if __name__ == "__main__":
    main()
