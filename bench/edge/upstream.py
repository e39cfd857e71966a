"""A minimal, fast HTTP/1.1 upstream for the edge benchmark: every request gets the same small JSON.

Raw asyncio protocol (uvloop when installed), keep-alive and pipelining, request bodies read by
Content-Length and discarded. It is a load target, not a web server: no chunked request bodies.

    python -m bench.edge.upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import signal

BODY = b'{"lots":[{"id":"lot_1","name":"Blue Dream","quantity":12}],"next":null}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + BODY
)


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.skip = 0  # body bytes of the current request still to discard
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        replies = 0
        while True:
            if self.skip:
                taken = min(self.skip, len(buffer))
                buffer, self.skip = buffer[taken:], self.skip - taken
                if self.skip:
                    break
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buffer = buffer[:end], buffer[end + 4:]
            self.skip = _content_length(head)
            replies += 1
        self.buffer = buffer
        if replies and self.transport is not None:
            self.transport.write(RESPONSE * replies)


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    value = lower[at + 17:].split(b"\r\n", 1)[0]
    return int(value.strip() or 0)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
