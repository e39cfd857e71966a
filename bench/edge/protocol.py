"""What the edge's server protocol costs per request over uvicorn's own: both serve the same
hello-world ASGI app in this process, fed a partner's GET (its headers as the edge benchmark
sends them) through a transport that only records, so the figure is the protocol's Python and
llhttp alone, without sockets, the kernel or a load generator. Rounds alternate between the two;
medians are printed.

    .venv/bin/python -m bench.edge.protocol            # options: --requests 20000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from services.edge.http.server import HttpLimits, serving

REQUEST = (b"GET /lots HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
           b"Authorization: Bearer " + b"e" * 700 + b"\r\nX-API-Key: " + b"k" * 40 + b"\r\n\r\n")
BODY = b'{"hello":"world"}'


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"17")]})
    await send({"type": "http.response.body", "body": BODY})


class Recording(asyncio.Transport):
    """A transport that takes every write and wakes whoever waits for the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote: asyncio.Future[None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.wrote is not None and not self.wrote.done():
            self.wrote.set_result(None)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def round_of(make: Any, requests: int) -> float:
    """CPU µs per request of `requests` kept-alive requests on one connection."""
    config = uvicorn.Config(hello, ws="none", lifespan="off", log_config=None, access_log=False)
    config.load()
    loop = asyncio.get_running_loop()
    protocol = make(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Recording()
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        transport.wrote = loop.create_future()
        protocol.data_received(REQUEST)
        await transport.wrote
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


async def main(requests: int, rounds: int) -> None:
    edge = serving(HttpLimits())
    results: dict[str, list[float]] = {"uvicorn's HttpToolsProtocol": [], "the edge's EdgeHttpProtocol": []}
    await round_of(HttpToolsProtocol, 1000)  # warm up both
    await round_of(edge, 1000)
    for _ in range(rounds):
        results["uvicorn's HttpToolsProtocol"].append(await round_of(HttpToolsProtocol, requests))
        results["the edge's EdgeHttpProtocol"].append(await round_of(edge, requests))
    print(f"{requests:,} kept-alive GETs of {len(REQUEST)} bytes per round, {rounds} rounds, CPU µs per request:")
    medians = {}
    for name, values in results.items():
        medians[name] = statistics.median(values)
        print(f"  {name:32} {medians[name]:7.2f}   [{', '.join(f'{v:.2f}' for v in values)}]")
    plain, ours = medians.values()
    print(f"  the edge's protocol costs {ours - plain:+.2f} µs per request ({(ours / plain - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    uvloop.run(main(args.requests, args.rounds))
