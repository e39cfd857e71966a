"""The whole suite as an operator runs it, for the memory benchmarks: `trellis up
--no-example-upstream` (the installed console script: nats-server and every service as its own
process, SQLite, the embedded mode) in a temporary data directory, every listener on a free
port, the edge's route table sending /lots to bench.edge.upstream, and webhooks trusting the
test CA of an HTTPS receiver on loopback. The processes are found as the launcher's children
(/proc/<pid>/task/*/children), named by their command line.

Then what the load needs: INTEGRATIONS Active integrations in ORGS organisations (created by
one user, approved and activated by another, through the registry's gRPC API, as
bench/edge/stack.py makes them), a token for each from the edge's /oauth/token, a webhook
subscription of the console's organisation to the receiver, and a console session signed in
with the local sign-in.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx2

from bench.edge.load import REPO
from services.contracts.trellis.identity.v1 import identity_pb2
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as wpb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, mint_actor_token
from tests.support.ports import free_ports

TRELLIS = Path(sys.executable).parent / "trellis"
READY_LINE = "Trellis is ready."  # services.cli.launcher.READY_LINE
READY_TIMEOUT_SECONDS = 120.0
ISSUER, AUDIENCE = "bench-actors", "trellis"
INTEGRATIONS, ORGS = 30, 3  # 10 per organisation (the default cap is 20 live ones); 30 x 167 req/s before a 429
RATE_LIMIT = 10_000  # requests per minute, the registry's maximum
CONSOLE_ORG = "org_mem0"  # the console's user, the webhook subscription and the audited updates
PATH = "/lots"
SERVICES = ("identity", "registry", "webhooks", "logs", "edge", "console")


@dataclass(frozen=True)
class Suite:
    root: Path
    env: dict[str, str]
    pids: dict[str, int]  # "nats-server", "launcher" and each service -> pid
    private_pem: bytes  # the launcher's actor key (data dir/secrets)

    def address(self, service: str) -> str:
        return self.env[f"TRELLIS_{service.upper()}_ADDR"]

    def url(self, service: str) -> str:
        return f"http://{self.address(service)}"


def environment(root: Path, ca_file: Path, upstream_url: str) -> dict[str, str]:
    """The caller's environment without TRELLIS_*, OTEL_* or proxies; every listener on a free port."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRELLIS_", "OTEL_")) and not k.lower().endswith("_proxy")}
    ports = iter(free_ports(2 * len(SERVICES) + 1))
    for service in SERVICES:
        env[f"TRELLIS_{service.upper()}_ADDR"] = f"127.0.0.1:{next(ports)}"
        env[f"TRELLIS_{service.upper()}_METRICS_ADDR"] = f"127.0.0.1:{next(ports)}"
    routes = root / "routes.toml"
    routes.write_text(f'[[route]]\nprefix = "{PATH}"\nupstream = "{upstream_url}"\nscope = "inventory"\n')
    env.update({
        "TRELLIS_DATA_DIR": str(root / "data"), "TRELLIS_NATS_URL": f"nats://127.0.0.1:{next(ports)}",
        "TRELLIS_EDGE_PUBLIC_URL": f"http://{env['TRELLIS_EDGE_ADDR']}",
        "TRELLIS_EDGE_ROUTES_FILE": str(routes), "TRELLIS_ACTOR_ISSUER": ISSUER, "TRELLIS_ACTOR_AUDIENCE": AUDIENCE,
        "TRELLIS_WEBHOOKS_CA_BUNDLE": str(ca_file), "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
        "TRELLIS_LOG_LEVEL": "WARNING",
    })
    return env


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def name_of(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [a.decode() for a in argv if a]
    if words and words[0].endswith("nats-server"):
        return "nats-server"
    for i, word in enumerate(words[:-1]):
        if word == "-m" and words[i + 1].startswith("services."):
            return words[i + 1].removeprefix("services.")
    return " ".join(words)[:40]


@contextlib.contextmanager
def running_suite(root: Path, ca_file: Path, upstream_url: str) -> Iterator[Suite]:
    """`trellis up` until the block ends (SIGINT, as Ctrl-C; SIGKILL if it does not stop)."""
    env = environment(root, ca_file, upstream_url)
    out = root / "up.out"
    with open(out, "wb") as stdout, open(root / "up.err", "wb") as stderr:
        up = subprocess.Popen([str(TRELLIS), "up", "--no-example-upstream"], env=env, cwd=REPO,
                              stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while READY_LINE not in out.read_text(errors="replace"):
            if up.poll() is not None:
                raise RuntimeError(f"`trellis up` exited with {up.returncode}:\n{(root / 'up.err').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"`trellis up` was not ready after {READY_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.1)
        pids = {"launcher": up.pid} | {name_of(child): child for child in children_of(up.pid)}
        missing = [name for name in ("nats-server", *SERVICES) if name not in pids]
        if missing:
            raise RuntimeError(f"`trellis up` has no {', '.join(missing)} among its children: {pids}")
        yield Suite(root, env, pids, (root / "data" / "secrets" / "actor_private.pem").read_bytes())
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()


def actor(suite: Suite, org: str, user: str = "usr_alice") -> tuple[tuple[str, str], ...]:
    token = mint_actor_token(suite.private_pem, issuer=ISSUER, audience=AUDIENCE, user_id=user, org_id=org,
                             permissions=[ADMIN_PERMISSION], ttl_seconds=7200)
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Provisioned:
    credentials: list[dict[str, str]]  # one {"Authorization", "X-API-Key"} per integration
    integration_ids: list[str]  # of the console's organisation; the first is the detail page's
    subscription_id: str
    signing_secret: str
    cookie: str  # the console session


async def _integrations(suite: Suite) -> list[tuple[str, str, identity_pb2.Credentials]]:
    """(org, id, credentials) of INTEGRATIONS Active integrations, ORGS organisations."""
    async with grpc.aio.insecure_channel(suite.address("registry")) as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)
        made = []
        for n in range(INTEGRATIONS):
            org = f"org_mem{n % ORGS}"
            alice, bob = actor(suite, org), actor(suite, org, "usr_bob")
            created = await registry.CreateIntegration(rpb.CreateIntegrationRequest(
                vendor_id="sap", name=f"memory {n}", owner="usr_alice", description="bench.memory",
                scopes=["inventory:read"], rate_limit_per_minute=RATE_LIMIT), metadata=alice)
            await registry.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob)
            activated = await registry.ActivateIntegration(
                rpb.ActivateIntegrationRequest(integration_id=created.id, request_id=uuid.uuid4().hex), metadata=bob)
            made.append((org, created.id, activated.credentials))
        return made


def _token(edge_url: str, client_id: str, client_secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    request = urllib.request.Request(f"{edge_url}/oauth/token", data=b"grant_type=client_credentials", method="POST",
                                     headers={"Authorization": f"Basic {basic}",
                                              "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return str(json.loads(response.read())["access_token"])


async def _subscription(suite: Suite, receiver_url: str) -> wpb.CreateSubscriptionResponse:
    async with grpc.aio.insecure_channel(suite.address("webhooks")) as channel:
        answer: wpb.CreateSubscriptionResponse = await webhooks_pb2_grpc.WebhooksStub(channel).CreateSubscription(
            wpb.CreateSubscriptionRequest(url=receiver_url, activity_types=["lot.created"]),
            metadata=actor(suite, CONSOLE_ORG))
        return answer


def sign_in(console_url: str, org: str) -> str:
    """The session cookie of alice as the administrator of `org`, through the local sign-in."""
    with httpx2.Client(base_url=console_url, trust_env=False, timeout=10) as client:
        form = client.get("/signin").text
        token = html.unescape(re.search(r'name="csrf" value="([^"]+)"', form).group(1))  # type: ignore[union-attr]
        answer = client.post("/signin/local", data={"csrf": token, "next": "/", "user": "alice", "org": org,
                                                     "role": "administrator"})
        if answer.status_code != 303:
            raise RuntimeError(f"the console's local sign-in answered {answer.status_code}: {answer.text[:300]}")
        return f"trellis_session={client.cookies['trellis_session']}"


def provision(suite: Suite, receiver_url: str) -> Provisioned:
    made = asyncio.run(_integrations(suite))
    credentials = [{"Authorization": f"Bearer {_token(suite.url('edge'), c.client_id, c.client_secret)}",
                    "X-API-Key": c.api_key} for _, _, c in made]
    subscription = asyncio.run(_subscription(suite, receiver_url))
    return Provisioned(credentials, [i for org, i, _ in made if org == CONSOLE_ORG], subscription.subscription.id,
                       subscription.signing_secret, sign_in(suite.url("console"), CONSOLE_ORG))
