"""A partner recovers its own subscription after an outage through the edge: every failed
delivery in the range goes again with its event id, the progress is readable, bad ranges are
400 naming the field, and another integration's or organisation's subscription is 404."""

from __future__ import annotations

import datetime as dt
import uuid

from tests.integration.edge_webhooks.conftest import Stack
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually


def _iso(delta: dt.timedelta) -> str:
    return (dt.datetime.now(dt.timezone.utc) + delta).isoformat().replace("+00:00", "Z")


async def test_a_partner_recovers_its_failed_deliveries_and_follows_the_progress(stack: Stack, receiver: Receiver) -> None:
    client = await stack.partner()
    status, _, created = await client("POST", "/v1/webhooks", json={"endpoint_url": receiver.url(), "activity_types": ["lot.created"]})
    assert status == 201, created
    path = f"/v1/webhooks/{created['id']}"
    receiver.behaviour = lambda _: (410, "gone")
    events = [(await stack.webhooks.publish("lot.created", f'{{"n": {n}}}')).event_id for n in range(3)]

    async def failed() -> list | None:
        page = (await client("GET", f"{path}/deliveries?outcome=failed"))[2]["deliveries"]
        return page if len(page) == 3 else None

    await eventually(failed, what="three failed deliveries")
    receiver.behaviour = None

    status, _, started = await client("POST", f"{path}/recover", json={"since": _iso(dt.timedelta(hours=-1))})
    assert status == 202, started
    assert started["id"].startswith("rcv_") and started["queued"] == 3 and started["subscription_id"] == created["id"]

    async def finished() -> dict | None:
        status, _, shown = await client("GET", f"{path}/recoveries/{started['id']}")
        return shown if status == 200 and shown["finished"] else None

    done = await eventually(finished, what="the recovery")
    assert (done["done"], done["succeeded"], done["failed"], done["waiting_for"]) == (3, 3, 0, None)
    assert sorted(r.headers["X-Webhook-Id"] for r in receiver.received[3:]) == sorted(events)
    status, _, listed = await client("GET", f"{path}/recoveries")
    assert status == 200 and [r["id"] for r in listed["recoveries"]] == [started["id"]] and listed["next_cursor"] is None
    assert listed["recoveries"][0]["succeeded"] == 3

    for body, field in (({}, "since"), ({"since": "yesterday"}, "since"), ({"since": _iso(dt.timedelta(hours=1))}, "since"),
                        ({"since": _iso(dt.timedelta(hours=-1)), "until": _iso(dt.timedelta(hours=-2))}, "until"),
                        ({"since": _iso(dt.timedelta(hours=-1)), "extra": 1}, "extra")):
        status, _, refused = await client("POST", f"{path}/recover", json=body)
        assert (status, refused["error"]) == (400, "invalid_request"), body
        assert field in refused["message"], refused

    other = await stack.partner()
    stranger = await stack.partner(org=f"org_{uuid.uuid4().hex[:12]}")
    for caller in (other, stranger):
        status, _, refused = await caller("POST", f"{path}/recover", json={"since": _iso(dt.timedelta(hours=-1))})
        assert (status, refused["error"]) == (404, "not_found")
        status, _, refused = await caller("GET", f"{path}/recoveries/{started['id']}")
        assert (status, refused["error"]) == (404, "not_found")
        status, _, refused = await caller("GET", f"{path}/recoveries")
        assert (status, refused["error"]) == (404, "not_found")
    status, _, mine = await other("POST", "/v1/webhooks", json={"endpoint_url": receiver.url(), "activity_types": ["lot.created"]})
    status, _, refused = await other("GET", f"/v1/webhooks/{mine['id']}/recoveries/{started['id']}")
    assert (status, refused["error"]) == (404, "not_found")
