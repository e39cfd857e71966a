"""Server time of the API log page (first page, each filter) on 1,000,000 requests and of a
webhook's delivery log on 100,000 attempts, beside the same queries made straight over gRPC in
the same run.

It starts a nats-server, identity, registry, webhooks, logs and the console as their own
processes (`python -m services.<name>`, SQLite, the embedded mode), generates 1,000,000 requests
of one organisation straight into the logs store and 100,000 attempts of one subscription into
the webhooks store (tests/support/console_services.py), signs in with the local sign-in, and
times one request at a time over keep-alive on loopback: `/logs` unfiltered and with each filter
(a QA user: the page makes one logs call), `/logs/chart` unfiltered and by integration (one
RequestHistogram call over the whole range: fewer timed requests, --chart-requests, as each
counts every matching row), and `/webhooks/<id>` with its All and Failed tabs (an
administrator: the page makes GetSubscription and ListAttempts at once). "added" is the page's
server-time p95 minus its gRPC calls' p95 (target: under 10 ms).

    .venv/bin/python -m bench.console.logs_and_deliveries [--requests 200] [--chart-requests 20] [--rows 1000000]
        [--attempts 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.console.__main__ import AUDIENCE, ISSUER, WARMUP, Client, percentile, sign_in, start, wait_grpc, wait_http
from services.contracts.trellis.logs.v1 import logs_pb2 as lpb
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as wpb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, QA_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import migrate
from services.kit.natsproc import NatsServer
from tests.support.console_services import generate_attempts, generate_requests
from tests.support.ports import free_port

ORG = "org_bench_logs"
PAGE_SIZE, LOG_PAGE_SIZE = 50, 25
CHART_CASES = ("no filter", "integration")
CHART_WARMUP = 3


def ts(when: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def filters(now: dt.datetime) -> dict[str, tuple[dict[str, str], lpb.QueryRequestsRequest]]:
    """name -> (the page's query, the logs request the page makes for it)."""
    today = now.date()
    day = dt.datetime.combine(today, dt.time(), dt.timezone.utc)
    cases: dict[str, tuple[dict[str, str], dict[str, object]]] = {
        "no filter": ({}, {}),
        "integration": ({"integration": "int_03"}, {"integration_id": "int_03"}),
        "date range": ({"since": str(today), "until": str(today)},
                       {"since": ts(day), "until": ts(day + dt.timedelta(days=1))}),
        "status error": ({"status": "error"}, {"status": "error"}),
        "status 429": ({"status": "429"}, {"status": "429"}),
        "endpoint": ({"endpoint": "/lots/42"}, {"endpoint": "/lots/42"}),
        "all four": ({"integration": "int_03", "since": str(today), "until": str(today), "status": "error",
                      "endpoint": "/lots/4"},
                     {"integration_id": "int_03", "since": ts(day), "until": ts(day + dt.timedelta(days=1)),
                      "status": "error", "endpoint": "/lots/4"}),
    }
    return {name: (query, lpb.QueryRequestsRequest(page_size=PAGE_SIZE, **fields))  # type: ignore[arg-type]
            for name, (query, fields) in cases.items()}


def server_time(server_timing: str) -> float:
    found = re.search(r"app;dur=([0-9.]+)", server_timing)
    assert found, server_timing
    return float(found.group(1))


def histogram_request(r: lpb.QueryRequestsRequest) -> lpb.RequestHistogramRequest:
    """The chart's call for the grid's filters (services/console/logs/filters.py LogFilter.histogram)."""
    return lpb.RequestHistogramRequest(integration_id=r.integration_id, status=r.status, endpoint=r.endpoint,
                                       since=r.since if r.HasField("since") else None,
                                       until=r.until if r.HasField("until") else None)


async def side_by_side(get: Callable[[], tuple[int, bytes, str]], call: Callable[[], Awaitable[object]],
                       requests: int, warmup: int = WARMUP) -> tuple[list[float], list[float], list[float]]:
    """The page and its gRPC calls in turn, one of each at a time, so both meet the same load:
    the page's round trips and server times, and the calls' times (ms)."""
    for _ in range(warmup):
        assert get()[0] == 200
        await call()
    trips, server, direct = [], [], []
    for _ in range(requests):
        started = time.perf_counter()
        status, _, timing = get()
        trips.append((time.perf_counter() - started) * 1000)
        assert status == 200
        server.append(server_time(timing))
        started = time.perf_counter()
        await call()
        direct.append((time.perf_counter() - started) * 1000)
    return trips, server, direct


async def subscribe(address: str, metadata: tuple[tuple[str, str], ...]) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await webhooks_pb2_grpc.WebhooksStub(channel).CreateSubscription(wpb.CreateSubscriptionRequest(
            url="https://127.0.0.1:9/hook", activity_types=["lot.created"]), metadata=metadata)
        return answer.subscription.id


async def measure(console_port: int, qa_cookie: str, admin_cookie: str, logs_address: str, webhooks_address: str,
                  qa: tuple[tuple[str, str], ...], admin: tuple[tuple[str, str], ...],
                  cases: dict[str, tuple[dict[str, str], lpb.QueryRequestsRequest]], subscription_id: str,
                  requests: int, chart_requests: int, only: str = "") -> tuple[dict[str, tuple[list[float], list[float], list[float]]], dict[str, int]]:
    results: dict[str, tuple[list[float], list[float], list[float]]] = {}
    sizes: dict[str, int] = {}
    as_qa, as_admin = Client(console_port), Client(console_port)
    as_qa.cookie, as_admin.cookie = qa_cookie, admin_cookie
    async with grpc.aio.insecure_channel(logs_address) as lc, grpc.aio.insecure_channel(webhooks_address) as wc:
        logs, hooks = logs_pb2_grpc.LogsStub(lc), webhooks_pb2_grpc.WebhooksStub(wc)
        for name, (query, request) in cases.items():
            if not f"logs: {name}".startswith(only):
                continue
            path = "/logs" + (f"?{urlencode(query)}" if query else "")
            status, body, _ = as_qa.get(path)
            assert status == 200, (path, status, body[:500])
            sizes[f"logs: {name}"] = body.count(b'data-testid="log-row"')
            results[f"logs: {name}"] = await side_by_side(
                lambda p=path: as_qa.get(p), lambda r=request: logs.QueryRequests(r, metadata=qa), requests)
        for name in CHART_CASES:
            if not f"chart: {name}".startswith(only):
                continue
            query, request = cases[name]
            path = "/logs/chart" + (f"?{urlencode(query)}" if query else "")
            status, body, _ = as_qa.get(path)
            assert status == 200 and b'data-testid="chart-series"' in body, (path, status, body[:500])
            found = re.search(rb"All ([0-9,]+) matching request", body)
            sizes[f"chart: {name}"] = int(found.group(1).replace(b",", b"")) if found else 0
            counts = histogram_request(request)
            results[f"chart: {name}"] = await side_by_side(
                lambda p=path: as_qa.get(p), lambda r=counts: logs.RequestHistogram(r, metadata=qa),
                chart_requests, warmup=CHART_WARMUP)
        for tab, outcome in (("all", wpb.OUTCOME_UNSPECIFIED), ("failed", wpb.OUTCOME_FAILED)):
            if not f"delivery log: {tab}".startswith(only):
                continue
            path = f"/webhooks/{subscription_id}?log={tab}"
            status, body, _ = as_admin.get(path)
            assert status == 200, (path, status, body[:500])
            sizes[f"delivery log: {tab}"] = body.count(b'data-testid="attempt-row"')

            async def calls(outcome: int = outcome) -> object:
                return await asyncio.gather(
                    hooks.GetSubscription(wpb.GetSubscriptionRequest(subscription_id=subscription_id), metadata=admin),
                    hooks.ListAttempts(wpb.ListAttemptsRequest(subscription_id=subscription_id, outcome=outcome,
                                                               page_size=LOG_PAGE_SIZE), metadata=admin))

            results[f"delivery log: {tab}"] = await side_by_side(lambda p=path: as_admin.get(p), calls, requests)
    as_qa.close()
    as_admin.close()
    return results, sizes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console.logs_and_deliveries",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (at most 5000)")
    parser.add_argument("--chart-requests", type=int, default=20, help="timed requests per chart (at most 1000)")
    parser.add_argument("--only", default="", metavar="PREFIX",
                        help="time only the pages whose row name starts with this (e.g. chart, logs, delivery)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="API log rows (default 1,000,000)")
    parser.add_argument("--attempts", type=int, default=100_000, help="delivery attempts (default 100,000)")
    args = parser.parse_args()
    requests = min(max(args.requests, 20), 5000)
    chart_requests = min(max(args.chart_requests, 5), 1000)

    with tempfile.TemporaryDirectory(prefix="trellis-bench-console-logs-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        nats = NatsServer(root / "nats").start()
        private_pem, public_pem = generate_actor_key()
        (root / "actor_public.pem").write_bytes(public_pem)
        (root / "actor_private.pem").write_bytes(private_pem)
        names = ("identity", "registry", "webhooks", "logs")
        ports = {name: free_port() for name in (*names, "console")}
        env = {
            **os.environ, "TRELLIS_MODE": "embedded", "TRELLIS_DATA_DIR": str(data), "TRELLIS_NATS_URL": nats.url,
            "TRELLIS_ACTOR_ISSUER": ISSUER, "TRELLIS_ACTOR_AUDIENCE": AUDIENCE,
            "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(root / "actor_public.pem"),
            "TRELLIS_ACTOR_PRIVATE_KEY_FILE": str(root / "actor_private.pem"),
            "TRELLIS_CONSOLE_ADDR": f"127.0.0.1:{ports['console']}",
            "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
            "TRELLIS_LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true",
            **{f"TRELLIS_{n.upper()}_ADDR": f"127.0.0.1:{ports[n]}" for n in names},
            **{f"TRELLIS_{n.upper()}_METRICS_ADDR": "" for n in names},
        }
        for name in names:
            migrate(name, f"sqlite+aiosqlite:///{data / f'{name}.db'}")
        generating = time.perf_counter()
        generate_requests(data / "logs.db", ORG, args.rows)
        generated = time.perf_counter() - generating
        processes = [start(["-m", f"services.{name}"], env, root / f"{name}.log") for name in names]
        try:
            for name in names:
                asyncio.run(wait_grpc(env[f"TRELLIS_{name.upper()}_ADDR"]))
            qa, admin = (((("authorization", "Bearer " + mint_actor_token(
                private_pem, issuer=ISSUER, audience=AUDIENCE, user_id="alice", org_id=ORG, permissions=[permission],
                ttl_seconds=3600)),)) for permission in (QA_PERMISSION, ADMIN_PERMISSION))
            subscription_id = asyncio.run(subscribe(env["TRELLIS_WEBHOOKS_ADDR"], admin))
            generate_attempts(data / "webhooks.db", ORG, subscription_id, args.attempts)
            processes.append(start(["-m", "services.console"], env, root / "console.log"))
            wait_http(f"http://127.0.0.1:{ports['console']}/healthz")
            qa_cookie = sign_in(ports["console"], role="qa", org=ORG)
            admin_cookie = sign_in(ports["console"], org=ORG)
            cases = filters(dt.datetime.now(dt.timezone.utc))
            results, sizes = asyncio.run(measure(ports["console"], qa_cookie, admin_cookie, env["TRELLIS_LOGS_ADDR"],
                                                 env["TRELLIS_WEBHOOKS_ADDR"], qa, admin, cases, subscription_id,
                                                 requests, chart_requests, args.only))
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
            nats.stop()

    print(f"console pages over loopback HTTP, one request at a time, {requests} timed after {WARMUP} warm-up, "
          f"{os.cpu_count()} CPUs; {args.rows:,} API log rows (generated in {generated:.1f} s), "
          f"{args.attempts:,} delivery attempts")
    print(f"(charts: {chart_requests} timed after {CHART_WARMUP} warm-up; their rows are the requests counted)")
    print(f"{'page':<26}{'rows':>8}{'server p50':>12}{'server p95':>12}{'gRPC p50':>10}{'gRPC p95':>10}"
          f"{'added p50':>11}{'added p95':>11}{'round trip p95':>16}")
    for name, (trips, server, direct) in results.items():
        print(f"{name:<26}{sizes[name]:>8}{percentile(server, 50):>12.2f}{percentile(server, 95):>12.2f}"
              f"{percentile(direct, 50):>10.2f}{percentile(direct, 95):>10.2f}"
              f"{percentile(server, 50) - percentile(direct, 50):>11.2f}"
              f"{percentile(server, 95) - percentile(direct, 95):>11.2f}{percentile(trips, 95):>16.2f}")
    worst = max(percentile(s, 95) - percentile(d, 95) for _, s, d in results.values())
    print(f"the page adds at most {worst:.1f} ms at p95 to its gRPC calls (target: under 10 ms); load average "
          f"{os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
