"""Flush consolidation (services/edge/http/transport.py): the writes of one loop step leave as one
write at its end, in order; closing sends what is held first, and a lingering close half-closes
first. Through uvicorn and the upstream client, every integration test of the edge runs over it
as well."""

from __future__ import annotations

import asyncio

from services.edge.http.transport import CoalescingTransport
from tests.support.waiting import eventually


class Recorded:
    """The real transport's side of the seam: what reached it, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def can_write_eof(self) -> bool:
        return True

    def writelines(self, lines: list[bytes]) -> None:
        self.writes.extend(lines)

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


async def test_the_writes_of_one_step_are_one_write_at_its_end() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.write(b"hello")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"hello"]
    transport.write(b"next")  # a later step: a write of its own
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"hello", b"next"]


async def test_close_sends_what_is_held_first_and_other_calls_reach_the_transport() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.close()
    assert (real.writes, real.closed, transport.is_closing()) == ([HEAD], True, True)
    await asyncio.sleep(0)
    assert real.writes == [HEAD]  # the end-of-step flush finds nothing left and the transport closed
    assert transport.get_extra_info("peername") == "info:peername"


async def test_nothing_is_written_to_a_transport_that_closed_meanwhile() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"late")
    real.closed = True  # the peer went away before the step ended
    await asyncio.sleep(0)
    assert real.writes == []


async def test_writes_held_in_a_step_go_before_an_end_of_file_and_lines_written_later() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.writelines([b"hel", b"lo"])
    assert real.writes == []  # lines are writes of the step too
    transport.write_eof()
    assert real.writes == [HEAD + b"hello", b"<eof>"]
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"hello", b"<eof>"]


async def test_a_lingering_close_sends_what_is_held_and_an_end_of_file_then_closes_later() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.linger = 0.05
    transport.write(HEAD)
    transport.close()
    assert (real.writes, real.closed, transport.is_closing()) == ([HEAD, b"<eof>"], False, True)

    async def closed() -> bool:
        return real.closed
    await eventually(closed, timeout=5, what="the close after the linger")


async def test_a_second_close_during_the_linger_closes_at_once() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.linger = 60
    transport.close()
    transport.close()  # the server shutting down, say
    assert (real.writes, real.closed) == ([b"<eof>"], True)
