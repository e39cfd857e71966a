"""The API log queue itself: bounded, never blocking, never raising, and the batch it sends is a
valid ApiRequestBatch. No NATS is involved."""

from __future__ import annotations

from nats.js.api import PubAck

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.adapters.apilog import ApiLogPublisher


def entry(request_id: str) -> events_pb2.ApiRequestLogged:
    return events_pb2.ApiRequestLogged(request_id=request_id, method="GET", endpoint="/lots", status=200)


class Unreachable:
    """A JetStream context nobody should touch: these tests never start publishing."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"JetStream used: {name}")


class Capturing:
    """A JetStream context that acks every publish and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, timeout: float, headers: dict[str, str]) -> PubAck:
        self.sent.append((subject, payload, headers))
        return PubAck(stream="APILOG", seq=len(self.sent))


async def test_records_go_out_together_as_one_api_request_batch():
    js = Capturing()
    publisher = ApiLogPublisher(js)  # type: ignore[arg-type]
    # Endpoints whose records' lengths take one, two and three bytes to encode.
    entries = [events_pb2.ApiRequestLogged(request_id=f"req-{n}", endpoint="/" + "x" * n, status=200)
               for n in (10, 300, 20_000)]
    await publisher.start()
    for e in entries:
        publisher.record(e)
    await publisher.close()
    ((subject, payload, headers),) = js.sent
    assert subject == "apilog.batch" and headers["Nats-Msg-Id"]
    assert list(events_pb2.ApiRequestBatch.FromString(payload).records) == entries
    assert (publisher.published, publisher.dropped) == (3, 0)


async def test_a_record_larger_than_a_batch_may_be_is_dropped_and_counted():
    js = Capturing()
    publisher = ApiLogPublisher(js, max_bytes=1_000)  # type: ignore[arg-type]
    await publisher.start()
    publisher.record(events_pb2.ApiRequestLogged(request_id="huge", endpoint="/" + "x" * 2_000))
    publisher.record(entry("fits"))
    await publisher.close()
    assert (publisher.published, publisher.dropped) == (1, 1)
    assert [r.request_id for r in events_pb2.ApiRequestBatch.FromString(js.sent[0][1]).records] == ["fits"]


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    publisher = ApiLogPublisher(Unreachable(), max_queue=10)  # type: ignore[arg-type]
    for i in range(15):
        publisher.record(entry(f"req-{i}"))
    assert (publisher.queued, publisher.dropped, publisher.published) == (10, 5, 0)


def test_a_record_that_cannot_be_serialized_is_counted_not_raised():
    publisher = ApiLogPublisher(Unreachable())  # type: ignore[arg-type]
    publisher.record(None)  # type: ignore[arg-type]
    assert (publisher.queued, publisher.dropped) == (0, 1)


async def test_records_after_close_are_counted_as_dropped():
    publisher = ApiLogPublisher(Unreachable())  # type: ignore[arg-type]
    await publisher.close()
    publisher.record(entry("late"))
    assert (publisher.queued, publisher.dropped) == (0, 1)
