"""Server time of the console's integration pages, beside a bare Starlette page in the same run.

It starts a nats-server, identity, registry and the console as their own processes
(`python -m services.<name>`, SQLite, the embedded mode), fills one organisation with 20
integrations of 100 lifecycle history rows each (created, then 99 updates, through the
registry's gRPC API), signs in with the local sign-in, and then times, one request at a time
over keep-alive on loopback, the list page (`/integrations`: two registry calls and a page of
20 cards) and a detail page (`/integrations/<id>`: two registry calls and 100 history rows),
against `bench.console.bare`: a Starlette route returning a fixed page of the same size from
uvicorn configured as the console's is. Every loop is bounded by count; the run takes about a
minute.

    .venv/bin/python -m bench.console [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import html
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import migrate
from services.kit.natsproc import NatsServer
from tests.support.ports import free_port

ISSUER, AUDIENCE, ORG = "bench-actors", "trellis", "org_bench"
INTEGRATIONS, HISTORY_ROWS = 20, 100
WARMUP = 30


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def wait_http(url: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if httpx2.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {deadline:g} s")


async def wait_grpc(address: str, deadline: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{address} did not become ready")


async def fill(registry_address: str, private_pem: bytes) -> str:
    """20 integrations with 100 history rows each; the id of the first."""
    token = mint_actor_token(private_pem, issuer=ISSUER, audience=AUDIENCE, user_id="alice", org_id=ORG,
                             permissions=[ADMIN_PERMISSION], ttl_seconds=3600)
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(registry_address) as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)

        async def one(n: int) -> str:
            created = await registry.CreateIntegration(pb.CreateIntegrationRequest(
                vendor_id="sap", name=f"SAP Procurement Sync {n}", description="benchmark", owner="alice",
                scopes=["inventory:read", "orders:read", "crm:read"]), metadata=metadata)
            for change in range(HISTORY_ROWS - 1):
                await registry.UpdateIntegration(pb.UpdateIntegrationRequest(
                    integration_id=created.id, update_mask=["description"], description=f"change {change}"),
                    metadata=metadata)
            return created.id

        ids = await asyncio.gather(*(one(n) for n in range(INTEGRATIONS)))
    return ids[0]


class Client:
    """One keep-alive connection from http.client (no cookie jar, one write per request), so the
    client adds the same small cost to every page; the session cookie is sent by hand."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.cookie = ""

    def get(self, path: str) -> tuple[int, bytes, str]:
        self._connection.request("GET", path, headers={"Cookie": self.cookie} if self.cookie else {})
        answer = self._connection.getresponse()
        return answer.status, answer.read(), answer.getheader("server-timing") or ""

    def close(self) -> None:
        self._connection.close()


def sign_in(port: int, role: str = "administrator", org: str = ORG) -> str:
    """The session cookie of alice, signed in with the local sign-in."""
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
        form = client.get("/signin").text
        token = html.unescape(re.search(r'name="csrf" value="([^"]+)"', form).group(1))  # type: ignore[union-attr]
        answer = client.post("/signin/local", data={"csrf": token, "next": "/", "user": "alice", "org": org,
                                                     "role": role})
        assert answer.status_code == 303, answer.text[:500]
        return f"trellis_session={client.cookies['trellis_session']}"


def timed(get: Callable[[], tuple[int, bytes, str]], requests: int) -> tuple[list[float], list[float]]:
    """Round-trip times, and the server's own time (its Server-Timing header), in ms."""
    for _ in range(WARMUP):
        assert get()[0] == 200
    times, server = [], []
    for _ in range(requests):
        started = time.perf_counter()
        status, _, server_timing = get()
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200
        timing = re.search(r"app;dur=([0-9.]+)", server_timing)
        if timing:
            server.append(float(timing.group(1)))
    return times, server


async def grpc_times(registry_address: str, private_pem: bytes, first: str, requests: int) -> dict[str, list[float]]:
    """The registry calls each page makes, made straight over gRPC from here (same concurrency)."""
    token = mint_actor_token(private_pem, issuer=ISSUER, audience=AUDIENCE, user_id="alice", org_id=ORG,
                             permissions=[ADMIN_PERMISSION], ttl_seconds=3600)
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(registry_address) as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)

        async def list_calls() -> object:
            return await asyncio.gather(
                registry.ListIntegrations(pb.ListIntegrationsRequest(page_size=50), metadata=metadata),
                registry.ListIntegrations(pb.ListIntegrationsRequest(
                    statuses=[pb.INTEGRATION_STATUS_ACTIVE, pb.INTEGRATION_STATUS_SUSPENDED], page_size=500),
                    metadata=metadata))

        async def detail_calls() -> object:
            return await asyncio.gather(
                registry.GetIntegration(pb.GetIntegrationRequest(integration_id=first), metadata=metadata),
                registry.GetIntegrationHistory(pb.GetIntegrationHistoryRequest(integration_id=first), metadata=metadata))

        results: dict[str, list[float]] = {}
        for name, call in (("list", list_calls), ("detail", detail_calls)):
            for _ in range(WARMUP):
                await call()
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                await call()
                times.append((time.perf_counter() - started) * 1000)
            results[name] = times
    return results


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="timed requests per page (at most 5000)")
    args = parser.parse_args()
    requests = min(max(args.requests, 20), 5000)

    with tempfile.TemporaryDirectory(prefix="trellis-bench-console-") as tmp:
        root = Path(tmp)
        nats = NatsServer(root / "nats").start()
        private_pem, public_pem = generate_actor_key()
        (root / "actor_public.pem").write_bytes(public_pem)
        (root / "actor_private.pem").write_bytes(private_pem)
        ports = {name: free_port() for name in ("identity", "registry", "console", "bare")}
        env = {
            **os.environ, "TRELLIS_MODE": "embedded", "TRELLIS_DATA_DIR": str(root / "data"),
            "TRELLIS_NATS_URL": nats.url, "TRELLIS_ACTOR_ISSUER": ISSUER, "TRELLIS_ACTOR_AUDIENCE": AUDIENCE,
            "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(root / "actor_public.pem"),
            "TRELLIS_ACTOR_PRIVATE_KEY_FILE": str(root / "actor_private.pem"),
            "TRELLIS_IDENTITY_ADDR": f"127.0.0.1:{ports['identity']}",
            "TRELLIS_REGISTRY_ADDR": f"127.0.0.1:{ports['registry']}",
            "TRELLIS_CONSOLE_ADDR": f"127.0.0.1:{ports['console']}",
            "TRELLIS_IDENTITY_METRICS_ADDR": "", "TRELLIS_REGISTRY_METRICS_ADDR": "",
            "TRELLIS_LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true",
        }
        (root / "data").mkdir()
        for service in ("identity", "registry"):
            migrate(service, f"sqlite+aiosqlite:///{root / 'data' / f'{service}.db'}")
        processes = [start(["-m", f"services.{name}"], env, root / f"{name}.log") for name in ("identity", "registry")]
        try:
            asyncio.run(wait_grpc(env["TRELLIS_REGISTRY_ADDR"]))
            asyncio.run(wait_grpc(env["TRELLIS_IDENTITY_ADDR"]))
            filling = time.perf_counter()
            first = asyncio.run(fill(env["TRELLIS_REGISTRY_ADDR"], private_pem))
            filled = time.perf_counter() - filling
            processes.append(start(["-m", "services.console"], env, root / "console.log"))
            wait_http(f"http://127.0.0.1:{ports['console']}/healthz")
            console = Client(ports["console"])
            console.cookie = sign_in(ports["console"])
            size = len(console.get("/integrations")[1])
            processes.append(start(["-m", "bench.console.bare", "--port", str(ports["bare"]), "--bytes", str(size)],
                                   env, root / "bare.log"))
            wait_http(f"http://127.0.0.1:{ports['bare']}/healthz")
            bare = Client(ports["bare"])
            results = {
                "bare Starlette page": timed(lambda: bare.get("/page"), requests),
                f"list ({INTEGRATIONS} cards)": timed(lambda: console.get("/integrations"), requests),
                f"detail ({HISTORY_ROWS} history rows)": timed(lambda: console.get(f"/integrations/{first}"), requests),
            }
            detail_size = len(console.get(f"/integrations/{first}")[1])
            console.close()
            bare.close()
            straight = asyncio.run(grpc_times(env["TRELLIS_REGISTRY_ADDR"], private_pem, first, requests))
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
          f"{os.cpu_count()} CPUs; data: {INTEGRATIONS} integrations x {HISTORY_ROWS} history rows "
          f"(filled in {filled:.1f} s); list page {size:,} bytes, detail page {detail_size:,} bytes")
    print(f"{'page':<28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'server p50':>12}{'server p95':>12}")
    for name, (times, server) in results.items():
        server_cells = f"{percentile(server, 50):>12.2f}{percentile(server, 95):>12.2f}" if server else f"{'-':>12}{'-':>12}"
        print(f"{name:<28}{percentile(times, 50):>9.2f}{percentile(times, 95):>9.2f}{percentile(times, 99):>9.2f}"
              f"{statistics.fmean(times):>9.2f}{server_cells}")
    for name, times in straight.items():
        print(f"{'its registry calls: ' + name:<28}{percentile(times, 50):>9.2f}{percentile(times, 95):>9.2f}"
              f"{percentile(times, 99):>9.2f}{statistics.fmean(times):>9.2f}")
    bare_p95 = percentile(results["bare Starlette page"][0], 95)
    for name, (times, server) in list(results.items())[1:]:
        print(f"{name}: round trip p95 {percentile(times, 95):.1f} ms ({percentile(times, 95) - bare_p95:.1f} ms above the "
              f"bare page), server time p95 {percentile(server, 95):.1f} ms (target: under 50 ms)")


if __name__ == "__main__":
    main()
