"""The edge's server protocol: a response's head goes out in one write with its body, a head
without a body in the same step still goes out at the end of it, and closing sends what is held.
Through uvicorn itself, every integration test of the edge runs over this protocol."""

from __future__ import annotations

import asyncio

from services.edge.server import CoalescingTransport


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

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


async def test_a_head_and_its_body_are_one_write() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    assert real.writes == []
    transport.write(b"hello")
    assert real.writes == [HEAD + b"hello"]
    await asyncio.sleep(0)  # the step ends: nothing more is sent
    assert real.writes == [HEAD + b"hello"]


async def test_a_head_alone_is_sent_when_the_step_ends_and_later_writes_follow_in_order() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert real.writes == [HEAD]
    transport.write(b"5\r\nhello\r\n")
    transport.write(b"0\r\n\r\n")
    assert real.writes == [HEAD, b"5\r\nhello\r\n", b"0\r\n\r\n"]


async def test_close_sends_what_is_held_first_and_other_calls_reach_the_transport() -> None:
    real = Recorded()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.close()
    assert (real.writes, real.closed, transport.is_closing()) == ([HEAD], True, True)
    await asyncio.sleep(0)
    assert real.writes == [HEAD]  # the end-of-step flush finds nothing left and the transport closed
    assert transport.get_extra_info("peername") == "info:peername"
