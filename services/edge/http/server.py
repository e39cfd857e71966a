"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol over a CoalescingTransport
(services/edge/http/transport.py), so a response's head and body leave in one write at the end of the
loop step that made them (uvicorn writes them apart, two system calls per answer).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.edge.http.transport import CoalescingTransport


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport (passed as uvicorn.Config(http=...))."""

    transport: CoalescingTransport  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def eof_received(self) -> bool | None:
        # The client closed its sending side (a request, then shutdown(SHUT_WR)): on return the
        # transport closes itself, and an answer still held for the end of the step would find it
        # closing and be dropped. It leaves now, before the close, as it would without the holding.
        self.transport.flush()
        return super().eof_received()
