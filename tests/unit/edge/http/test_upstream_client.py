"""The edge's upstream client against real TCP (and TLS) servers on loopback whose answers each
test writes byte for byte: framing, keep-alive and its limits, stale pooled connections,
timeouts, broken answers, back-pressure, body streaming both ways."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httptools
import pytest
import trustme

from services.edge.http.upstream_client import (BUFFER_BYTES, Body, Origin, UpstreamError, UpstreamPool,
                                                UpstreamTimeout, split_url)


@dataclass
class Seen:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int  # which accepted connection it came on (1, 2, ...)


@dataclass
class _Parsing:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    target: bytes = b""
    done: bool = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


# An answer: the bytes to write, then whether to close the connection.
Answer = tuple[bytes, bool]


class Upstream:
    """A TCP server that parses each request (httptools) and writes what `answer` returns."""

    def __init__(self, answer: Callable[[Seen], Answer | None]) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.server: asyncio.base_events.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Origin:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return Origin("https" if ssl_context else "http", "127.0.0.1" if not ssl_context else "localhost", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self.writers.append(writer)
        try:
            while True:
                state = _Parsing()
                parser = httptools.HttpRequestParser(state)
                while not state.done:
                    data = await reader.read(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                seen = Seen(parser.get_method().decode(), state.target, state.headers, bytes(state.body), number)
                self.seen.append(seen)
                answer = self.answer(seen)
                if answer is None:
                    await reader.read()  # never answers; returns once the client closes
                    return
                data, close = answer
                writer.write(data)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.open -= 1
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def served(answer: Callable[[Seen], Answer | None], **pool_options: float) -> tuple[Upstream, Origin, UpstreamPool]:
    upstream = Upstream(answer)
    origin = await upstream.start()
    return upstream, origin, UpstreamPool(timeout=pool_options.pop("timeout", 5.0), **pool_options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(answer: Callable[[Seen], Answer | None],
                  **pool_options: float) -> AsyncIterator[tuple[Upstream, Origin, UpstreamPool]]:
    """`served`, closed (pool, then server) when the block ends."""
    upstream, origin, pool = await served(answer, **pool_options)
    try:
        yield upstream, origin, pool
    finally:
        await pool.close()
        await upstream.stop()


async def get(pool: UpstreamPool, origin: Origin, target: bytes = b"/x", method: str = "GET",
              headers: list[tuple[bytes, bytes]] | None = None, body: Body | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    response = await pool.request(method, origin, target, headers or [], body)
    try:
        return response.status, response.headers, await response.read()
    finally:
        response.release()


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_keep_alive_connections_are_reused_and_the_request_is_sent_as_given() -> None:
    async with serving(lambda seen: (ok(seen.target), False)) as (upstream, origin, pool):
        for n in range(3):
            status, headers, body = await get(pool, origin, b"/lots/%d?a=1" % n, headers=[(b"x-one", b"1")])
            assert (status, body) == (200, b"/lots/%d?a=1" % n)
            assert (b"content-length", b"11") in headers
        assert upstream.connections == 1
        assert [s.connection for s in upstream.seen] == [1, 1, 1]
        assert (b"host", b"127.0.0.1:%d" % origin.port) in upstream.seen[0].headers
        assert (b"x-one", b"1") in upstream.seen[0].headers


async def test_chunked_and_close_delimited_bodies_are_read_whole() -> None:
    answers = iter([
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", True),
        (ok(b"again"), False),
    ])
    async with serving(lambda seen: next(answers)) as (upstream, origin, pool):
        assert (await get(pool, origin))[2] == b"hello world"
        response = await pool.request("GET", origin, b"/", [])
        assert response.content_length is None
        assert await response.read() == b"until the end"
        response.release()
        assert (await get(pool, origin))[2] == b"again"
        assert upstream.connections == 2  # the close-delimited answer ended its connection


async def test_interim_answers_are_skipped_and_head_answers_end_at_their_headers() -> None:
    def answer(seen: Seen) -> Answer:
        if seen.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", False
        return b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" + ok(b"final"), False

    async with serving(answer) as (upstream, origin, pool):
        status, headers, body = await asyncio.wait_for(get(pool, origin, method="HEAD"), 5)
        assert (status, body, dict(headers)[b"content-length"]) == (200, b"", b"1000")
        status, headers, body = await get(pool, origin)
        assert (status, body) == (200, b"final")
        assert b"link" not in dict(headers)
        assert upstream.connections == 2  # a HEAD answer's connection is not reused


async def test_request_bodies_go_with_their_length_or_chunked() -> None:
    async with serving(lambda seen: (ok(seen.body), False)) as (upstream, origin, pool):
        _, _, body = await get(pool, origin, method="POST", headers=[(b"content-length", b"10")],
                               body=chunks_of(b"01234", b"56789"))
        assert body == b"0123456789"
        assert (b"content-length", b"10") in upstream.seen[0].headers
        assert not any(k == b"transfer-encoding" for k, _ in upstream.seen[0].headers)
        _, _, body = await get(pool, origin, method="PUT", body=chunks_of(b"a" * 70_000, b"b"))
        assert body == b"a" * 70_000 + b"b"
        assert (b"transfer-encoding", b"chunked") in upstream.seen[1].headers
        assert upstream.connections == 1


async def test_a_stale_pooled_connection_is_retried_only_for_a_repeatable_request() -> None:
    # Each connection answers one request; a second request on it is met by a close and no
    # answer, as when the upstream's idle timeout fires just as the edge reuses the connection.
    answered: set[int] = set()

    def answer(seen: Seen) -> Answer:
        if seen.connection in answered:
            return b"", True
        answered.add(seen.connection)
        return ok(b"fresh"), False

    async with serving(answer) as (upstream, origin, pool):
        assert (await get(pool, origin))[2] == b"fresh"
        assert (await get(pool, origin))[2] == b"fresh"  # sent on connection 1, closed; sent again on 2
        assert [s.connection for s in upstream.seen] == [1, 1, 2]
        # Not repeated: a POST might have been acted on. The partner gets a 502 and decides.
        with pytest.raises(UpstreamError):
            await get(pool, origin, method="POST", body=chunks_of(b"x"))
        assert [s.connection for s in upstream.seen] == [1, 1, 2, 2]


async def test_a_whole_body_goes_with_its_length_and_is_sent_again_for_an_idempotent_request() -> None:
    answered: set[int] = set()

    def answer(seen: Seen) -> Answer:
        if seen.connection in answered:
            return b"", True  # the pooled connection closes under the next request
        answered.add(seen.connection)
        return ok(seen.body), False

    async with serving(answer) as (upstream, origin, pool):
        assert (await get(pool, origin, method="PUT", body=b"first"))[2] == b"first"
        assert (await get(pool, origin, method="PUT", body=b"whole"))[2] == b"whole"  # on 1, closed; again on 2
        assert [(s.connection, s.body) for s in upstream.seen] == [(1, b"first"), (1, b"whole"), (2, b"whole")]
        assert (b"content-length", b"5") in upstream.seen[2].headers
        assert not any(k == b"transfer-encoding" for k, _ in upstream.seen[2].headers)
        with pytest.raises(UpstreamError):  # a POST might have been acted on: not repeated
            await get(pool, origin, method="POST", body=b"once")
        with pytest.raises(ValueError):
            await get(pool, origin, method="PUT", headers=[(b"content-length", b"9")], body=b"whole")
        assert len(upstream.seen) == 4


async def test_idle_connections_older_than_the_limit_are_not_reused() -> None:
    async with serving(lambda seen: (ok(), False), idle_seconds=0.0) as (upstream, origin, pool):
        await get(pool, origin)
        await get(pool, origin)
        assert upstream.connections == 2


async def test_a_silent_upstream_times_out_and_a_closed_port_is_refused() -> None:
    async with serving(lambda seen: None, timeout=0.3) as (upstream, origin, pool):
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(get(pool, origin), 5)
        assert upstream.open == 0 or await _until(lambda: upstream.open == 0)  # the edge closed it
    with pytest.raises(UpstreamError) as refused:
        await get(UpstreamPool(timeout=2), origin)
    assert not isinstance(refused.value, UpstreamTimeout)


async def test_broken_answers_are_errors_and_the_connection_is_dropped() -> None:
    answers = iter([
        (b"NOT HTTP AT ALL\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly half", True),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", False),
        (ok(b"fine"), False),
    ])
    async with serving(lambda seen: next(answers)) as (upstream, origin, pool):
        with pytest.raises(UpstreamError, match="not valid HTTP"):
            await get(pool, origin)
        response = await pool.request("GET", origin, b"/", [])
        with pytest.raises(UpstreamError):
            await response.read()
        response.release()
        with pytest.raises(UpstreamError):
            await get(pool, origin)
        assert (await get(pool, origin))[2] == b"fine"
        assert upstream.connections == 4


async def test_a_large_body_streams_with_bounded_buffering() -> None:
    big = bytes(range(256)) * 16_384  # 4 MiB
    async with serving(lambda seen: (ok(big), False)) as (upstream, origin, pool):
        response = await pool.request("GET", origin, b"/", [])
        received, most = bytearray(), 0
        async for chunk in response.chunks():
            received += chunk
            most = max(most, response._buffered)
            await asyncio.sleep(0)  # a slow partner: the upstream must wait for us
        response.release()
        assert bytes(received) == big
        assert most < BUFFER_BYTES + 256 * 1024  # reading paused near the bound, not the whole body held
        assert (await get(pool, origin))[2] == big  # and the connection went back in order
        assert upstream.connections == 1


async def test_no_more_connections_than_the_limit() -> None:
    async with serving(lambda seen: (ok(b"done"), False), max_connections=2) as (upstream, origin, pool):
        bodies = await asyncio.gather(*(get(pool, origin) for _ in range(8)))
        assert [b for _, _, b in bodies] == [b"done"] * 8
        assert upstream.most_open <= 2


async def test_https_origins_verify_the_certificate(tmp_path: object) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    upstream = Upstream(lambda seen: (ok(b"secure"), False))
    origin = await upstream.start(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    try:
        assert (await get(UpstreamPool(timeout=5, ssl_context=trusting), origin))[2] == b"secure"
        with pytest.raises(UpstreamError):  # the system store does not know the test CA
            await get(UpstreamPool(timeout=5), origin)
    finally:
        await upstream.stop()


async def test_targets_that_would_split_the_request_line_are_refused() -> None:
    pool = UpstreamPool(timeout=1)
    for target in (b"/a b", b"/a\r\nx-evil: 1", b"/a\n"):
        with pytest.raises(ValueError):
            await pool.request("GET", Origin("http", "127.0.0.1", 9), target, [])


def test_urls_split_into_origin_and_target() -> None:
    assert split_url("https://api.example.com/base?x=1") == (Origin("https", "api.example.com", 443), b"/base?x=1")
    assert split_url("http://[::1]:8080") == (Origin("http", "::1", 8080), b"/")
    assert Origin("http", "::1", 8080).host_header == b"[::1]:8080"
    assert Origin("https", "a.example", 443).host_header == b"a.example"
    with pytest.raises(ValueError):
        split_url("ftp://a.example/")


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
