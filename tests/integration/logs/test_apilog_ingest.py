"""Request records on the wire as the edge sends them (many to an `apilog.batch` message) and as
other publishers do (one on `apilog.request`): each request is stored once, and a fetch of
batches stays bounded in bytes so one commit stays bounded too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import nats
from nats.js import JetStreamContext

from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.edge.adapters.apilog import ApiLogPublisher
from services.kit.auth import QA_PERMISSION
from services.kit.bus import ensure_streams
from services.kit.natsproc import NatsServer
from services.logs.adapters.consumers import BatchConsumer, decode_requests
from services.logs.domain.model import ApiRequest
from tests.integration.logs.conftest import (
    LogsRunner,
    publish_batch,
    publish_request,
    request_record,
    unique,
)
from tests.integration.logs.test_logs_service import Metadata, all_records, arrived
from tests.support.waiting import eventually

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


async def test_batches_from_the_edge_publisher_and_single_records_each_arrive_once(
    logs_runner: Callable[..., LogsRunner], js: JetStreamContext, as_actor: Metadata
) -> None:
    org = unique("org")
    stub = await logs_runner().start()
    publisher = ApiLogPublisher(js)
    await publisher.start()
    for i in range(1200):
        publisher.record(request_record(org=org, request_id=f"{org}-e{i}", when=NOW - dt.timedelta(seconds=i)))
    await publisher.close()
    assert (publisher.published, publisher.dropped) == (1200, 0)

    await publish_request(js, org=org, request_id=f"{org}-single", when=NOW)
    # Another publisher's batch repeating some of those requests, and one request twice over.
    again = [request_record(org=org, request_id=f"{org}-e{i}", when=NOW - dt.timedelta(seconds=i))
             for i in range(0, 1200, 100)]  # the same records: same id, same time
    twice = [request_record(org=org, request_id=f"{org}-twice", when=NOW)] * 2
    await publish_batch(js, again + twice, batch_id=unique("bat"))

    records = await arrived(stub, as_actor("quinn", org, [QA_PERMISSION]), 1202)
    ids = [r.request_id for r in records]
    assert len(ids) == len(set(ids)) == 1202
    assert {f"{org}-single", f"{org}-twice", f"{org}-e0", f"{org}-e1199"} <= set(ids)


async def test_a_batched_record_without_a_request_id_is_named_after_its_batch_and_place(
    logs_stub, js: JetStreamContext, as_actor: Metadata  # type: ignore[no-untyped-def]
) -> None:
    org, batch_id = unique("org"), unique("bat")
    await publish_batch(js, [request_record(org=org, request_id="", when=NOW, endpoint=f"/lots/{i}") for i in range(2)],
                        batch_id=batch_id)
    md = as_actor("quinn", org, [QA_PERMISSION])

    async def named() -> list[pb.RequestRecord] | None:
        records = await all_records(logs_stub, md)
        return records if len(records) == 2 else None

    records = await eventually(named, timeout=20, what="both records")
    assert sorted((r.request_id, r.endpoint) for r in records) == [(f"{batch_id}-0", "/lots/0"), (f"{batch_id}-1", "/lots/1")]
    found = await logs_stub.GetRequest(pb.GetRequestRequest(request_id=f"{batch_id}-1"), metadata=md)
    assert found.endpoint == "/lots/1"


async def test_a_fetch_of_batches_is_bounded_in_bytes_and_an_oversized_batch_still_arrives(tmp_path: Path) -> None:
    # Its own nats-server: the consumer reads every `apilog.batch` message in the stream.
    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    nc = await nats.connect(server.url)
    consumer: BatchConsumer[ApiRequest] | None = None
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        sizes: dict[str, int] = {}
        for b in range(8):
            records = [request_record(org="org_f", request_id=f"b{b}-{i}", when=NOW) for i in range(400)]
            await publish_batch(js, records, batch_id=f"bat-{b}")
            sizes[f"b{b}"] = len(b"".join(r.SerializeToString() for r in records))
            if b == 3:  # one batch larger than a whole fetch, between the others
                big = [request_record(org="org_f", request_id=f"big-{i}", when=NOW, endpoint="/x" * 1000)
                       for i in range(150)]
                await publish_batch(js, big, batch_id="bat-big")
                sizes["big"] = len(b"".join(r.SerializeToString() for r in big))
        max_bytes = 100_000
        assert sizes["big"] > max_bytes > 3 * sizes["b0"]

        commits: list[set[str]] = []

        async def store(items: Sequence[ApiRequest]) -> None:
            commits.append({r.request_id.split("-")[0] for r in items})

        consumer = BatchConsumer(nc, subject="apilog.>", stream="APILOG", durable=unique("bounded"),
                                 decode=decode_requests, store=store, batch=1000, max_bytes=max_bytes)
        await consumer.start()

        async def all_stored() -> bool:
            return consumer is not None and consumer.stored == 8 * 400 + 150

        await eventually(all_stored, timeout=20, what="every record stored")
        assert len(commits) > 2
        for batches in commits:
            assert batches == {"big"} or sum(sizes[b] for b in batches) <= max_bytes, commits
    finally:
        if consumer is not None:
            await consumer.stop()
        await nc.close()
        server.stop()


async def test_a_record_with_a_time_out_of_range_is_dropped_and_the_rest_stored(
    logs_stub, js: JetStreamContext, as_actor: Metadata  # type: ignore[no-untyped-def]
) -> None:
    org = unique("org")
    broken = request_record(org=org, request_id=f"{org}-broken", when=NOW)
    broken.occurred_at.seconds = 10**15  # year ~31 million: no datetime holds it
    await js.publish("apilog.request", broken.SerializeToString(), headers={"Nats-Msg-Id": unique("broken")})
    await publish_request(js, org=org, request_id=f"{org}-fine", when=NOW)
    records = await arrived(logs_stub, as_actor("quinn", org, [QA_PERMISSION]), 1)
    assert [r.request_id for r in records] == [f"{org}-fine"]
