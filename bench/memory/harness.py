"""Everything the memory benchmarks run against, started and stopped together: the upstream
behind the edge (bench.edge.upstream), a test CA and the HTTPS receiver it certifies
(bench.webhooks's Receiver, in this process), the suite under `trellis up` (bench.memory.suite)
and what the load needs in it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path


from bench.edge.load import LOAD_CPU, Process, wait_http
from bench.memory.suite import Provisioned, Suite, provision, running_suite
from bench.webhooks.__main__ import Receiver, tls_receiver
from tests.support.ports import free_port


@dataclass(frozen=True)
class Harness:
    suite: Suite
    provisioned: Provisioned
    receiver: Receiver
    rotate: Path  # the credential pairs, one per request in turn (bench.memory.edgeload --rotate)


@contextlib.asynccontextmanager
async def harness(root: Path) -> AsyncIterator[tuple[Suite, "Ready"]]:
    """The suite running (yielded at once, to measure it idle) and `Ready`, which provisions it."""
    ca_file, receiver, runner, receiver_port = await tls_receiver(root)
    port = free_port()
    with contextlib.ExitStack() as stack:
        try:
            upstream = stack.enter_context(Process([sys.executable, "-m", "bench.edge.upstream", "--port", str(port)],
                                                   cpu=LOAD_CPU))
            wait_http(f"http://127.0.0.1:{port}/", upstream)
            suite = await asyncio.to_thread(stack.enter_context, running_suite(root, ca_file, f"http://127.0.0.1:{port}"))
            yield suite, Ready(suite, receiver, f"https://127.0.0.1:{receiver_port}/hook", root)
        finally:
            await asyncio.to_thread(stack.close)
            await runner.cleanup()


@dataclass
class Ready:
    suite: Suite
    receiver: Receiver
    receiver_url: str
    root: Path

    async def provision(self) -> Harness:
        provisioned = await asyncio.to_thread(provision, self.suite, self.receiver_url)
        self.receiver.secret = provisioned.signing_secret
        rotate = self.root / "credentials.json"
        rotate.write_text(json.dumps(provisioned.credentials))
        return Harness(self.suite, provisioned, self.receiver, rotate)
