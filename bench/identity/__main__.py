"""Tokens issued per second and API keys verified per second through real gRPC, each beside the
bare cryptographic operation measured in the same run, and their ratio.

Identity runs as its own process (`python -m services.identity`) on loopback with SQLite (or,
with `--backend postgresql`, a throwaway PostgreSQL server started as tests/support/postgres.py
does: Debian's `postgresql` package, run as the postgres user in a temporary directory, fsync
off) and a nats-server of its own; a few concurrent callers in this process drive it for a few seconds.
Every loop is bounded by time and by count, so the run stops by itself (well under a minute).

    .venv/bin/python -m bench.identity [--seconds 4] [--callers 4] [--backend sqlite|postgresql] [--checkout DIR]

After identity it measures an empty unary call (bench/identity/empty.py: the standard health
service on a grpcio aio server with nothing else) with the same callers: the ceiling any RPC
reaches on the machine, printed beside identity's rates.

Beside each rate it prints the identity process's own CPU time per call (user + system, from
/proc): on a shared, noisy machine that figure moves far less than a rate does, so it is the
one to compare two versions by. `--checkout DIR` runs identity (and its migration) from another
checkout of this repository, e.g. a `git worktree` at an older commit, with this run's bench.
`--cprofile FILE` runs identity under cProfile (slower: compare rates only without it) and prints
the Python function calls it made per gRPC call: a count, not a time, so two versions compare
by it exactly however busy the machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import pstats
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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
from tests.support.postgres import PostgresServer

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


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(call: Callable[[int], Awaitable[object]], *, callers: int, seconds: float,
                   server_cpu: Callable[[], float]) -> tuple[float, float, float]:
    """(calls per second, the server's CPU microseconds per call, calls made) of one workload."""
    before, start = server_cpu(), time.perf_counter()
    rate = await grpc_rate(call, callers=callers, seconds=seconds)
    calls = rate * (time.perf_counter() - start) + 20  # grpc_rate's 20 warm-up calls
    return rate, (server_cpu() - before) * 1e6 / max(calls, 1), calls


async def measure(address: str, actor_private: bytes, *, callers: int, seconds: float,
                  server_cpu: Callable[[], float]) -> dict[str, float]:
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

        tokens, tokens_cpu, token_calls = await measured(issue_token, callers=callers, seconds=seconds,
                                                         server_cpu=server_cpu)
        verified, keys_cpu, key_calls = await measured(verify_key, callers=callers, seconds=seconds,
                                                       server_cpu=server_cpu)

    # The ceiling of a unary call: the same callers against an empty gRPC server (bench.identity.empty).
    empty = subprocess.Popen([sys.executable, "-m", "bench.identity.empty"], stdout=subprocess.PIPE, text=True)
    try:
        assert empty.stdout is not None
        empty_port = int(await asyncio.to_thread(empty.stdout.readline))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{empty_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()

            async def check(i: int) -> object:
                return await health.Check(request)

            empty_rate, empty_cpu, _ = await measured(check, callers=callers, seconds=seconds,
                                                      server_cpu=lambda: cpu_seconds(empty.pid))
    finally:
        stop(empty)

    # The bare operations, on the same machine in the same run.
    rsa_key = signing.generate_private_key("RS256")
    now = int(time.time())
    claims = {"iss": "x", "aud": "y", "sub": "trc_x", "scope": "inventory:read orders:write", "iat": now, "exp": now + 3600, "jti": "j"}
    sign = bare_rate(lambda: jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "sk_bench"}), seconds / 2)
    api_key = "grq_live_" + secrets.token_urlsafe(32)
    stored = hashlib.sha256(api_key.encode()).hexdigest()
    digest = bare_rate(lambda: hmac.compare_digest(hashlib.sha256(api_key.encode()).hexdigest(), stored), seconds / 2)
    return {"tokens": tokens, "sign": sign, "keys": verified, "digest": digest, "tokens_cpu": tokens_cpu,
            "keys_cpu": keys_cpu, "calls": token_calls + key_calls + INTEGRATIONS,
            "empty": empty_rate, "empty_cpu": empty_cpu}


def run_identity(args: argparse.Namespace, root: Path, nats_url: str, pg: PostgresServer | None,
                 seconds: float) -> dict[str, float]:
    """Migrate identity's database, run identity as its own process and measure it."""
    actor_private, actor_public = generate_actor_key()
    (root / "actor.pem").write_bytes(actor_public)
    port = free_port()
    env = {
        **os.environ,
        "TRELLIS_DATA_DIR": str(root / "data"),
        "TRELLIS_NATS_URL": nats_url,
        "TRELLIS_IDENTITY_ADDR": f"127.0.0.1:{port}",
        "TRELLIS_ACTOR_ISSUER": ISSUER,
        "TRELLIS_ACTOR_AUDIENCE": AUDIENCE,
        "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(root / "actor.pem"),
        "TRELLIS_KEK": base64.b64encode(os.urandom(32)).decode(),
        "TRELLIS_LOG_LEVEL": "WARNING",
    }
    url = pg.create_database("identity") if pg is not None else f"sqlite+aiosqlite:///{root / 'data' / 'identity.db'}"
    if pg is not None:
        env["TRELLIS_IDENTITY_DATABASE_URL"] = url
    if args.checkout:
        env["PYTHONPATH"] = str(args.checkout.resolve())
        subprocess.run([sys.executable, "-c", f"from services.kit.db import migrate; migrate('identity', {url!r})"],
                       env=env, cwd=args.checkout, check=True)
    else:
        migrate("identity", url)
    profiler = ["-m", "cProfile", "-o", str(args.cprofile.resolve())] if args.cprofile else []
    server = subprocess.Popen([sys.executable, *profiler, "-m", "services.identity"], env=env, cwd=args.checkout)
    try:
        result = asyncio.run(measure(f"127.0.0.1:{port}", actor_private, callers=args.callers, seconds=seconds,
                                     server_cpu=lambda: cpu_seconds(server.pid)))
    finally:
        stop(server)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.identity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per gRPC workload (max 20)")
    parser.add_argument("--callers", type=int, default=4, help="concurrent gRPC callers")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="identity's database: SQLite (the embedded default) or a throwaway PostgreSQL")
    parser.add_argument("--checkout", type=Path, help="run identity from this checkout (before/after comparisons)")
    parser.add_argument("--cprofile", type=Path, help="run identity under cProfile, its stats written here")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.5), 20.0)

    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        root = Path(tmp)
        with contextlib.ExitStack() as stack:
            nats = NatsServer(root / "nats").start()
            stack.callback(nats.stop)
            pg = PostgresServer().start() if args.backend == "postgresql" else None
            if pg is not None:
                stack.callback(pg.stop)
            result = run_identity(args, root, nats.url, pg, seconds)

    where = f", identity from {args.checkout}" if args.checkout else ""
    backend = "PostgreSQL (fsync off)" if args.backend == "postgresql" else "SQLite"
    print(f"identity over gRPC on loopback, {backend}, {args.callers} concurrent callers, {seconds:g} s per workload, "
          f"{os.cpu_count()} CPUs{where}")
    print(f"{'workload':<28}{'through gRPC /s':>18}{'bare operation /s':>20}{'ratio':>9}{'server CPU µs/call':>21}")
    rows = [
        ("IssueToken (RS256 JWT)", result["tokens"], result["sign"], result["tokens_cpu"]),
        ("VerifyApiKey (SHA-256)", result["keys"], result["digest"], result["keys_cpu"]),
    ]
    for name, through, bare, cpu in rows:
        print(f"{name:<28}{through:>18,.0f}{bare:>20,.0f}{through / bare:>9.4f}{cpu:>21,.0f}")
    print(f"{'empty unary call':<28}{result['empty']:>18,.0f}{'':>20}{'':>9}{result['empty_cpu']:>21,.0f}")
    print("bare operations: RS256 sign of the token claims (2048-bit key); SHA-256 + hmac.compare_digest of an API key")
    print(f"empty unary call: grpc.health Check on a server with nothing else, the same callers: the ceiling of any RPC "
          f"here; VerifyApiKey / empty {result['keys'] / result['empty']:.2f}, IssueToken / empty {result['tokens'] / result['empty']:.2f}")
    if args.cprofile:
        stats = pstats.Stats(str(args.cprofile))
        total = stats.total_calls  # type: ignore[attr-defined]  # set by Stats, not declared in its stub
        print(f"under cProfile: {total:,} Python function calls in identity, {total / result['calls']:,.0f} per gRPC call "
              f"({result['calls']:,.0f} calls, start-up and shutdown included)")


if __name__ == "__main__":
    main()
