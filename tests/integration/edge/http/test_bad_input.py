"""Malformed and slow HTTP against a real edge over real sockets: every answer is our JSON error
with a request id, is in the API log with the status the client got, closes the connection when
the framing cannot be trusted, and nothing of a refused request reaches the upstream. Read
timeouts and the per-address connection limit are set small here; they are settings."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.js.api import DeliverPolicy

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.entrypoints.main import RunningEdge
from services.kit.natsproc import NatsServer
from tests.integration.edge.conftest import ProvisionPartner, fetch_token
from tests.support.waiting import eventually

StartEdge = Callable[..., Awaitable[RunningEdge]]


class Answer:
    """One HTTP answer read off a raw connection."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.headers}, {self.body[:200]!r})"


async def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Everything the edge sends on one connection after `data`, until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def answers(raw: bytes) -> int:
    return len(re.findall(rb"HTTP/1\.1 \d{3} ", raw))


def refusal(raw: bytes, status: int, code: str) -> Answer:
    """The one answer on a connection the edge then closed: our JSON error, with its request id."""
    assert answers(raw) == 1, raw
    answer = Answer(raw)
    assert (answer.status, answer.headers.get("content-type")) == (status, "application/json"), answer
    body = answer.json()
    assert body["error"] == code and body["message"], body
    assert body["request_id"] and body["request_id"] == answer.headers["x-request-id"], answer
    assert answer.headers.get("connection") == "close", answer
    return answer


class ApiLog:
    """API log records published from now on (`apilog.batch`)."""

    def __init__(self) -> None:
        self.records: list[events_pb2.ApiRequestLogged] = []

    async def find(self, request_id: str) -> events_pb2.ApiRequestLogged:
        async def found() -> events_pb2.ApiRequestLogged | None:
            return next((r for r in self.records if r.request_id == request_id), None)
        return await eventually(found, what=f"the API log record of {request_id}")


@pytest.fixture
async def apilog(nats_server: NatsServer) -> AsyncIterator[ApiLog]:
    log = ApiLog()
    nc = await nats.connect(nats_server.url)

    async def collect(msg: Any) -> None:
        log.records.extend(events_pb2.ApiRequestBatch.FromString(msg.data).records)

    subscription = await nc.jetstream().subscribe("apilog.batch", cb=collect, ordered_consumer=True,
                                                  deliver_policy=DeliverPolicy.NEW)
    yield log
    await subscription.unsubscribe()
    await nc.close()


class RawUpstream:
    """An upstream that records every byte that reaches it, and answers each request 200."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.received += head
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.received += await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    upstream.server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0)
    yield upstream
    upstream.server.close()


@pytest.fixture
def raw_routes(raw_upstream: RawUpstream, tmp_path: Path) -> str:
    path = tmp_path / "raw-routes.toml"
    path.write_text(f'[[route]]\nprefix = "/api"\nupstream = "{raw_upstream.url}"\nscope = "inventory"\n')
    return str(path)


@pytest.fixture
async def credentials(start_edge: StartEdge, provision: ProvisionPartner) -> Callable[[int], Awaitable[bytes]]:
    """credentials(port) -> the Authorization and X-API-Key header lines of an Active partner."""
    partner = await provision()

    async def _credentials(port: int) -> bytes:
        async with aiohttp.ClientSession() as http:
            token = await fetch_token(http, f"http://127.0.0.1:{port}", partner)
        return f"Authorization: Bearer {token}\r\nX-API-Key: {partner.api_key}\r\n".encode()

    return _credentials


MALFORMED = {
    "two Content-Lengths": b"POST /api/lots HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
    "a Content-Length that is not a number": b"POST /api/lots HTTP/1.1\r\nHost: e\r\nContent-Length: 2x\r\n\r\nhi",
    "Transfer-Encoding and Content-Length": (b"POST /api/lots HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"),
    "a Transfer-Encoding that is not chunked": b"POST /api/lots HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: gzip\r\n\r\nhi",
    "a chunk size that is not hexadecimal": (b"POST /api/lots HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n"
                                             b"zz\r\nhi\r\n0\r\n\r\n"),
    "a request line with a space in the target": b"GET /api/a b HTTP/1.1\r\nHost: e\r\n\r\n",
    "no request line at all": b"NOT HTTP\x00\r\n\r\n",
    "UTF-8 bytes in the path": b"GET /api/\xc3\xa9 HTTP/1.1\r\nHost: e\r\n\r\n",
    "a byte that is not UTF-8 in the path": b"GET /api/\xe9 HTTP/1.1\r\nHost: e\r\n\r\n",
    "HTTP/1.0 with Transfer-Encoding: chunked": (b"POST /api/lots HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                b"2\r\nhi\r\n0\r\n\r\n"),
    "HTTP/2.0 in a request line": b"GET /api/lots HTTP/2.0\r\nHost: e\r\n\r\n",
    "an upgrade request with a body": (b"POST /api/lots HTTP/1.1\r\nHost: e\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                                       b"Content-Length: 2\r\n\r\nhi"),
    "a header name with a space": b"GET /api/lots HTTP/1.1\r\nHost : e\r\n\r\n",
    "an obsolete folded header": b"GET /api/lots HTTP/1.1\r\nHost: e\r\nX-A: b\r\n c\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_http_is_refused_with_our_json_error_and_logged(
        name: str, start_edge: StartEdge, raw_upstream: RawUpstream, raw_routes: str, apilog: ApiLog) -> None:
    edge = await start_edge(edge_routes_file=raw_routes)
    answer = refusal(await exchange(edge.port, MALFORMED[name]), 400, "malformed_request")
    record = await apilog.find(answer.headers["x-request-id"])
    assert (record.status, record.error_code, record.ip) == (400, "malformed_request", "127.0.0.1")
    assert raw_upstream.received == b""


async def test_a_malformed_request_after_a_good_one_is_answered_after_it(start_edge: StartEdge) -> None:
    edge = await start_edge()
    raw = await exchange(edge.port, b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\nGET /healthz HTTP/1.1\r\nHost: e\r\n"
                                    b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n")
    first, _, second = raw.partition(b"}HTTP/1.1 ")
    assert answers(raw) == 2, raw
    assert Answer(first + b"}").status == 200
    refusal(b"HTTP/1.1 " + second, 400, "malformed_request")


async def test_the_callers_request_id_is_kept_on_a_malformed_request(start_edge: StartEdge) -> None:
    edge = await start_edge()
    raw = await exchange(edge.port, b"POST /api/lots HTTP/1.1\r\nHost: e\r\nX-Request-ID: mine-123\r\n"
                                    b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert refusal(raw, 400, "malformed_request").json()["request_id"] == "mine-123"


async def test_a_bad_chunk_after_the_head_is_400_and_nothing_reaches_the_upstream(
        start_edge: StartEdge, raw_upstream: RawUpstream, raw_routes: str, apilog: ApiLog,
        credentials: Callable[[int], Awaitable[bytes]]) -> None:
    edge = await start_edge(edge_routes_file=raw_routes)
    head = b"POST /api/lots HTTP/1.1\r\nHost: e\r\n" + await credentials(edge.port) + b"Transfer-Encoding: chunked\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(head + b"5\r\nhello\r\n")
    await asyncio.sleep(0)
    writer.write(b"zz\r\nbad\r\n0\r\n\r\n")
    answer = refusal(await asyncio.wait_for(reader.read(), 5), 400, "malformed_request")
    writer.close()
    record = await apilog.find(answer.headers["x-request-id"])
    assert (record.status, record.error_code) == (400, "malformed_request")
    assert raw_upstream.connections == 0 and raw_upstream.received == b""


async def test_a_body_cut_short_is_logged_as_the_client_closing_and_never_reaches_the_upstream(
        start_edge: StartEdge, raw_upstream: RawUpstream, raw_routes: str, apilog: ApiLog,
        credentials: Callable[[int], Awaitable[bytes]]) -> None:
    edge = await start_edge(edge_routes_file=raw_routes)
    head = (b"PUT /api/lots/1 HTTP/1.1\r\nHost: e\r\nX-Request-ID: cut-short-1\r\n" + await credentials(edge.port)
            + b"Content-Length: 100\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(head + b"only ten b")
    await writer.drain()
    writer.close()
    record = await apilog.find("cut-short-1")
    assert (record.status, record.error_code) == (499, "client_closed_request")
    assert raw_upstream.connections == 0 and raw_upstream.received == b""


async def test_a_whole_body_reaches_the_upstream_with_its_length(
        start_edge: StartEdge, raw_upstream: RawUpstream, raw_routes: str,
        credentials: Callable[[int], Awaitable[bytes]]) -> None:
    edge = await start_edge(edge_routes_file=raw_routes)
    head = b"POST /api/lots HTTP/1.1\r\nHost: e\r\nConnection: close\r\n" + await credentials(edge.port)
    raw = await exchange(edge.port, head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert Answer(raw).status == 200 and Answer(raw).body == b"ok"
    sent_head, _, sent_body = bytes(raw_upstream.received).partition(b"\r\n\r\n")
    assert sent_body == b"hello world"
    lines = sent_head.lower().split(b"\r\n")
    assert b"content-length: 11" in lines and not any(line.startswith(b"transfer-encoding") for line in lines)


async def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_timeout(start_edge: StartEdge, apilog: ApiLog) -> None:
    edge = await start_edge(edge_header_read_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)

    async def drip() -> None:
        writer.write(b"GET /api/lots HTTP/1.1\r\nHost: e\r\nX-Request-ID: slow-head-1\r\n")
        while not writer.is_closing():
            writer.write(b"X-Pad: p\r\n")  # the attack: a header line now and then, never the end
            await asyncio.sleep(0.02)

    started = time.monotonic()
    dripping = asyncio.create_task(drip())
    try:
        answer = refusal(await asyncio.wait_for(reader.read(), 5), 408, "request_timeout")
    finally:
        writer.close()
        dripping.cancel()
    assert time.monotonic() - started < 2.0
    record = await apilog.find(answer.headers["x-request-id"])
    assert (record.request_id, record.status, record.error_code) == ("slow-head-1", 408, "request_timeout")


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(start_edge: StartEdge) -> None:
    edge = await start_edge(edge_header_read_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing to answer
    finally:
        writer.close()


async def test_a_body_sent_slowly_is_refused_at_the_body_timeout_before_the_upstream(
        start_edge: StartEdge, raw_upstream: RawUpstream, raw_routes: str, apilog: ApiLog,
        credentials: Callable[[int], Awaitable[bytes]]) -> None:
    edge = await start_edge(edge_routes_file=raw_routes, edge_body_read_timeout_seconds=0.3)
    head = b"PUT /api/lots/1 HTTP/1.1\r\nHost: e\r\n" + await credentials(edge.port) + b"Content-Length: 100000\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)

    async def drip() -> None:
        writer.write(head)
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(0.02)

    dripping = asyncio.create_task(drip())
    try:
        answer = refusal(await asyncio.wait_for(reader.read(), 5), 408, "request_timeout")
    finally:
        writer.close()
        dripping.cancel()
    record = await apilog.find(answer.headers["x-request-id"])
    assert (record.status, record.error_code) == (408, "request_timeout")
    assert raw_upstream.connections == 0


async def test_a_refused_requests_body_cannot_hold_the_connection(start_edge: StartEdge) -> None:
    edge = await start_edge(edge_body_read_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)

    async def drip() -> None:  # no credentials: refused at once, while the body keeps coming
        writer.write(b"PUT /api/lots/1 HTTP/1.1\r\nHost: e\r\nContent-Length: 100000\r\n\r\n")
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(0.02)

    dripping = asyncio.create_task(drip())
    try:
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        dripping.cancel()
    assert Answer(raw).status == 401 and answers(raw) == 1


async def test_a_head_over_the_size_bound_is_refused_before_it_ends(start_edge: StartEdge) -> None:
    edge = await start_edge(edge_max_header_bytes=1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /api/lots HTTP/1.1\r\nHost: e\r\nX-Big: ")

    async def endless() -> None:
        while not writer.is_closing():
            writer.write(b"v" * 4096)  # one header value that never ends
            await asyncio.sleep(0.01)

    flooding = asyncio.create_task(endless())
    try:
        refusal(await asyncio.wait_for(reader.read(), 5), 431, "request_headers_too_large")
    finally:
        writer.close()
        flooding.cancel()


async def test_connections_past_the_per_address_limit_are_refused_cleanly(start_edge: StartEdge, apilog: ApiLog) -> None:
    edge = await start_edge(edge_max_connections_per_address=2)
    held = [await asyncio.open_connection("127.0.0.1", edge.port) for _ in range(2)]
    try:
        for _, writer in held:  # both are being served
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n")
        for reader, _ in held:
            assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"}"), 5)
        answer = refusal(await exchange(edge.port, b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n"), 429, "too_many_connections")
        record = await apilog.find(answer.headers["x-request-id"])
        assert (record.status, record.error_code, record.ip) == (429, "too_many_connections", "127.0.0.1")
    finally:
        for _, writer in held:
            writer.close()

    async def served_again() -> bool:
        return Answer(await exchange(edge.port, b"GET /healthz HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n")).status == 200
    await eventually(served_again, what="a connection once the others closed")


async def test_requests_after_an_upgrade_request_are_not_left_hanging(start_edge: StartEdge) -> None:
    edge = await start_edge()
    raw = await exchange(edge.port, b"GET /healthz HTTP/1.1\r\nHost: e\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                                    b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n")
    answer = Answer(raw)
    assert answer.status == 200 and answer.headers.get("connection") == "close"
    assert answers(raw) == 1  # the rest of the connection cannot be parsed: closed


async def test_connect_is_refused(start_edge: StartEdge) -> None:
    edge = await start_edge()
    refusal(await exchange(edge.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            405, "method_not_allowed")


async def test_a_client_still_sending_when_refused_reads_its_answer_rather_than_a_reset(start_edge: StartEdge) -> None:
    # Closing a socket with unread bytes makes the kernel send a reset, which can destroy the
    # answer before the client reads it; the edge half-closes and drops what still comes instead.
    edge = await start_edge()
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(b"POST /api/lots HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        sent = 0
        try:
            while sent < 4 * 1024 * 1024:  # the body goes on after the answer was sent
                writer.write(b"x" * 65536)
                sent += 65536
                await writer.drain()
            refusal(await asyncio.wait_for(reader.read(), 5), 400, "malformed_request")
        finally:
            writer.close()
