"""Flush consolidation: the writes a connection makes within one step of the event loop reach
the socket as one write, at the end of that step.

Every `write` on an asyncio (uvloop) transport is a `send` system call when the socket has room,
and on loopback or a real network each is a trip through the TCP stack. The edge writes more than
once per exchange (uvicorn writes a response's head and its body apart; the upstream client a
request's head and its body chunks), and under load a step of the loop answers many connections:
sending each connection's bytes once, at the end of the step, costs one system call instead of
several and lets the peers' answers arrive in batches. The delay is the rest of the current step,
which is the time the loop needs for the work it already has; measured in docs/benchmarks.md
"## Edge" (about 30 µs less CPU per proxied request at saturation).

A lingering close (`linger` set, for a connection the server refused): close() sends what is
held and an end-of-file, and closes the socket only once the peer has closed its side or
`linger` seconds have passed. Closing a socket that still has unread bytes from the peer makes
the kernel answer with a reset, which can destroy the answer before the client reads it; in the
meantime the protocol reads and drops what the client still sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

Data = bytes | bytearray | memoryview

if TYPE_CHECKING:
    # What the type checker is told: a Transport, which it is to its users (what it does not
    # define itself, __getattr__ takes from the real one). At run time it subclasses nothing, so
    # that every attribute it does not hold reaches the real transport.
    _Transport = asyncio.Transport
else:
    _Transport = object


class CoalescingTransport(_Transport):
    """A transport whose writes within one loop step reach the socket as one write."""

    __slots__ = ("_transport", "_loop", "_held", "_closed", "linger")

    def __init__(self, transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop) -> None:
        # A stream protocol's transport writes: asyncio types connection_made's argument as the base.
        self._transport = cast(asyncio.Transport, transport)
        self._loop = loop
        self._held: list[Data] | None = None
        self._closed = False
        self.linger = 0.0  # seconds close() waits for the peer's end-of-file; 0: closes at once

    def write(self, data: Data) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)

    def writelines(self, lines: Iterable[Data]) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def is_closing(self) -> bool:
        return self._closed or self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        transport = self._transport
        if self.linger and not self._closed and not transport.is_closing() and transport.can_write_eof():
            self._closed = True
            transport.write_eof()
            self._loop.call_later(self.linger, transport.close)  # unless the peer's end-of-file closes it first
            return
        self._closed = True
        transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    # abort() drops what is held with the transport's own buffer (the flush finds it closing).
    def __getattr__(self, name: str) -> Any:  # pause_reading, get_extra_info, set_protocol, ...
        return getattr(self._transport, name)
