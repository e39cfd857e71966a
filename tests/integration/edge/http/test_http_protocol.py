"""The edge's server protocol (services/edge/http/server.py: uvicorn's httptools protocol over a
CoalescingTransport) answers byte for byte as uvicorn's own protocol does for well-formed HTTP, on
a real server on loopback: pipelined requests in order, `Connection: close`, 100-continue, HEAD,
uvicorn's 500 answers, a drain at shutdown, and a client that half-closes after its request.
(What it refuses, which uvicorn answers in plain text, is in test_bad_input.py, on a real edge.)
With tests/unit/edge/http, this is the gate for an upgrade of uvicorn or httptools."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn

from services.edge.http.server import HttpLimits
from services.edge.http.server import serving as serving_protocol
from tests.support.waiting import eventually

Scope = dict[str, Any]


async def app(scope: Scope, receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("the application failed before answering")
    if path == "/boom-late":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        raise RuntimeError("the application failed while answering")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/wait":
        await asyncio.sleep(0.2)  # the server stops while this answer is on its way
    answer = path.encode() + b":" + body
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test's loop keeps its own signal handling
        yield


@contextlib.asynccontextmanager
async def serving(http: Any) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = _Server(uvicorn.Config(app, http=http, ws="none", lifespan="off", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _true(server.started), timeout=10, what="the server to start")
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def edge_protocol() -> Any:
    return serving_protocol(HttpLimits())


async def _true(value: bool) -> bool:
    return value


async def exchange(port: int, data: bytes, *, half_close: bool = False, then: bytes = b"") -> bytes:
    """What the server sends on one connection until it closes it (with the Date header removed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        if then:  # after the server's first line (100 Continue)
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(then)
        else:
            first = b""
        rest = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return re.sub(rb"date: [^\r]*\r\n", b"", first + rest)


REQUEST = b"GET %s HTTP/1.1\r\nHost: edge\r\n%s\r\n"

EXCHANGES: dict[str, dict[str, Any]] = {
    "pipelined, the last with Connection: close": {"data": (
        REQUEST % (b"/a", b"") + REQUEST % (b"/wait", b"") + b"HEAD /head HTTP/1.1\r\nHost: edge\r\n\r\n"
        + b"POST /post HTTP/1.1\r\nHost: edge\r\nContent-Length: 2\r\n\r\nhi" + REQUEST % (b"/last", b"Connection: close\r\n")
        + REQUEST % (b"/never", b""))},
    "100-continue": {"data": b"POST /echo HTTP/1.1\r\nHost: edge\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
                             b"Connection: close\r\n\r\n", "then": b"hello"},
    "HTTP/1.0": {"data": b"GET /old HTTP/1.0\r\n\r\n"},
    "the application fails before answering": {"data": REQUEST % (b"/boom", b"")},
    "the application fails while answering": {"data": REQUEST % (b"/boom-late", b"")},
    "a client that half-closes after its request": {"data": REQUEST % (b"/a", b""), "half_close": True},
    "a client that half-closes after pipelined requests": {
        "data": REQUEST % (b"/a", b"") + REQUEST % (b"/b", b""), "half_close": True},
}


@pytest.mark.parametrize("name", list(EXCHANGES))
async def test_the_edge_protocol_answers_as_uvicorns_own(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="uvicorn.error")  # the failing application's tracebacks
    async with serving("httptools") as (plain_port, _), serving(edge_protocol()) as (edge_port, _):
        for _ in range(5):  # a lost answer depends on the order of events within a loop step: try a few
            expected = await exchange(plain_port, **EXCHANGES[name])
            assert await exchange(edge_port, **EXCHANGES[name]) == expected
    assert expected.startswith(b"HTTP/1.1 ")


async def test_a_half_closing_client_gets_its_answer() -> None:
    async with serving(edge_protocol()) as (port, _):
        answers = await asyncio.gather(*(exchange(port, REQUEST % (b"/a", b""), half_close=True) for _ in range(20)))
    assert all(answer.endswith(b"\r\n\r\n/a:") for answer in answers), answers


async def test_an_answer_under_way_when_the_server_stops_is_sent_whole() -> None:
    async with serving(edge_protocol()) as (port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST % (b"/wait", b""))
        await eventually(lambda: _true(bool(server.server_state.tasks)), timeout=10, what="the request to start")
        server.should_exit = True
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\n/wait:")
