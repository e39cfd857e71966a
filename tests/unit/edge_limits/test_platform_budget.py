"""The platform log's budget: a flood of unattributable requests, from one address or from many,
costs a bounded number of records and a bounded amount of memory, and every request it did not
send one by one is counted in a record that stands for it."""

from __future__ import annotations

from nats.js.api import PubAck

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.adapters.apilog import ANY_SOURCE, ApiLogPublisher, PlatformBudget, source_of


def probe(i: int, ip: str = "198.51.100.7", code: str = "invalid_api_key", org: str = "") -> events_pb2.ApiRequestLogged:
    return events_pb2.ApiRequestLogged(request_id=f"req-{i}", org_id=org, method="GET", endpoint="/lots", status=401,
                                       ip=ip, error_code=code)


def test_one_source_gets_a_few_records_then_one_that_stands_for_the_rest():
    budget = PlatformBudget(per_source=3, per_window=100, max_sources=10)
    admitted = [budget.admit(probe(i)) for i in range(50)]
    assert admitted == [True] * 3 + [False] * 47
    (standing,) = budget.roll()
    assert (standing.request_id, standing.repeats, standing.ip) == ("req-49", 47, "198.51.100.7")
    # A new window starts afresh, and a quiet one sends nothing more.
    assert budget.admit(probe(50)) is True
    assert budget.roll() == []


def test_each_error_code_of_a_source_is_counted_apart():
    budget = PlatformBudget(per_source=1, per_window=100, max_sources=10)
    for i in range(4):
        budget.admit(probe(i, code="invalid_api_key"))
        budget.admit(probe(100 + i, code="missing_credentials"))
    assert sorted((r.error_code, r.repeats) for r in budget.roll()) == [("invalid_api_key", 3), ("missing_credentials", 3)]


def test_addresses_of_one_ipv6_64_are_one_source_and_mapped_ipv4_is_its_ipv4():
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("192.0.2.1") == "192.0.2.1"
    budget = PlatformBudget(per_source=2, per_window=100, max_sources=10)
    assert [budget.admit(probe(i, ip=f"2001:db8:1:2::{i:x}")) for i in range(1, 6)] == [True, True, False, False, False]


def test_a_flood_from_many_addresses_is_bounded_in_records_and_memory():
    per_window, max_sources = 50, 200
    budget = PlatformBudget(per_source=5, per_window=per_window, max_sources=max_sources)
    sent = 0
    for i in range(100_000):  # every request from an address of its own
        sent += budget.admit(probe(i, ip=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"))
    assert sent == per_window
    assert len(budget._folds) <= max_sources + 1  # the tracked addresses, and every other one by error code
    standing = budget.roll()
    assert len(standing) <= max_sources + 1
    # Nothing is lost: every request is either a record of its own or counted in one.
    assert sent + sum(r.repeats for r in standing) == 100_000
    (others,) = [r for r in standing if r.ip == ""]  # beyond the tracked ones: many sources, so no address
    assert others.repeats == 100_000 - max_sources


def test_beyond_the_tracked_sources_requests_count_by_code_alone():
    budget = PlatformBudget(per_source=5, per_window=100, max_sources=2)
    assert budget.admit(probe(1, ip="192.0.2.1")) and budget.admit(probe(2, ip="192.0.2.2"))
    assert not budget.admit(probe(3, ip="192.0.2.3"))  # a third source is not told apart
    assert (ANY_SOURCE, "invalid_api_key") in budget._folds


class Capturing:
    """A JetStream context that acks every publish and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def publish(self, subject: str, payload: bytes, timeout: float, headers: dict[str, str]) -> PubAck:
        self.sent.append(payload)
        return PubAck(stream="APILOG", seq=len(self.sent))


async def test_the_publisher_applies_the_budget_to_records_without_an_organisation_only():
    js = Capturing()
    publisher = ApiLogPublisher(js, platform=PlatformBudget(per_source=2, per_window=100, max_sources=10))  # type: ignore[arg-type]
    await publisher.start()
    for i in range(10):
        publisher.record(probe(i))
        publisher.record(probe(100 + i, org="org_a"))  # attributable: every one goes
    await publisher.close()  # closing ends the window: the counted requests are stood for
    records = [r for payload in js.sent for r in events_pb2.ApiRequestBatch.FromString(payload).records]
    platform = [(r.request_id, r.repeats) for r in records if not r.org_id]
    assert platform == [("req-0", 0), ("req-1", 0), ("req-9", 8)]
    assert len([r for r in records if r.org_id]) == 10
    assert publisher.dropped == 0
