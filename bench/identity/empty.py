"""The ceiling of any unary call on this machine: a grpcio aio server with the standard health
service and nothing else (no interceptors, no database, no tracing), as its own process. It
prints its port and serves until SIGTERM; bench.identity measures it with the same callers as
identity's RPCs, so identity's rates can be read against what an empty call reaches.

    python -m bench.identity.empty
"""

from __future__ import annotations

import asyncio
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio


async def serve() -> None:
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(serve())
