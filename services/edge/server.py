"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol, with a response's status
line and headers sent in one write with its first body bytes.

uvicorn writes a response's status line and headers when the app sends `http.response.start`,
and its body when the app sends `http.response.body`: two `send` system calls for every answer,
each a trip through the loopback or network stack. The edge sends both messages in the same
step of the event loop, so the transport holds the head until the next write and sends both at
once; a head with no body in that step is sent at its end (`call_soon`), so nothing waits for
a slow body. Order is kept and `close()` sends what is held first.
Measured in docs/benchmarks.md "## Edge".
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport that sends a response's head together with the write that follows it."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:  # a held status line and headers go with the first body bytes
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 "):  # a response starts: hold it until its body comes
            self._held = data
            self._loop.call_soon(self.flush)  # or until the end of this step, if no body does
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # pause_reading, get_extra_info, set_protocol, ...
        return getattr(self._transport, name)


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport (passed as uvicorn.Config(http=...))."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
