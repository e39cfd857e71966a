"""The webhook samples of docs/partners.md ("Managing webhooks through the API", its `bash`
blocks) run as written against a real edge, webhooks service and HTTPS receiver.
(tests/integration/edge/test_partner_docs.py runs the guide's `sh` and `python` blocks.)"""

from __future__ import annotations

import json
import re

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.edge.test_partner_docs import blocks, run, sample_environment
from tests.integration.edge_webhooks.conftest import Stack, verifies
from tests.integration.webhooks.receiver import Receiver

# Interleaved with the guide's blocks: what the test needs to check afterwards.
AFTER_CREATE = 'echo "FIRST_SECRET=$WEBHOOK_SECRET"; echo "WEBHOOK_ID=$WEBHOOK_ID"'
AFTER_ALL = 'echo "LAST_SECRET=$WEBHOOK_SECRET"'


async def test_the_webhook_samples_run_against_a_real_edge(stack: Stack, receiver: Receiver) -> None:
    client = await stack.partner()
    samples = blocks("bash")
    assert len(samples) == 6 and "POST" in samples[0] and "/recover" in samples[4] and "/v1/activities" in samples[5]
    published = [(await stack.webhooks.publish("lot.created", json.dumps({"n": n}))).event_id for n in range(3)]
    receiver.statuses = [500]  # the test delivery fails, so the redelivery sample has one to send again

    script = "\n".join(["set -euo pipefail", samples[0], AFTER_CREATE, *samples[1:], AFTER_ALL])
    env = {**sample_environment(stack.edge, client.partner), "RECEIVER_URL": receiver.url()}
    out = await run(["bash", "-s"], env, script.encode())

    values = dict(re.findall(r"^(FIRST_SECRET|LAST_SECRET|WEBHOOK_ID)=(.*)$", out, re.MULTILINE))
    first, last = values["FIRST_SECRET"], values["LAST_SECRET"]
    assert first.startswith("whsec_") and last.startswith("whsec_") and first != last
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {"id": values["WEBHOOK_ID"], "endpoint_url": receiver.url(), "activity_types": ["lot.created", "order.status_changed"],
            "status": "active"} in lines
    assert {"succeeded": False, "status_code": 500, "error_detail": "HTTP 500"} in lines  # the test delivery
    (failed,) = [line for line in lines if line.get("event_type") == "webhook.test"]
    assert {"id": failed["id"], "status": "pending", "round": 2} in lines  # redelivered
    assert {"round": 1, "attempt": 1, "status_code": 500, "error": "http_status"} in lines
    assert {"id": values["WEBHOOK_ID"], "activity_types": ["*"]} in lines
    assert {"queued": 0, "succeeded": 0, "failed": 0} in lines  # the recovery: nothing but a test had failed
    assert re.search(r"^paused$", out, re.MULTILINE) and re.search(r"^active$", out, re.MULTILINE)
    assert [line["id"] for line in lines if line.get("type") == "lot.created"] == list(reversed(published))
    assert {"id": values["WEBHOOK_ID"], "deleted": True} == {k: v for k, v in lines[-1].items() if k != "cancelled_deliveries"}

    test_delivery = receiver.received[0]
    assert json.loads(test_delivery.body)["type"] == "webhook.test" and verifies(test_delivery, first)
    everything = await stack.webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=stack.webhooks.admin)
    assert list(everything.subscriptions) == []  # the last sample deleted it
