"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol over a CoalescingTransport
(services/edge/transport.py), so a response's head and body leave in one write at the end of the
loop step that made them (uvicorn writes them apart, two system calls per answer).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.edge.transport import CoalescingTransport


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport (passed as uvicorn.Config(http=...))."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
