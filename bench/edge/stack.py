"""The real edge for the benchmark, set up the way an operator would run it: identity and
registry as processes (`python -m services.identity`, `python -m services.registry`, SQLite,
pinned to the load core), `INTEGRATIONS` Active integrations made through the registry's gRPC
API, a token for each from the edge's own /oauth/token, and `python -m services.edge` (uvicorn,
one process) pinned alone to the server core, with a route table sending /lots to the upstream.

One integration may make at most 10,000 requests a minute (the registry's cap), about 167 a
second; so the load rotates over every integration's (Authorization, X-API-Key) pair, one pair
per request, and the edge never answers 429 below INTEGRATIONS x 167 requests a second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sys
import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.edge.load import LOAD_CPU, SERVER_CPU, Process, wait_http
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import migrate
from tests.support.ports import free_port

INTEGRATIONS = 60
PER_ORG = 10  # integrations per organisation: under the default cap of 20 live integrations per org
RATE_LIMIT = 10_000  # requests per minute, the registry's maximum
PATH = "/lots"
ISSUER, AUDIENCE = "bench-actors", "trellis"
# Credentials go into a Lua script and request lines verbatim: refuse anything unexpected.
_SAFE = re.compile(r"[A-Za-z0-9._~+/=-]+")


@dataclass(frozen=True)
class EdgeStack:
    url: str  # the edge's URL of the benchmarked GET
    credentials: list[dict[str, str]]  # one {"Authorization", "X-API-Key"} per integration
    pid: int  # the edge process (for its CPU time and the profiler)
    log: Path
    env: dict[str, str]  # the edge's environment, for another edge beside it


@contextlib.contextmanager
def edge_process(env: dict[str, str], log: Path, **overrides: str) -> Iterator[tuple[str, int]]:
    """`python -m services.edge` alone on the server core, on a free port: (base URL, pid)."""
    port = free_port()
    with Process([sys.executable, "-m", "services.edge"], cpu=SERVER_CPU, inherit_env=False, log=log,
                 env={**env, "TRELLIS_EDGE_ADDR": f"127.0.0.1:{port}", **overrides}) as edge:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", edge)
        yield base, edge.proc.pid


def _environment(root: Path, nats_url: str, ports: dict[str, int], routes: Path) -> dict[str, str]:
    private, public = generate_actor_key()
    (root / "actor_private.pem").write_bytes(private)
    (root / "actor_public.pem").write_bytes(public)
    # Nothing from the caller's TRELLIS_* or OTEL_* environment leaks in (no trace exporter).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRELLIS_", "OTEL_"))}
    env.update({
        "TRELLIS_MODE": "embedded", "TRELLIS_DATA_DIR": str(root / "data"), "TRELLIS_NATS_URL": nats_url,
        "TRELLIS_IDENTITY_ADDR": f"127.0.0.1:{ports['identity']}",
        "TRELLIS_REGISTRY_ADDR": f"127.0.0.1:{ports['registry']}",
        "TRELLIS_EDGE_ROUTES_FILE": str(routes),
        "TRELLIS_ACTOR_ISSUER": ISSUER, "TRELLIS_ACTOR_AUDIENCE": AUDIENCE,
        "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(root / "actor_public.pem"),
        "TRELLIS_ACTOR_PRIVATE_KEY_FILE": str(root / "actor_private.pem"),
        "TRELLIS_KEK": base64.b64encode(os.urandom(32)).decode(), "TRELLIS_LOG_LEVEL": "WARNING",
        # Identity and every edge (each on a port of its own) agree on the token issuer.
        "TRELLIS_EDGE_PUBLIC_URL": "http://127.0.0.1:8080",
    })
    return env


def _write_routes(path: Path, upstream_url: str) -> Path:
    path.write_text(f'[[route]]\nprefix = "{PATH}"\nupstream = "{upstream_url}"\nscope = "inventory"\n')
    return path


async def _wait_serving(address: str, service: str, proc: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{service} exited with {proc.proc.returncode}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{service} did not start")


async def _provision(address: str, actor_private: bytes, count: int) -> list[rpb.IssuedCredentials]:
    """`count` integrations, PER_ORG to an organisation, created by one user and approved and
    activated by another (up to 8 at a time)."""
    orgs = math.ceil(count / PER_ORG)
    limit = asyncio.Semaphore(8)

    def actor(user: str, org: str) -> tuple[tuple[str, str], ...]:
        token = mint_actor_token(actor_private, issuer=ISSUER, audience=AUDIENCE, user_id=user, org_id=org,
                                 permissions=[ADMIN_PERMISSION], ttl_seconds=600)
        return (("authorization", f"Bearer {token}"),)

    async with grpc.aio.insecure_channel(address) as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)

        async def one(n: int) -> rpb.IssuedCredentials:
            async with limit:
                return await make(n)

        async def make(n: int) -> rpb.IssuedCredentials:
            org = f"org_bench{n % orgs}"
            alice, bob = actor("usr_alice", org), actor("usr_bob", org)
            created = await registry.CreateIntegration(rpb.CreateIntegrationRequest(
                vendor_id="sap", name=f"bench {n}", owner="usr_alice", description="bench.edge",
                scopes=["inventory:read"], rate_limit_per_minute=RATE_LIMIT), metadata=alice)
            await registry.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob)
            activated = await registry.ActivateIntegration(
                rpb.ActivateIntegrationRequest(integration_id=created.id, request_id=uuid.uuid4().hex), metadata=bob)
            return activated.credentials

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def _token(edge_url: str, client_id: str, client_secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    request = urllib.request.Request(f"{edge_url}/oauth/token", data=b"grant_type=client_credentials", method="POST",
                                     headers={"Authorization": f"Basic {basic}",
                                              "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["access_token"])


def check_all(url: str, credentials: list[dict[str, str]]) -> dict[int, int]:
    """One GET per credential pair: how many answered each status."""
    statuses: dict[int, int] = {}
    for headers in credentials:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


@contextlib.contextmanager
def edge_stack(upstream_url: str, nats_url: str, root: Path, *, integrations: int = INTEGRATIONS,
               prepare: Callable[[Path], None] | None = None) -> Iterator[EdgeStack]:
    """The stack with `integrations` Active integrations; `prepare` gets the registry's database
    after they are made and before the edge starts (a bench's change to what the edge will read)."""
    root.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("identity", "registry")}
    env = _environment(root, nats_url, ports, _write_routes(root / "routes.toml", upstream_url))
    for service in ("identity", "registry"):
        migrate(service, f"sqlite+aiosqlite:///{root / 'data' / f'{service}.db'}")
    with contextlib.ExitStack() as stack:
        services = {}
        for service in ("identity", "registry"):
            services[service] = stack.enter_context(Process(
                [sys.executable, "-m", f"services.{service}"], cpu=LOAD_CPU, env=env, inherit_env=False,
                log=root / f"{service}.log"))
        for service in ("identity", "registry"):
            full_name = f"trellis.{service}.v1.{service.capitalize()}"
            asyncio.run(_wait_serving(f"127.0.0.1:{ports[service]}", full_name, services[service]))
        issued = asyncio.run(_provision(f"127.0.0.1:{ports['registry']}", (root / "actor_private.pem").read_bytes(),
                                        integrations))
        if prepare is not None:
            prepare(root / "data" / "registry.db")
        base, pid = stack.enter_context(edge_process(env, root / "edge.log"))
        credentials = [{"Authorization": f"Bearer {_token(base, c.client_id, c.client_secret)}", "X-API-Key": c.api_key}
                       for c in issued]
        for headers in credentials:
            if not all(_SAFE.fullmatch(v.removeprefix("Bearer ")) for v in headers.values()):
                raise ValueError("a credential has characters the load scripts do not expect")
        yield EdgeStack(base + PATH, credentials, pid, root / "edge.log", env)


def wrk_script(path: Path, credentials: list[dict[str, str]]) -> Path:
    """A wrk Lua script sending the GET with each credential pair in turn, one pair per request
    (requests built once in init(), so wrk's per-request cost is a table lookup)."""
    pairs = ",\n".join("  {" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
                        for headers in credentials)
    path.write_text(f"""-- written by bench.edge: rotate (Authorization, X-API-Key) over {len(credentials)} integrations
local pairs_ = {{
{pairs}
}}
local requests, n, i = {{}}, 0, 0
function init(args)
  for _, headers in ipairs(pairs_) do
    n = n + 1
    requests[n] = wrk.format(nil, nil, headers)
  end
end
function request()
  i = i % n + 1
  return requests[i]
end
""")
    return path
