"""Tokens issued per second and API keys verified per second through real gRPC, each beside the
bare cryptographic operation measured in the same run, and their ratio.

Identity runs as its own process (`python -m services.identity`) on loopback with SQLite and a
nats-server of its own; a few concurrent callers in this process drive it for a few seconds.
Every loop is bounded by time and by count, so the run stops by itself (well under a minute).

    .venv/bin/python -m bench.identity [--seconds 4] [--callers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import jwt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.identity.adapters import signing
from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import migrate
from services.kit.natsproc import NatsServer
from tests.support.ports import free_port

MAX_CALLS_PER_CALLER = 50_000
INTEGRATIONS = 20
ISSUER, AUDIENCE = "bench-actors", "trellis"


def bare_rate(operation: Callable[[], object], seconds: float, max_ops: int = 1_000_000) -> float:
    """Operations per second of `operation` alone, in a bounded loop."""
    for _ in range(10):
        operation()
    done, start = 0, time.perf_counter()
    deadline = start + seconds
    while done < max_ops and time.perf_counter() < deadline:
        operation()
        done += 1
    return done / (time.perf_counter() - start)


async def grpc_rate(call: Callable[[int], Awaitable[object]], *, callers: int, seconds: float) -> float:
    """Completed calls per second with `callers` concurrent callers for about `seconds`."""
    for i in range(20):
        await call(i)
    deadline = time.perf_counter() + seconds
    counts = [0] * callers

    async def caller(n: int) -> None:
        while counts[n] < MAX_CALLS_PER_CALLER and time.perf_counter() < deadline:
            await call(n * MAX_CALLS_PER_CALLER + counts[n])
            counts[n] += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    return sum(counts) / (time.perf_counter() - start)


async def wait_serving(channel: grpc.aio.Channel, timeout: float = 30.0) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service="trellis.identity.v1.Identity"), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("identity did not start")


async def measure(address: str, actor_private: bytes, *, callers: int, seconds: float) -> dict[str, float]:
    def token_for(permission: str) -> tuple[tuple[str, str], ...]:
        token = mint_actor_token(actor_private, issuer=ISSUER, audience=AUDIENCE, user_id="usr_bench", org_id="org_bench",
                                 permissions=[permission], ttl_seconds=600)
        return (("authorization", f"Bearer {token}"),)

    admin, edge = token_for(ADMIN_PERMISSION), token_for(EDGE_PERMISSION)
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_serving(channel)
        stub = identity_pb2_grpc.IdentityStub(channel)
        issued = [
            (await stub.IssueCredentials(
                pb.IssueCredentialsRequest(integration_id=f"int_bench_{i}", scopes=["inventory:read", "orders:write"], request_id=f"r{i}"),
                metadata=admin,
            )).credentials
            for i in range(INTEGRATIONS)
        ]
        grants = [pb.IssueTokenRequest(client_id=c.client_id, client_secret=c.client_secret) for c in issued]
        keys = [pb.VerifyApiKeyRequest(api_key=c.api_key) for c in issued]

        async def issue_token(i: int) -> object:
            return await stub.IssueToken(grants[i % len(grants)], metadata=edge)

        async def verify_key(i: int) -> object:
            return await stub.VerifyApiKey(keys[i % len(keys)], metadata=edge)

        tokens = await grpc_rate(issue_token, callers=callers, seconds=seconds)
        verified = await grpc_rate(verify_key, callers=callers, seconds=seconds)

    # The bare operations, on the same machine in the same run.
    rsa_key = signing.generate_private_key("RS256")
    now = int(time.time())
    claims = {"iss": "x", "aud": "y", "sub": "trc_x", "scope": "inventory:read orders:write", "iat": now, "exp": now + 3600, "jti": "j"}
    sign = bare_rate(lambda: jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "sk_bench"}), seconds / 2)
    api_key = "grq_live_" + secrets.token_urlsafe(32)
    stored = hashlib.sha256(api_key.encode()).hexdigest()
    digest = bare_rate(lambda: hmac.compare_digest(hashlib.sha256(api_key.encode()).hexdigest(), stored), seconds / 2)
    return {"tokens": tokens, "sign": sign, "keys": verified, "digest": digest}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.identity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per gRPC workload (max 20)")
    parser.add_argument("--callers", type=int, default=4, help="concurrent gRPC callers")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.5), 20.0)

    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        root = Path(tmp)
        nats = NatsServer(root / "nats").start()
        actor_private, actor_public = generate_actor_key()
        (root / "actor.pem").write_bytes(actor_public)
        port = free_port()
        env = {
            **os.environ,
            "TRELLIS_DATA_DIR": str(root / "data"),
            "TRELLIS_NATS_URL": nats.url,
            "TRELLIS_IDENTITY_ADDR": f"127.0.0.1:{port}",
            "TRELLIS_ACTOR_ISSUER": ISSUER,
            "TRELLIS_ACTOR_AUDIENCE": AUDIENCE,
            "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(root / "actor.pem"),
            "TRELLIS_KEK": base64.b64encode(os.urandom(32)).decode(),
            "TRELLIS_LOG_LEVEL": "WARNING",
        }
        migrate("identity", f"sqlite+aiosqlite:///{root / 'data' / 'identity.db'}")
        server = subprocess.Popen([sys.executable, "-m", "services.identity"], env=env)
        try:
            result = asyncio.run(measure(f"127.0.0.1:{port}", actor_private, callers=args.callers, seconds=seconds))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
            nats.stop()

    print(f"identity over gRPC on loopback, SQLite, {args.callers} concurrent callers, {seconds:g} s per workload, "
          f"{os.cpu_count()} CPUs")
    print(f"{'workload':<28}{'through gRPC /s':>18}{'bare operation /s':>20}{'ratio':>9}")
    rows = [
        ("IssueToken (RS256 JWT)", result["tokens"], result["sign"]),
        ("VerifyApiKey (SHA-256)", result["keys"], result["digest"]),
    ]
    for name, through, bare in rows:
        print(f"{name:<28}{through:>18,.0f}{bare:>20,.0f}{through / bare:>9.4f}")
    print("bare operations: RS256 sign of the token claims (2048-bit key); SHA-256 + hmac.compare_digest of an API key")


if __name__ == "__main__":
    main()
