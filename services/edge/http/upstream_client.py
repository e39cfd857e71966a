"""The edge's HTTP/1.1 client for its upstreams: pooled keep-alive connections on asyncio
protocols, responses parsed by httptools (llhttp, the parser uvicorn already runs for the edge).

Why not a general client: aiohttp cost about 140 µs of CPU per proxied request on the edge's
core, half the edge (docs/benchmarks.md "## Edge"). A reverse proxy needs a small part of what a
general client does: one request at a time on a connection, no redirects, cookies,
decompression or content negotiation; what it needs is here, with the parsing left to llhttp.

What it does: HTTP and HTTPS origins (certificates verified); request bodies given whole (sent
with their length) or streamed as given (with the caller's Content-Length, else chunked); responses framed by Content-Length, chunked
or the end of the connection, streamed with back-pressure (reading pauses while more than
`BUFFER_BYTES` wait); interim 1xx answers skipped; trailers dropped; HEAD answers end at their
headers (and close their connection: httptools cannot tell llhttp to expect no body). A
connection goes back to the pool only once its response was read to the end and both sides
keep it alive; idle connections older than `idle_seconds` are closed rather than reused (an
upstream that closes idle connections first, uvicorn after 5 s, would race us), and an idempotent
request without a body or with a whole one that finds its pooled connection closed under it is
sent once more on a new one.
Timeouts: connecting, waiting for room in a full pool, and each wait for the upstream (its
headers, the next body bytes, room to write) are bounded by `timeout`.

Framing is never guessed, so that an answer cannot reach the wrong request: llhttp refuses
contradictory lengths; bytes after an answer's end (a body longer than its Content-Length, an
answer nobody asked for) retire the connection; a request body must match the Content-Length the
caller gives (a whole body gets its own when none is given; a streamed one goes chunked, and an
empty chunk is never sent: it would end the body); a
line break in the method, target or a header is refused before anything is sent. The caller's
headers carry no hop-by-hop or framing headers other than a body's Content-Length (the proxy
strips them; checking every header here would cost the common path).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httptools

from services.edge.http.transport import CoalescingTransport

Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")
# A request body: whole, or streamed as it comes.
Body = bytes | AsyncIterator[bytes]

# Response bytes buffered before the connection stops reading from the upstream.
BUFFER_BYTES = 256 * 1024
# Bytes an upstream may send before its answer's head is complete (interim answers included);
# llhttp itself sets no bound.
MAX_HEAD_BYTES = 64 * 1024
# Sent again on a new connection when a pooled one turns out closed (RFC 9110 §9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the exchange (a 502 for the partner)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect, answer or take data within the timeout (a 504)."""


class _Stale(UpstreamError):
    """A pooled connection was closed by the upstream before it answered anything."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    host_header: bytes = field(init=False, compare=False, repr=False)  # the Host header's value

    def __post_init__(self) -> None:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "host_header", (host if self.port == default else f"{host}:{self.port}").encode("idna"))


def split_url(url: str) -> tuple[Origin, bytes]:
    """An http(s) URL as its origin and request target (path and query, as given)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port), target.encode("latin-1")


class Response:
    """An upstream's answer: status and headers (names in lower case) at once, the body as it comes."""

    __slots__ = ("status", "headers", "content_length", "_conn", "_chunks", "_buffered", "_waiter", "_done",
                 "_error", "_released")

    def __init__(self, conn: _Connection, status: int, headers: Headers, length: bytes | None) -> None:
        self.status = status
        self.headers = headers
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._released = False

    async def read(self) -> bytes:
        """The whole body (callers check `content_length` first: this does not bound it)."""
        if self._done and self._error is None:  # all arrived with the head: the common small answer
            parts = list(self._chunks)
            self._chunks.clear()
            self._buffered = 0
        else:
            parts = [chunk async for chunk in self.chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < BUFFER_BYTES:
                    self._conn.resume_reading()
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                self._waiter = self._conn.loop.create_future()
                await self._conn.wait(self._waiter)

    def release(self) -> None:
        """Hand the connection back: to the pool when the exchange ended cleanly, else closed."""
        if not self._released:
            self._released = True
            self._conn.finished(reusable=self._done and self._error is None)

    # Called by the connection.
    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= BUFFER_BYTES:
            self._conn.pause_reading()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._done and self._error is None:
            if error is None:
                self._done = True
            else:
                self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One connection to an origin, one exchange at a time."""

    def __init__(self, pool: UpstreamPool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False  # has completed an exchange (so it may have gone stale in the pool)
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._headers: Headers = []
        self._length: bytes | None = None
        self._head_request = False
        self._reading_paused = False
        self._can_write: asyncio.Future[None] | None = None
        self._received_any = False
        self._head_bytes = 0  # received while no answer's head is complete
        self._keep_alive = False
        self._busy = False  # an exchange is under way
        self.waiting: asyncio.Future[Any] | None = None  # what the exchange waits for, until `deadline`
        self.deadline = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A request's head and body chunks leave at the end of the loop step (one write).
        # A wrapper of the real transport, typed as an asyncio.Transport (transport.py).
        self.transport = CoalescingTransport(transport, self.loop)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self.close()  # bytes nobody asked for: the connection can no longer be trusted
            return
        self._received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else exc
            self._fail(UpstreamError(f"the upstream's answer is not valid HTTP/1.1: {cause}"))
            self.close()
            return
        if self._response is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(UpstreamError(f"the upstream's answer has a head over {MAX_HEAD_BYTES} bytes"))
                self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self._response
        if response is not None and self._head is None and not response._done and response.content_length is None \
                and not any(k == b"transfer-encoding" for k, _ in response.headers) and exc is None:
            response._finish()  # a body framed by the end of the connection
            return
        if self._head is not None and not self._received_any and self.used:
            self._fail(_Stale("the pooled connection was closed by the upstream"))
        else:
            self._fail(UpstreamError("the upstream closed the connection" + (f": {exc}" if exc else "")))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._can_write = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._response is not None:
            # A second answer to one request: the first ran past its framing, or the upstream
            # answers ahead. Where this one ends can no longer be trusted: never reused.
            raise UpstreamError("the upstream sent more than one answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._length = value
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers, self._headers, length, self._length = self._headers, [], self._length, None
        if 100 <= status < 200:
            if status == 101:
                raise UpstreamError("the upstream switched protocols, which the edge does not proxy")
            return  # an interim answer (103 Early Hints, a stray 100 Continue): the real one follows
        response = self._response = Response(self, status, headers, length)
        head, self._head = self._head, None
        if self._head_request:
            response._finish()  # a HEAD answer has no body, whatever its Content-Length says
            self._keep_alive = False
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None and not self._head_request:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._headers:  # a chunked body's trailers: dropped, never the next answer's headers
            self._headers, self._length = [], None
        response = self._response
        if response is None:
            return  # the end of an interim answer
        if not self._head_request:
            self._keep_alive = self._parser.should_keep_alive()
        response._finish()

    # Used by the pool and the response.
    async def exchange(self, head: bytes, head_request: bool, body: Body | None, length: int | None) -> Response:
        """Send a request (`head` as built by the pool; `length` None sends a streamed `body` chunked)."""
        assert self.transport is not None
        self._response, self._received_any, self._keep_alive, self._busy = None, False, False, True
        self._head_bytes = 0
        self._head_request = head_request
        self._head = answer = self.loop.create_future()
        self.transport.write(head)
        if isinstance(body, bytes):
            if body:
                self.transport.write(body)  # with the head, in one write (CoalescingTransport)
        elif body is not None:
            try:
                await self._send_body(body, length)
            except BaseException:
                self._head = None  # nobody waits for the answer any more (nor for its error)
                answer.cancel()
                raise
        return await self.wait(answer)

    async def _send_body(self, body: AsyncIterator[bytes], length: int | None) -> None:
        assert self.transport is not None
        sent = 0
        async for chunk in body:
            if self.closed:
                if self._response is not None:
                    return  # answered before the whole body (a 413, a 401) and hung up: that answer stands
                raise UpstreamError("the upstream closed the connection while the request body was sent")
            if not chunk:
                continue  # as a chunk, it would end the body
            sent += len(chunk)
            if length is None:
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            elif sent > length:
                raise ValueError(f"the request body is longer than its Content-Length ({length})")
            else:
                self.transport.write(chunk)
            if self._can_write is not None:
                await self.wait(self._can_write)
        if length is None:
            self.transport.write(b"0\r\n\r\n")
        elif sent != length:
            raise ValueError(f"the request body is shorter than its Content-Length ({length})")

    async def wait(self, future: asyncio.Future[T]) -> T:
        """`future`'s result, or UpstreamTimeout once the pool's timeout passes (the connection is
        closed). The pool's sweeper enforces the deadline: no timer per wait."""
        if future.done():
            return future.result()
        self.deadline = self.loop.time() + self.pool.timeout
        self.waiting = future
        self.pool.sweep_soon()
        try:
            return await future
        finally:
            self.waiting = None

    def time_out(self) -> None:
        future = self.waiting
        if future is not None and not future.done():
            future.set_exception(UpstreamTimeout(f"no answer from the upstream within {self.pool.timeout:g}s"))
        self.close()

    def _fail(self, error: UpstreamError) -> None:
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        if self._response is not None:
            self._response._finish(error)

    def _wake_writer(self) -> None:
        waiter, self._can_write = self._can_write, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def finished(self, *, reusable: bool) -> None:
        self._busy = False
        if reusable and self._keep_alive and not self.closed and not self._reading_paused:
            self._response = None
            self.used = True
            self.pool.give_back(self)
        else:
            self.close()
            self.pool.forget(self)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


def _body_length(headers: Headers) -> int | None:
    """A request body's Content-Length as the caller gives it (None: none, the body goes chunked)."""
    length = None
    for key, value in headers:
        key = key.lower()
        if key == b"transfer-encoding":
            raise ValueError("the client frames a request body itself: no Transfer-Encoding from the caller")
        if key == b"content-length":
            if length is not None or not value.strip().isdigit():
                raise ValueError("a request body needs one Content-Length that is a number")
            length = int(value)
    return length


class UpstreamPool:
    """Keep-alive connections per origin, at most `max_connections` to each."""

    def __init__(self, *, timeout: float, max_connections: int = 1024, idle_seconds: float = 4.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self._ssl = ssl_context  # for https origins; the system's trust store when None (made once)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: dict[Origin, int] = {}
        self._waiters: dict[Origin, collections.deque[asyncio.Future[None]]] = {}
        self._all: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def sweep_soon(self) -> None:
        """Make sure the sweeper that times out waits past their deadline runs."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="upstream-timeouts")

    async def _sweep(self) -> None:
        """Every `tick` (a quarter of the timeout, at most 1 s), time out the waits past their
        deadline; a timeout fires at most one tick late. Ends when nothing waits."""
        tick = min(1.0, self.timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now, waiting = loop.time(), False
            for conn in list(self._all):
                if conn.waiting is not None:
                    waiting = True
                    if now >= conn.deadline:
                        conn.time_out()
            if not waiting:
                return

    async def request(self, method: str, origin: Origin, target: bytes, headers: Headers,
                      body: Body | None = None) -> Response:
        """Send one request; the caller reads the response and then calls `release()` on it.

        Raises UpstreamTimeout or UpstreamError when no answer starts; ValueError when the request
        cannot be framed (a line break in the head, a body that does not match its length)."""
        if b" " in target:
            raise ValueError("the request target holds a space")
        lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", origin.host_header, b"\r\n"]
        for key, value in headers:
            lines += (key, b": ", value, b"\r\n")
        length = None if body is None else _body_length(headers)
        whole = body if isinstance(body, bytes) else None
        sized = chunked = False
        if whole is not None:
            if length is not None and length != len(whole):
                raise ValueError(f"the request body is not as long as its Content-Length ({length})")
            if length is None:  # a whole body without the caller's length: the client gives it
                lines.append(b"content-length: %d\r\n" % len(whole))
                sized = True
            length = len(whole)
        elif body is not None and length is None:
            lines.append(b"transfer-encoding: chunked\r\n")
            chunked = True
        lines.append(b"\r\n")
        head = b"".join(lines)
        # One line per header: a line break inside one would start a header (or a request) of
        # the caller's making. A bare CR is left to the upstream (RFC 9112 §2.2: never a line end).
        if head.count(b"\n") != len(headers) + 3 + chunked + sized:
            raise ValueError("the method, the target or a header holds a line break")
        head_request = method == "HEAD"
        while True:
            conn = await self._acquire(origin)
            try:
                return await conn.exchange(head, head_request, body, length)
            except _Stale:
                if (body is not None and whole is None) or method not in _IDEMPOTENT:
                    raise UpstreamError("the upstream closed the connection before answering") from None
                continue  # nothing was consumed: the same request on another connection
            except BaseException:
                conn.close()
                self.forget(conn)
                raise

    async def _acquire(self, origin: Origin) -> _Connection:
        deadline = None
        while True:
            idle = self._idle.get(origin)
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.idle_seconds:
                    return conn
                conn.close()
                self.forget(conn)
            if self._open.get(origin, 0) < self.max_connections:
                break
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout
            await self._wait_for_room(origin, deadline)
        self._open[origin] = self._open.get(origin, 0) + 1
        try:
            return await self._connect(origin)
        except BaseException:
            self._open[origin] -= 1
            self._wake(origin)
            raise

    async def _wait_for_room(self, origin: Origin, deadline: float) -> None:
        """Until a connection to `origin` is handed back or closed (a timer only when the pool is full)."""
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(origin, collections.deque())
        waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake(origin)  # woken, then cancelled or timed out: the room goes to the next in line
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(f"no connection to the upstream free within {self.timeout:g}s") from None
            raise

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()  # loads the trust store: once, not per connection
            context = self._ssl
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, origin), origin.host, origin.port, ssl=context),
                self.timeout)
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"could not connect to the upstream within {self.timeout:g}s") from None
        except OSError as exc:
            raise UpstreamError(f"could not connect to the upstream: {exc.strerror or exc}") from exc
        if conn.closed:  # lost before it was counted: `forget` could not take it off
            raise UpstreamError("the upstream closed the connection as it opened")
        self._all.add(conn)
        return conn

    def give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._wake(conn.origin)

    def forget(self, conn: _Connection) -> None:
        """`conn` is closed: it no longer counts towards its origin's connections."""
        if conn in self._all:
            self._all.discard(conn)
            self._open[conn.origin] -= 1
            idle = self._idle.get(conn.origin)
            if idle and conn in idle:
                idle.remove(conn)
            self._wake(conn.origin)

    def _wake(self, origin: Origin) -> None:
        waiters = self._waiters.get(origin)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
