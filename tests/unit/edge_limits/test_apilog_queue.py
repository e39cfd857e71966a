"""The API log queue itself: bounded, never blocking, never raising. No NATS is involved."""

from __future__ import annotations

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.apilog import ApiLogPublisher


def entry(request_id: str) -> events_pb2.ApiRequestLogged:
    return events_pb2.ApiRequestLogged(request_id=request_id, method="GET", endpoint="/lots", status=200)


class Unreachable:
    """A JetStream context nobody should touch: these tests never start publishing."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"JetStream used: {name}")


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
