"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol (passed as
uvicorn.Config(http=serving(limits))) with what a public edge needs and uvicorn leaves out.

- Writes go through a CoalescingTransport (services/edge/http/transport.py): a response's head
  and body leave in one write at the end of the loop step that made them.
- A request the protocol refuses is still answered by the application, so that it carries a
  request id and the JSON error and is in the API log: the ASGI scope carries the refusal
  (`scope["extensions"][REFUSAL]["error"]`, an EdgeError the application raises); a head that
  cannot be taken (malformed, too large, too slow, one connection too many) becomes a request of
  its own whose method and path are what could be read; a body that turns out malformed or too
  slow makes `receive()` raise it. uvicorn answers those with a plain-text 400 and no id.
- Framing the edge cannot trust ends the connection after the answer: anything llhttp refuses,
  HTTP/1.0 with Transfer-Encoding (RFC 9112 section 6.1), versions other than 1.0 and 1.1, an
  Upgrade (llhttp stops parsing after one, and httptools takes what follows for the new
  protocol: one with a body is refused; uvicorn left the connection hanging), CONNECT.
  What the client still sends is read and dropped while the close lingers.
- Read deadlines: a request's head within `header_seconds` (from the connection, or from its
  first byte on a kept-alive one), its body within `body_seconds` from the end of its head; time
  spent with reading paused by the server (back-pressure, a pipelined request waiting its turn,
  a 100-continue not yet sent) does not count. A head over `head_bytes` is refused before it ends.
  One sweeper per server enforces the deadlines every tick: no timer per request.
- At most `per_address` open connections per client address (trusted proxies excepted); the
  next one is answered 429 at once and closed.
- `send()` raises ClientDisconnected (an OSError, as ASGI 2.4 says) once the client has gone,
  so the application can log what the client got (services/edge/http/asgi.py, Responder).

This leans on uvicorn's HttpToolsProtocol and RequestResponseCycle internals (their attributes,
`_start_asgi_task`, `on_response_complete`): tests/integration/edge/http and tests/unit/edge/http
are the gate for an upgrade (README.md beside this file; the pin in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from services.edge.domain.errors import EdgeError
from services.edge.http.asgi import REFUSAL
from services.edge.http.transport import CoalescingTransport

# How long a refused connection's close waits for the client's end-of-file (transport.py).
LINGER_SECONDS = 2.0
# Allowed for the request line on top of the header bound (RFC 9112 section 3 asks for 8,000).
REQUEST_LINE_BYTES = 8 * 1024

# Where a connection is in its current request.
IDLE, HEAD, BODY, REFUSED = range(4)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HttpLimits:
    """The bounds the protocol enforces (the edge's TRELLIS_EDGE_* settings)."""

    header_seconds: float = 10.0
    body_seconds: float = 60.0
    per_address: int = 256
    head_bytes: int = 16 * 1024 + REQUEST_LINE_BYTES
    # Peers whose connections are not counted: trusted proxies carry many clients' connections.
    uncounted: tuple[IPNetwork, ...] = ()

    def counts(self, address: str) -> bool:
        if not self.uncounted:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True
        return not any(ip.version == net.version and ip in net for net in self.uncounted)


class ClientDisconnected(OSError):
    """send() on a connection the client has closed (ASGI 2.4): nothing more reaches it."""


class Connections:
    """One server's connections: how many each address holds, and the sweeper that enforces the
    read deadlines (each tick, a quarter of the shorter timeout and at most 1 s, so a deadline
    passes at most one tick late)."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.tick = min(1.0, limits.header_seconds / 4, limits.body_seconds / 4)
        self._per_address: dict[str, int] = {}
        self._open: set[EdgeHttpProtocol] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def opened(self, conn: EdgeHttpProtocol) -> bool:
        """Count `conn`; False when its address already holds as many connections as it may."""
        self._open.add(conn)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = conn.loop.create_task(self._sweep(conn.loop), name="edge-read-deadlines")
        address = conn.client[0] if conn.client else ""
        if not self.limits.counts(address):
            return True
        held = self._per_address.get(address, 0)
        if held >= self.limits.per_address:
            return False
        self._per_address[address] = held + 1
        conn.counted = address
        return True

    def closed(self, conn: EdgeHttpProtocol) -> None:
        self._open.discard(conn)
        address = conn.counted
        if address is not None:
            conn.counted = None
            held = self._per_address.pop(address) - 1
            if held:
                self._per_address[address] = held

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._open:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for conn in list(self._open):
                if conn.deadline and now >= conn.deadline:
                    conn.expired(now)


def serving(limits: HttpLimits) -> Callable[..., EdgeHttpProtocol]:
    """The protocol factory for uvicorn.Config(http=...): one server's connections share `limits`."""
    return functools.partial(EdgeHttpProtocol, connections=Connections(limits))


class EdgeCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, with refusals raised from receive() and ASGI 2.4's
    OSError from send() once the client has gone."""

    refusal: EdgeError | None = None

    async def receive(self) -> Any:
        message = await super().receive()
        if self.refusal is not None:
            raise self.refusal
        return message

    # Not a coroutine of its own: it hands back uvicorn's (one frame less on every message).
    def send(self, message: Any) -> Coroutine[Any, Any, None]:
        if self.disconnected:
            raise ClientDisconnected("the client closed the connection")
        return super().send(message)

    async def send_500_response(self) -> None:
        if not self.disconnected:
            await super().send_500_response()


def _extension(error: EdgeError) -> dict[object, object]:
    """The scope extension that carries a refusal (ASGI extensions are dictionaries)."""
    return {"error": error}


class _Refused(Exception):
    """Raised from a parser callback to stop llhttp once a request is refused."""


def malformed(why: str) -> EdgeError:
    return EdgeError("malformed_request", f"the request is not valid HTTP/1.1 ({why}); the connection is closed")


def _parser_reason(exc: httptools.HttpParserError) -> str:
    if isinstance(exc, httptools.HttpParserInvalidURLError):
        return "the request target holds a character that must be percent-encoded"
    if isinstance(exc, httptools.HttpParserCallbackError) or not exc.args:
        return "it could not be parsed"
    return str(exc.args[0]).rstrip(".")  # llhttp's reason: "Duplicate Content-Length", ...


def _head_refusal(version: str, method: str, headers: list[tuple[bytes, bytes]], upgrade: bool) -> EdgeError | None:
    """Why a request whose head parsed is refused anyway, or None."""
    if version not in ("1.1", "1.0"):
        return malformed(f"HTTP/{version} is not served; send HTTP/1.1")
    if version == "1.0" and any(name == b"transfer-encoding" for name, _ in headers):
        return malformed("HTTP/1.0 has no Transfer-Encoding; send HTTP/1.1, or a Content-Length")
    if method == "CONNECT":
        return EdgeError("method_not_allowed", "the API is not a forward proxy: CONNECT is not served")
    if upgrade and any((name == b"content-length" and value.strip() not in (b"", b"0")) or name == b"transfer-encoding"
                       for name, value in headers):
        # httptools takes what follows an upgrade request's head for the new protocol, not its body.
        return malformed("a request that asks to upgrade the connection cannot carry a body here; send it without Upgrade")
    return None


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's refusals, read deadlines and connection limit."""

    # A wrapper of the real transport, typed as an asyncio.Transport (services/edge/http/transport.py).
    transport: CoalescingTransport
    cycle: EdgeCycle

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, connections: Connections) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._connections = connections
        self._limits = connections.limits
        self.counted: str | None = None  # the address this connection counts against
        self.deadline = 0.0  # when the current read phase ends (0: none)
        self._phase = IDLE
        self._head_bytes = 0  # received since the current head began (at least)
        self._fresh = True  # nothing received yet
        self.url = b""  # uvicorn sets it when a message begins; a refusal may come before one

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))
        self._await_head()
        if not self._connections.opened(self):
            self._refuse_head(EdgeError("too_many_connections", f"this address already holds {self._limits.per_address} "
                                        "connections to the API; send requests over fewer keep-alive connections",
                                        headers=((b"retry-after", b"1"),)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.closed(self)
        self.deadline = 0.0
        super().connection_lost(exc)

    def eof_received(self) -> None:
        # The client closed its sending side (a request, then shutdown(SHUT_WR)): on return the
        # transport closes itself, and an answer still held for the end of the step would find it
        # closing and be dropped. It leaves now, before the close, as it would without the holding.
        self.transport.flush()
        super().eof_received()

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == REFUSED:
            return  # the answer is given or on its way; the rest is dropped while the close lingers
        self._fresh = False
        if phase == IDLE:
            self._await_head()
        self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp parses nothing after an Upgrade (or CONNECT) request: answer it, then close.
            if self._phase != REFUSED:
                self.cycle.keep_alive = False
                self._stop_reading()
        except httptools.HttpParserError as exc:
            if self._phase == REFUSED:
                return  # a callback refused the request and stopped the parser
            error = malformed(_parser_reason(exc))
            self._refuse_body(error) if self._phase == BODY else self._refuse_head(error)
        else:
            if self._phase == HEAD and self._head_bytes > self._limits.head_bytes:
                self._refuse_head(EdgeError("request_headers_too_large", "the request's head is larger than "
                                            f"{self._limits.head_bytes} bytes; send fewer or shorter headers"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["asgi"]["spec_version"] = "2.4"  # send() raises once the client has gone
        if self._phase == IDLE:  # a pipelined request, in the bytes of the one before
            self._await_head()

    def on_headers_complete(self) -> None:
        # uvicorn's own, with the refusals (and neither WebSocket upgrades nor limit_concurrency,
        # which the edge does not configure).
        parser, scope = self.parser, self.scope
        version = parser.get_http_version()
        method = scope["method"] = parser.get_method().decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        refusal = None
        if version != "1.1" or method == "CONNECT" or parser.should_upgrade():  # not the common case
            refusal = _head_refusal(version, method, self.headers, parser.should_upgrade())
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            if refusal is None:
                raise
            parsed = None  # CONNECT's authority form: refused anyway
        raw_path = parsed.path if parsed is not None else b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = (parsed.query if parsed is not None else None) or b""
        keep_alive = refusal is None and version != "1.0" and parser.should_keep_alive()
        cycle = self._cycle(scope, keep_alive, self.expect_100_continue and refusal is None)
        self._phase, self.deadline, self._head_bytes = BODY, self.loop.time() + self._limits.body_seconds, 0
        if refusal is None:
            self._run(cycle)
            return
        scope["extensions"] = {REFUSAL: _extension(refusal)}
        cycle.more_body = False
        self._run(cycle)
        self._stop_reading()
        raise _Refused()  # llhttp parses nothing more: the body's framing cannot be trusted

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.url, self.headers = b"", []  # a later refusal must not take this request's id or path
        if self._phase != REFUSED:
            self._phase, self.deadline = IDLE, 0.0

    # Deadlines (called by the sweeper)
    def expired(self, now: float) -> None:
        phase = self._phase
        if phase == HEAD:
            if self.flow.read_paused:  # a pipelined head waits for the answers before it
                self.deadline = now + self._limits.header_seconds
            elif self._fresh:
                self.transport.close()  # nothing was asked: nothing to answer
            else:
                self._refuse_head(EdgeError("request_timeout", f"the request's head did not arrive within "
                                            f"{self._limits.header_seconds:g} s; the connection is closed"))
        elif phase == BODY:
            if self.flow.read_paused or self.cycle.waiting_for_100_continue:  # the edge is not reading yet
                self.deadline = now + self._limits.body_seconds
            else:
                self._refuse_body(EdgeError("request_timeout", f"the request's body did not arrive within "
                                            f"{self._limits.body_seconds:g} s; the connection is closed"))
        else:
            self.deadline = 0.0

    # Refusals
    def _await_head(self) -> None:
        self._phase, self.deadline, self._head_bytes = HEAD, self.loop.time() + self._limits.header_seconds, 0

    def _stop_reading(self) -> None:
        """Nothing more on this connection is parsed: what comes is dropped, and the close after
        the answer lingers so that the answer is not lost to a reset."""
        self._phase, self.deadline = REFUSED, 0.0
        self.transport.linger = LINGER_SECONDS
        self.flow.resume_reading()

    def _refuse_head(self, error: EdgeError) -> None:
        """Answer a request whose head could not be taken, after the answers before it, and close."""
        method = path = ""
        if self.url:  # the method and at least part of the target were read
            method = self.parser.get_method().decode("ascii", "replace")
            try:
                path = httptools.parse_url(self.url).path.decode("ascii")
            except httptools.HttpParserError:
                pass
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": self.asgi_version, "spec_version": "2.4"}, "http_version": "1.1",
            "server": self.server, "client": self.client, "scheme": self.scheme, "root_path": self.root_path,
            "headers": list(self.headers or ()), "state": self.app_state.copy(), "method": method, "path": path,
            "raw_path": path.encode("ascii"), "query_string": b"", "extensions": {REFUSAL: _extension(error)},
        }
        cycle = self._cycle(scope, keep_alive=False, expect_100_continue=False)
        cycle.more_body = False
        self._run(cycle)
        self._stop_reading()

    def _refuse_body(self, error: EdgeError) -> None:
        """The current request's body is refused: the application answers with `error` if it has
        not begun (the scope), else receive() raises it; the connection closes after the answer."""
        cycle = self.cycle
        self._stop_reading()
        if cycle.response_complete:
            self.transport.close()  # already answered (without its body): nothing more to say
            return
        cycle.scope.setdefault("extensions", {})[REFUSAL] = _extension(error)
        cycle.refusal, cycle.keep_alive, cycle.waiting_for_100_continue = error, False, False
        cycle.message_event.set()

    def _cycle(self, scope: Any, keep_alive: bool, expect_100_continue: bool) -> EdgeCycle:
        return EdgeCycle(scope=scope, transport=self.transport, flow=self.flow, logger=self.logger,
                         access_logger=self.access_logger, access_log=self.access_log,
                         default_headers=self.server_state.default_headers, message_event=asyncio.Event(),
                         expect_100_continue=expect_100_continue, keep_alive=keep_alive,
                         on_response=self.on_response_complete)

    def _run(self, cycle: EdgeCycle) -> None:
        """Start `cycle` now, or after the answers before it (pipelining), as uvicorn does."""
        existing, self.cycle = self.cycle, cycle
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)
        else:
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))
