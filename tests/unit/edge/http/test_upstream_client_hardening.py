"""The upstream client under a hostile or broken upstream and hostile callers: framing that can
no longer be trusted retires the connection, request framing cannot be bent by the body or the
headers, the pool's room is never lost or waited for without bound, cancellation leaks nothing,
TLS names the origin. Real TCP and TLS servers on loopback (tests/unit/edge/http/test_upstream_client.py)."""

from __future__ import annotations

import asyncio
import gc
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
import trustme

from services.edge.http.upstream_client import MAX_HEAD_BYTES, Origin, UpstreamError, UpstreamPool, UpstreamTimeout
from tests.support.waiting import eventually
from tests.unit.edge.http.test_upstream_client import Answer, Seen, Upstream, chunks_of, get, ok, served, serving


async def until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, timeout=5, interval=0.01, what=what)


def open_count(pool: UpstreamPool, origin: Origin) -> int:
    return pool._open.get(origin, 0)


# Framing from the upstream


async def test_bytes_after_a_complete_answer_retire_the_connection() -> None:
    # The first answer runs past its Content-Length with the start of a second answer whose
    # length swallows the next real answer's head: reused, the connection would hand the
    # second request the answer hidden in the body of its real one.
    real_body = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"
    real = ok(real_body)
    real_head = real[: len(real) - len(real_body)]
    first = ok(b"hi") + b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(real_head)
    answers = iter([(first, False), (real, False), (real, False)])
    async with serving(lambda seen: next(answers)) as (upstream, origin, pool):
        assert (await get(pool, origin))[2] == b"hi"
        status, _, body = await asyncio.wait_for(get(pool, origin), 5)
        assert (status, body) == (200, real_body)
        assert [s.connection for s in upstream.seen] == [1, 2]


async def test_no_body_for_204_and_304_and_contradictory_lengths_are_refused() -> None:
    answers = iter([
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),
        (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\n\r\n", False),
        (ok(b"after"), False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", False),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello", False),
    ])
    async with serving(lambda seen: next(answers)) as (upstream, origin, pool):
        assert (await get(pool, origin))[::2] == (204, b"")
        assert (await get(pool, origin))[::2] == (304, b"")
        assert (await get(pool, origin))[2] == b"after"
        assert upstream.connections == 1  # bodiless answers leave the connection in step
        for _ in range(2):  # two lengths; a length and chunked: which one frames the body?
            with pytest.raises(UpstreamError):
                await get(pool, origin)
        assert (await get(pool, origin))[::2] == (204, b"")  # its stray body retires the connection
        await until(lambda: open_count(pool, origin) == 0, "the 204's connection closed")


async def test_the_trailers_of_an_answer_never_become_headers_of_the_next() -> None:
    # Trailers are dropped (the proxy passes none on); kept, they would open the next answer on
    # the connection, which may be another partner's.
    answers = iter([
        ((b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"
          b"x-request-id: first\r\nset-cookie: session=first-callers\r\n\r\n"), False),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False),
    ])
    async with serving(lambda seen: next(answers)) as (upstream, origin, pool):
        assert (await get(pool, origin))[2] == b"hi"
        response = await pool.request("GET", origin, b"/", [])
        try:
            assert response.headers == [(b"transfer-encoding", b"chunked")]
            assert await response.read() == b"ok"
        finally:
            response.release()
        assert upstream.connections == 1


async def test_an_endless_answer_head_is_refused() -> None:
    huge = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (4 * MAX_HEAD_BYTES) + b"\r\ncontent-length: 2\r\n\r\nhi"
    async with serving(lambda seen: (huge, False)) as (upstream, origin, pool):
        with pytest.raises(UpstreamError, match="head"):
            await get(pool, origin)
        await until(lambda: open_count(pool, origin) == 0, "the connection closed")


async def test_bytes_sent_to_an_idle_connection_never_reach_the_next_request() -> None:
    async with serving(lambda seen: (ok(b"real"), False)) as (upstream, origin, pool):
        await get(pool, origin)
        upstream.writers[0].write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        await until(lambda: open_count(pool, origin) == 0, "the idle connection dropped")
        assert (await get(pool, origin))[::2] == (200, b"real")
        assert upstream.connections == 2


# Framing towards the upstream


async def test_an_empty_body_chunk_does_not_end_a_chunked_request() -> None:
    async with serving(lambda seen: (ok(seen.body), False)) as (upstream, origin, pool):
        _, _, body = await get(pool, origin, method="POST", body=chunks_of(b"abc", b"", b"def"))
        assert body == b"abcdef"
        assert len(upstream.seen) == 1


async def test_a_body_longer_than_its_content_length_is_not_sent() -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
    async with serving(lambda seen: (ok(seen.target), False)) as (upstream, origin, pool):
        with pytest.raises(ValueError, match="longer"):
            await get(pool, origin, method="POST", headers=[(b"content-length", b"3")],
                      body=chunks_of(b"abc" + smuggled))
        await until(lambda: upstream.open == 0, "the upstream saw the connection close")
        assert all(s.target != b"/smuggled" for s in upstream.seen)


async def test_a_body_shorter_than_its_content_length_fails_at_once() -> None:
    async with serving(lambda seen: (ok(), False)) as (upstream, origin, pool):
        with pytest.raises(ValueError, match="shorter"):
            await asyncio.wait_for(get(pool, origin, method="PUT", headers=[(b"content-length", b"10")],
                                       body=chunks_of(b"abc")), 3)
        with pytest.raises(ValueError):  # the client frames a body itself
            await get(pool, origin, method="PUT", headers=[(b"transfer-encoding", b"chunked")], body=chunks_of(b"a"))
        assert (await get(pool, origin))[2] == b"hello"


async def test_line_breaks_in_a_header_are_refused_before_anything_is_sent() -> None:
    async with serving(lambda seen: (ok(), False)) as (upstream, origin, pool):
        for headers in ([(b"x-a", b"1\r\nx-injected: yes")], [(b"x-a", b"1\nx-injected: yes")],
                        [(b"x-a\r\nx-injected", b"yes")]):
            with pytest.raises(ValueError):
                await get(pool, origin, headers=headers)
        assert (await get(pool, origin, headers=[(b"x-a", b"1")]))[2] == b"hello"
        assert [s.headers for s in upstream.seen if (b"x-injected", b"yes") in s.headers] == []
        assert len(upstream.seen) == 1


async def test_an_answer_before_the_body_is_sent_is_delivered() -> None:
    # An upstream that refuses a request from its head (413, 401) answers and closes without
    # reading the body: the partner gets that answer, not a 502.
    hung_up = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo much")
        await writer.drain()
        writer.close()
        hung_up.set()

    answered = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await answered.wait()
        yield b"y" * 1000

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    origin = Origin("http", "127.0.0.1", server.sockets[0].getsockname()[1])
    pool = UpstreamPool(timeout=5)
    try:
        sending = asyncio.ensure_future(get(pool, origin, method="POST", body=body()))
        await asyncio.wait_for(hung_up.wait(), 5)
        await until(lambda: not pool._all, "the edge saw the upstream hang up")
        answered.set()
        assert (await asyncio.wait_for(sending, 5))[::2] == (413, b"too much")
    finally:
        await pool.close()
        server.close()


# The pool's room


async def test_a_woken_waiter_that_is_cancelled_passes_the_room_on() -> None:
    async with serving(lambda seen: (ok(), False), max_connections=1) as (upstream, origin, pool):
        holding = await pool.request("GET", origin, b"/", [])
        await holding.read()
        second = asyncio.ensure_future(get(pool, origin))
        third = asyncio.ensure_future(get(pool, origin))
        await until(lambda: len(pool._waiters.get(origin, ())) == 2, "two requests waiting for room")
        holding.release()  # wakes the second ...
        second.cancel()    # ... which is cancelled before it runs: the third must get the room
        assert (await asyncio.wait_for(third, 3))[2] == b"hello"
        assert second.cancelled()
        assert upstream.connections == 1


async def test_a_waiter_given_an_expired_idle_connection_opens_a_new_one() -> None:
    async with serving(lambda seen: (ok(), False), max_connections=1, idle_seconds=0.0) as (upstream, origin, pool):
        holding = await pool.request("GET", origin, b"/", [])
        await holding.read()
        waiting = asyncio.ensure_future(get(pool, origin))
        await until(lambda: len(pool._waiters.get(origin, ())) == 1, "a request waiting for room")
        holding.release()
        assert (await asyncio.wait_for(waiting, 3))[2] == b"hello"
        assert upstream.connections == 2


async def test_waiting_for_room_in_a_full_pool_times_out() -> None:
    async with serving(lambda seen: (ok(), False), max_connections=1, timeout=0.3) as (upstream, origin, pool):
        holding = await pool.request("GET", origin, b"/", [])
        await holding.read()
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(get(pool, origin), 3)
        assert not pool._waiters.get(origin)  # the timed-out waiter left the line
        holding.release()
        assert (await get(pool, origin))[2] == b"hello"
        assert upstream.connections == 1


# Cancellation, timeouts and the accounting


async def test_a_reader_cancelled_mid_body_leaves_no_connection_to_reuse() -> None:
    big = b"z" * (4 * 1024 * 1024)
    upstream, origin, pool = await served(lambda seen: (ok(big if seen.target == b"/big" else b"small"), False))
    started = asyncio.Event()

    async def partner_reads_then_goes() -> None:
        response = await pool.request("GET", origin, b"/big", [])
        try:
            async for _ in response.chunks():
                started.set()
                await asyncio.Event().wait()  # the partner's socket stalls; the task is cancelled
        finally:
            response.release()

    try:
        reading = asyncio.ensure_future(partner_reads_then_goes())
        await asyncio.wait_for(started.wait(), 5)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert (await get(pool, origin, b"/small"))[2] == b"small"
        assert [s.connection for s in upstream.seen] == [1, 2]
        await until(lambda: open_count(pool, origin) == 1, "only the reused connection counted")
    finally:
        await pool.close()
        await upstream.stop()
    await until(lambda: open_count(pool, origin) == 0, "every connection forgotten after close")


async def cut_short() -> AsyncIterator[bytes]:
    """A partner's body that fails after its first bytes (over the limit, or the partner gone)."""
    yield b"part"
    raise OverflowError("the partner's body passed the limit")


async def test_a_failed_request_body_closes_the_connection() -> None:
    upstream, origin, pool = await served(lambda seen: (ok(seen.body), False))

    try:
        with pytest.raises(OverflowError):
            await get(pool, origin, method="POST", body=cut_short())
        assert (await get(pool, origin))[2] == b""
        assert upstream.connections == 2
        assert [s.body for s in upstream.seen] == [b""]  # the cut request was never answered
    finally:
        await pool.close()
        await upstream.stop()


async def test_a_stalled_body_times_out_and_the_sweeper_ends_when_nothing_waits() -> None:
    def answer(seen: Seen) -> Answer:
        if seen.target == b"/stall":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf", False
        return ok(), False

    async with serving(answer, timeout=0.3) as (upstream, origin, pool):
        response = await pool.request("GET", origin, b"/stall", [])
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(response.read(), 3)
        response.release()
        assert (await get(pool, origin))[2] == b"hello"
        assert upstream.connections == 2
        await until(lambda: pool._sweeper is not None and pool._sweeper.done(), "the sweeper ended")
        await until(lambda: open_count(pool, origin) == 1, "the timed-out connection forgotten")


# TLS


async def test_https_sends_the_origin_name_and_refuses_a_certificate_for_another_name() -> None:
    ca = trustme.CA()
    names: list[str | None] = []
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("upstream.test", "localhost").configure_cert(server_context)
    server_context.sni_callback = lambda sock, name, context: names.append(name)  # type: ignore[assignment, func-returns-value]
    upstream = Upstream(lambda seen: (ok(b"secure"), False))
    origin = await upstream.start(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    pool = UpstreamPool(timeout=5, ssl_context=trusting)
    try:
        assert (await get(pool, origin))[2] == b"secure"
        assert names == ["localhost"]
        with pytest.raises(UpstreamError, match="certificate"):  # the certificate names no 127.0.0.1
            await get(pool, Origin("https", "127.0.0.1", origin.port))
    finally:
        await pool.close()
        await upstream.stop()


async def test_a_request_body_waits_for_an_upstream_that_stops_reading_then_times_out() -> None:
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    origin = Origin("http", "127.0.0.1", server.sockets[0].getsockname()[1])
    pool = UpstreamPool(timeout=0.5)
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        block = b"b" * 65536
        while True:
            produced += len(block)
            yield block
            await asyncio.sleep(0)  # a partner's body arrives over many loop steps

    try:
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(get(pool, origin, method="POST", body=endless()), 10)
        assert accepted.is_set()
        assert produced < 64 * 1024 * 1024  # the sender waited for room: socket buffers, not the body, filled
    finally:
        await pool.close()
        server.close()
        for writer in writers:
            writer.close()


async def test_an_exchange_that_fails_while_sending_leaves_no_unread_error_behind() -> None:
    # Each such failure once logged "Future exception was never retrieved" (the answer nobody
    # would wait for any more): a partner sending bad bodies could fill the log.
    upstream, origin, pool = await served(lambda seen: (ok(), False))
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: reported.append(context["message"]))

    try:
        with pytest.raises(OverflowError):
            await get(pool, origin, method="POST", body=cut_short())
        await until(lambda: upstream.open == 0, "the connection closed on both sides")
        gc.collect()
        assert reported == []
    finally:
        loop.set_exception_handler(previous)
        await pool.close()
        await upstream.stop()


async def test_fetching_a_document_is_bounded_in_time_and_size_as_a_whole() -> None:
    """An external issuer's JWKS (Upstreams.fetch_text): a server that drips its answer cannot hold
    the fetch past the timeout, and a body over the limit is refused however it is framed."""
    from services.edge.http.proxy import Upstreams

    dripping = asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
        dripping.set()
        try:
            while True:  # a byte at a time, each well within the per-read timeout
                writer.write(b"{")
                await writer.drain()
                await asyncio.sleep(0.02)
        except ConnectionError:
            return
        finally:
            writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstreams = Upstreams(timeout=0.5, max_body_bytes=1024)
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(TimeoutError):  # the fetch's own bound; the outer one only stops a hang
            await asyncio.wait_for(upstreams.fetch_text(f"http://127.0.0.1:{port}/jwks", 1_000_000), 5)
        assert dripping.is_set()
        assert asyncio.get_running_loop().time() - started < 3
        big = Upstream(lambda seen: (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                                     + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n", False))
        origin = await big.start()
        with pytest.raises(ValueError, match="more than 100 bytes"):
            await upstreams.fetch_text(f"http://127.0.0.1:{origin.port}/jwks", 100)
        await big.stop()
    finally:
        server.close()
        await upstreams.close()
