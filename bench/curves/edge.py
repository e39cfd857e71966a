"""Edge throughput as the number of active integrations grows: the same authenticated, scope-
checked, rate-limited, logged GET through the real edge with the load spread over 1, 10, 100 and
1,000 integrations, each with its own API key and token, in one run.

    .venv/bin/python -m bench.curves.edge [--steps 1,10,100,1000] [--seconds 5] [--rounds 3] [--connections 64]
                                          [--profile 8]

The stack is bench.edge's (bench/edge/stack.py: nats-server, identity, registry, the upstream,
wrk and this driver on CPU 1; `python -m services.edge` alone on CPU 0), made once with the
largest step's integrations (10 per organisation). One integration may make at most 10,000
requests a minute (the registry's cap), which would turn the 1- and 10-integration steps into a
rate-limit test; so before the edge starts the bench lifts every integration's limit in the
registry's database to 1,000,000,000 a minute: the limiter still counts every request per
integration (its NATS leases, one counter per integration), it just never refuses. Each step's
wrk script rotates over the first N integrations' (Authorization, X-API-Key) pairs, one pair
per request; before a step's run every one of its integrations gets one GET (the caches hold
them, as on a busy edge) and wrk a 1 s warm-up. Steps are interleaved over `--rounds` rounds,
medians printed; CPU µs per request is the edge process's user + system time until its API log
was drained (bench.edge's measure_edge), divided by the requests. `--profile S`: then S
seconds of py-spy (bench.edge.profile; `.venv/bin/pip install py-spy`, not a project
dependency) on the edge under wrk at the smallest and the largest step, by cost centre.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

from bench.edge.__main__ import INVALID_SHARE, EdgeRun, Target, measure_edge, nats_server, upstream
from bench.edge.load import LOAD_CPU, SERVER_CPU, missing_tools, two_cores
from bench.edge.profile import profile
from bench.edge.stack import check_all, edge_stack, wrk_script

UNLIMITED = 1_000_000_000  # requests a minute: the limiter counts, never refuses


def lift_limits(registry_db: Path) -> None:
    with contextlib.closing(sqlite3.connect(registry_db, timeout=30)) as db:
        db.execute("UPDATE integrations SET rate_limit_per_minute = ?", (UNLIMITED,))
        db.commit()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.curves.edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,10,100,1000", help="active integrations at each step")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measured run (1-30)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--profile", type=float, default=0.0,
                        help="seconds of py-spy at the smallest and largest step (0: none)")
    args = parser.parse_args()
    steps = sorted({min(max(int(s), 1), 2000) for s in args.steps.split(",")})
    seconds, rounds = min(max(args.seconds, 1.0), 30.0), min(max(args.rounds, 1), 7)
    if missing := missing_tools():
        sys.exit(f"missing load generator(s): {', '.join(missing)}; install with: apt-get install -y wrk")
    if two_cores():
        os.sched_setaffinity(0, {LOAD_CPU})
    runs: dict[int, list[EdgeRun]] = {n: [] for n in steps}
    loads: list[str] = []
    profiles: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="trellis-bench-curves-edge-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        nats_url = stack.enter_context(nats_server(root))
        behind, _ = stack.enter_context(upstream(LOAD_CPU))
        print(f"making {steps[-1]:,} integrations…", file=sys.stderr, flush=True)
        edge = stack.enter_context(edge_stack(behind, nats_url, root / "edge", integrations=steps[-1],
                                              prepare=lift_limits))
        target = Target("edge", edge.url, pid=edge.pid)
        scripts = {n: wrk_script(root / f"rotate-{n}.lua", edge.credentials[:n]) for n in steps}
        for n in range(rounds):
            for step in steps:
                statuses = check_all(edge.url, edge.credentials[:step])
                if set(statuses) != {200}:
                    sys.exit(f"not every integration answered 200: {statuses}; edge log:\n{edge.log.read_text()[-3000:]}")
                runs[step].append(measure_edge(target, nats_url, seconds=seconds, connections=args.connections,
                                               script=scripts[step]))
                loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
            print(f"round {n + 1}/{rounds}: " + ", ".join(f"{s}: {runs[s][-1].measured.result.rps:,.0f}" for s in steps),
                  file=sys.stderr, flush=True)
        for step in sorted({steps[0], steps[-1]}) if args.profile else []:
            check_all(edge.url, edge.credentials[:step])
            profiles[step] = profile(edge.url, edge.pid, scripts[step], seconds=min(args.profile, 30.0),
                                     connections=args.connections, out=root / f"edge-{step}.spy.txt")
    print(f"\nedge throughput by active integrations: the edge alone on CPU {SERVER_CPU}; wrk -t1 -c{args.connections} "
          f"{seconds:g}s after a 1 s warm-up, rotating over the step's integrations; median of {rounds} interleaved "
          f"rounds (each round's req/s in brackets); limits lifted (the limiter counts, never refuses)\n")
    print("| active integrations | req/s | p50 ms | p99 ms | CPU µs/req | rate-limit leases/req | API log msgs/req "
          "| waited | non-2xx |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = 0.0
    for step in steps:
        rs = runs[step]
        rps = statistics.median(r.measured.result.rps for r in rs)
        cpu = statistics.median(r.measured.cpu_us for r in rs)
        base = base or cpu
        requests = sum(r.measured.result.requests for r in rs)
        leases = sum(r.published["RATELIMIT"] for r in rs) / requests
        logs = sum(r.published["APILOG"] for r in rs) / requests
        non2xx = sum(r.measured.result.non2xx for r in rs)
        flag = " INVALID" if sum(r.measured.result.errors for r in rs) > INVALID_SHARE * requests else ""
        print(f"| {step:,} | {rps:,.0f} [{', '.join(f'{r.measured.result.rps:,.0f}' for r in rs)}] "
              f"| {statistics.median(r.measured.result.p50_ms for r in rs):.2f} "
              f"| {statistics.median(r.measured.result.p99_ms for r in rs):.2f} | {cpu:,.0f} ({cpu / base:.2f}x) "
              f"| {leases:.3f} | {logs:.4f} | {100 * statistics.median(r.measured.waited for r in rs):.1f} % "
              f"| {non2xx}{flag} |")
    print(f"\nload average after each run: {', '.join(loads)}")
    for step, lines in profiles.items():
        print(f"\npy-spy profile of the edge under wrk load with {step:,} active integrations ({args.profile:g} s):")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
