"""`trellis webhooks …` and `trellis activities …` against the real webhooks service, with the
actor tokens the CLI signs from its data directory, delivering to a real HTTPS receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.cli.embedded import ensure_secrets
from services.cli.main import run
from services.kit.settings import Settings
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.integration.webhooks.test_deliveries import docs_receiver
from tests.support.waiting import eventually


@pytest.fixture
async def trellis(tmp_path: Path, start_webhooks: Callable[..., Awaitable[Webhooks]], capsys: pytest.CaptureFixture[str]):
    return await _cli(tmp_path, start_webhooks, capsys)


@pytest.fixture
async def strict_trellis(tmp_path: Path, start_webhooks: Callable[..., Awaitable[Webhooks]],
                         capsys: pytest.CaptureFixture[str]):
    """The CLI against webhooks that allows no private network (the default setting)."""
    return await _cli(tmp_path, start_webhooks, capsys, webhooks_allowed_private_networks=[])


async def _cli(tmp_path: Path, start_webhooks: Callable[..., Awaitable[Webhooks]], capsys: pytest.CaptureFixture[str],
               **settings: object):
    data_dir = tmp_path / "cli-data"
    local = ensure_secrets(data_dir)
    defaults = Settings()
    webhooks = await start_webhooks(actor_public_key_file=str(local.public_key_file), actor_issuer=defaults.actor_issuer,
                                    actor_audience=defaults.actor_audience, **settings)

    async def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(run, [*argv[:2], "--data-dir", str(data_dir), "--org", "org_cli_hooks",
                                             "--webhooks-addr", f"127.0.0.1:{webhooks.service.port}", *argv[2:]])
        out, err = capsys.readouterr()
        return code, out, err

    return cli


async def test_the_webhooks_commands_cover_a_subscriptions_life(trellis, receiver: Receiver) -> None:
    code, out, err = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created,order.created",
                                   "--description", "ERP", "--json")
    assert code == 0, err
    created = json.loads(out)
    secret, sub_id = created["signing_secret"], created["subscription"]["id"]
    assert secret.startswith("whsec_") and created["subscription"]["status"] == "active"
    assert "shown only now" in err

    code, out, _ = await trellis("webhooks", "list")
    assert code == 0 and sub_id in out and "Active" in out

    code, out, err = await trellis("activities", "publish", "--type", "lot.created", "--data", '{"lot_id": "L-3"}')
    assert code == 0 and "1 deliveries scheduled" in out, err
    [got] = await receiver.wait_for(1)
    docs_receiver()["verify_webhook"](secret, got.headers, got.body)  # type: ignore[operator]

    async def logged() -> str | None:
        code, out, _ = await trellis("webhooks", "deliveries", sub_id)
        return out if code == 0 and "lot.created" in out else None

    log = await eventually(logged)
    assert "200" in log

    code, out, _ = await trellis("webhooks", "update", sub_id, "--add-type", "capa.opened", "--remove-type", "order.created", "--json")
    assert code == 0 and json.loads(out)["subscription"]["activity_types"] == ["capa.opened", "lot.created"]

    code, out, _ = await trellis("webhooks", "pause", sub_id)
    assert code == 0 and "Paused" in out
    code, out, _ = await trellis("webhooks", "resume", sub_id)
    assert code == 0 and "Resumed" in out

    code, out, _ = await trellis("webhooks", "test", sub_id)
    assert code == 0 and "succeeded: HTTP 200" in out

    code, out, err = await trellis("webhooks", "regenerate-secret", sub_id)
    assert code == 0 and "whsec_" in out and secret not in out

    receiver.statuses = [404]
    await trellis("activities", "publish", "--type", "capa.opened")
    code, out, _ = await eventually(lambda: _failed(trellis, sub_id))
    delivery_id = json.loads(out)["attempts"][0]["delivery_id"]
    assert json.loads(out)["attempts"][0]["status_code"] == 404
    code, out, _ = await trellis("webhooks", "redeliver", delivery_id)
    assert code == 0 and "round 2" in out
    redelivered = (await receiver.wait_for(4))[3]  # the lot, the test, the 404, and its redelivery
    assert json.loads(redelivered.body)["type"] == "capa.opened"

    code, out, _ = await trellis("webhooks", "show", sub_id)
    assert code == 0 and "https://" in out and "Latest attempts" in out

    code, out, _ = await trellis("webhooks", "delete", sub_id, "--yes")
    assert code == 0 and "Deleted" in out
    code, _, err = await trellis("webhooks", "show", sub_id)
    assert code == 1 and "NOT_FOUND" in err


async def _failed(trellis, sub_id: str) -> tuple[int, str, str] | None:
    result = await trellis("webhooks", "deliveries", sub_id, "--failed", "--json")
    return result if result[0] == 0 and json.loads(result[1])["attempts"] else None


async def test_the_activities_commands_and_errors(trellis) -> None:
    code, out, _ = await trellis("activities", "types")
    assert code == 0 and "final_product_weights.recorded" in out and "Final product weights recorded" in out
    code, out, _ = await trellis("activities", "publish", "--type", "harvest.recorded", "--event-id", "evt_cli_1")
    assert code == 0
    code, out, _ = await trellis("activities", "publish", "--type", "harvest.recorded", "--event-id", "evt_cli_1")
    assert code == 0 and "already received" in out
    code, out, _ = await trellis("activities", "list", "--json")
    assert code == 0 and [a["event_id"] for a in json.loads(out)["activities"]] == ["evt_cli_1"]
    code, _, err = await trellis("webhooks", "create", "--url", "http://plain.example.com", "--type", "lot.created")
    assert code == 1 and "HTTPS" in err
    code, _, err = await trellis("webhooks", "create", "--url", "https://x.example.com", "--type", "lot.nope")
    assert code == 1 and "lot.nope" in err


async def test_create_refuses_a_loopback_receiver_naming_the_setting_that_allows_it(strict_trellis,
                                                                                    receiver: Receiver) -> None:
    code, out, err = await strict_trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created")
    assert code != 0 and "INVALID_ARGUMENT" in err, (out, err)
    assert "127.0.0.1 is refused (loopback)" in err and "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS" in err
    code, out, _ = await strict_trellis("webhooks", "list", "--json")
    assert code == 0 and json.loads(out)["subscriptions"] == []
