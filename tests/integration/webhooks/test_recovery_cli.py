"""`trellis webhooks recover`, `recovery` and `retention` against the real webhooks service and
a real HTTPS receiver, with the actor tokens the CLI signs from its data directory."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.integration.webhooks.test_cli import _cli
from tests.support.waiting import eventually


@pytest.fixture
async def trellis(tmp_path: Path, start_webhooks: Callable[..., Awaitable[Webhooks]], capsys: pytest.CaptureFixture[str]):
    return await _cli(tmp_path, start_webhooks, capsys)


async def _failed(trellis, sub_id: str, count: int) -> bool:
    code, out, _ = await trellis("webhooks", "deliveries", sub_id, "--failed", "--json")
    return code == 0 and len(json.loads(out)["attempts"]) == count


async def test_recover_prints_a_progress_bar_until_every_failed_delivery_went_again(trellis, receiver: Receiver) -> None:
    code, out, err = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created", "--json")
    assert code == 0, err
    sub_id = json.loads(out)["subscription"]["id"]
    receiver.behaviour = lambda _: (410, "gone")
    for n in range(3):
        assert (await trellis("activities", "publish", "--type", "lot.created", "--data", f'{{"n": {n}}}'))[0] == 0
    await eventually(lambda: _failed(trellis, sub_id, 3))
    receiver.behaviour = None

    code, out, err = await trellis("webhooks", "recover", sub_id, "--since", "2h")
    assert code == 0, err
    assert "3 of 3 deliveries done (3 succeeded, 0 failed again)" in out
    assert "3/3 deliveries" in err  # the progress bar, on stderr
    assert len({r.headers["X-Webhook-Id"] for r in receiver.received[3:]}) == 3

    code, out, err = await trellis("webhooks", "recover", sub_id, "--since", "2h", "--no-wait", "--json")
    assert code == 0, err
    again = json.loads(out)["recovery"]
    assert again["id"].startswith("rcv_") and again.get("queued", 0) == 0
    code, out, _ = await trellis("webhooks", "recovery", again["id"])
    assert code == 0 and "0 of 0 deliveries done" in out

    code, out, err = await trellis("webhooks", "recoveries", sub_id)
    assert code == 0, err
    rows = [line for line in out.splitlines() if "rcv_" in line]
    assert len(rows) == 2 and again["id"] in rows[0]  # newest first
    assert rows[1].split()[-5:] == ["3", "3", "3", "0", "-"]  # queued, done, succeeded, failed, waiting for
    code, out, err = await trellis("webhooks", "recoveries", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["recoveries"]][0] == again["id"]
    code, _, err = await trellis("webhooks", "recoveries", "whk_nobody")
    assert code == 1 and "NOT_FOUND" in err

    code, _, err = await trellis("webhooks", "recover", sub_id, "--since", "2099-01-01T00:00:00Z")
    assert code == 1 and "INVALID_ARGUMENT" in err and "since" in err
    code, _, err = await trellis("webhooks", "recover", "whk_nobody", "--since", "2h")
    assert code == 1 and "NOT_FOUND" in err


async def test_retention_is_shown_and_set_per_organisation(trellis) -> None:
    code, out, err = await trellis("webhooks", "retention", "show")
    assert code == 0 and "kept 30 days (the default)" in out, err
    code, out, err = await trellis("webhooks", "retention", "set", "--days", "7")
    assert code == 0 and "kept 7 days (this organisation's setting; the default is 30)" in out, err
    code, out, _ = await trellis("webhooks", "retention", "show", "--json")
    assert json.loads(out)["retention"]["days"] == 7
    code, _, err = await trellis("webhooks", "retention", "set", "--days", "5000")
    assert code == 1 and "INVALID_ARGUMENT" in err and "days" in err
    code, out, _ = await trellis("webhooks", "retention", "set", "--days", "0")
    assert code == 0 and "kept 30 days (the default)" in out
