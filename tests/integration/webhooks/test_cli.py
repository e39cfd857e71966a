"""`trellis webhooks …` and `trellis activities …` against the real webhooks service, with the
actor tokens the CLI signs from its data directory, delivering to a real HTTPS receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest

from services.cli.embedded import ensure_secrets
from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.auth import EDGE_PERMISSION, mint_actor_token
from services.cli.main import run
from tests.support.settings import Settings
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
    assert code == 0 and "1 delivery scheduled" in out, err
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


@pytest.fixture
async def slow_retries(tmp_path: Path, start_webhooks: Callable[..., Awaitable[Webhooks]], capsys: pytest.CaptureFixture[str]):
    """The CLI against a webhooks service whose retries wait an hour, that service, and the
    metadata the edge calls it with (signed with the CLI's key, which the service trusts)."""
    data_dir = tmp_path / "cli-data"
    local = ensure_secrets(data_dir)
    defaults = Settings()
    webhooks = await start_webhooks(actor_public_key_file=str(local.public_key_file), actor_issuer=defaults.actor_issuer,
                                    actor_audience=defaults.actor_audience, org="org_cli_retries",
                                    webhooks_retry_schedule_seconds=[3600, 3600, 3600, 3600])

    async def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(run, [*argv[:2], "--data-dir", str(data_dir), "--org", "org_cli_retries",
                                             "--webhooks-addr", f"127.0.0.1:{webhooks.service.port}", *argv[2:]])
        out, err = capsys.readouterr()
        return code, out, err

    edge_token = mint_actor_token(local.private_key_pem(), issuer=defaults.actor_issuer, audience=defaults.actor_audience,
                                  user_id="trellis-edge", org_id="trellis", permissions=[EDGE_PERMISSION])
    return cli, webhooks, (("authorization", f"Bearer {edge_token}"),)


async def test_the_delivery_log_and_redeliver_say_when_the_next_attempt_goes(slow_retries, receiver: Receiver) -> None:
    trellis, webhooks, _ = slow_retries
    receiver.statuses = [500]
    code, out, err = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created", "--json")
    assert code == 0, err
    sub_id = json.loads(out)["subscription"]["id"]
    await trellis("activities", "publish", "--type", "lot.created")

    async def logged() -> list[dict] | None:
        code, out, _ = await trellis("webhooks", "deliveries", sub_id, "--json")
        return json.loads(out)["attempts"] if code == 0 and json.loads(out)["attempts"] else None

    [attempt] = await eventually(logged)
    next_at = dt.datetime.fromisoformat(attempt["next_attempt_at"].replace("Z", "+00:00"))
    attempted_at = dt.datetime.fromisoformat(attempt["attempted_at"].replace("Z", "+00:00"))
    assert dt.timedelta(seconds=3590) < next_at - attempted_at < dt.timedelta(seconds=3610)
    due = next_at.isoformat(timespec="seconds").replace("+00:00", "Z")

    code, out, _ = await trellis("webhooks", "deliveries", sub_id)
    header, row = out.strip().splitlines()[:2]
    assert "NEXT ATTEMPT" in header and due in row and "HTTP 500" in row

    code, _, err = await trellis("webhooks", "redeliver", attempt["delivery_id"])
    assert code == 1
    assert err == (f"error: FAILED_PRECONDITION: only a failed delivery can be redelivered; this one is pending: "
                   f"attempt 2 is due at {due}\n")

    await trellis("webhooks", "pause", sub_id)
    code, out, _ = await trellis("webhooks", "deliveries", sub_id)
    assert out.rstrip().endswith(f"Subscription {sub_id} is Paused: its pending deliveries wait until it is resumed "
                                 f"(trellis webhooks resume {sub_id}).")


async def test_resume_says_what_happens_when_the_integration_is_suspended(slow_retries, receiver: Receiver) -> None:
    trellis, webhooks, edge = slow_retries
    # The partner's own subscription, made through the edge (an administrator's would need the
    # registry to know the integration).
    integration = f"int_{uuid.uuid4().hex[:10]}"
    created = await webhooks.stub.CreateSubscription(pb.CreateSubscriptionRequest(
        url=receiver.url(), activity_types=["lot.created"], org_id="org_cli_retries", integration_id=integration),
        metadata=edge)
    sub_id = created.subscription.id
    nc = await nats.connect(webhooks.settings.nats_url)
    try:
        event = events_pb2.IntegrationChanged(event_id=f"evt_{uuid.uuid4().hex}", kind="suspended", org_id="org_cli_retries",
                                              integration_id=integration, status="suspended", version=2)
        await nc.jetstream().publish("trellis.integration.suspended", event.SerializeToString())

        async def suspended() -> bool:
            code, out, _ = await trellis("webhooks", "show", sub_id, "--json")
            return code == 0 and json.loads(out)["subscription"]["integration_suspended"]

        await eventually(suspended)
    finally:
        await nc.close()

    code, out, err = await trellis("webhooks", "resume", sub_id)
    assert code == 0, err
    assert out.splitlines()[0] == (f"Webhook subscription {sub_id} was not paused; nothing changed. Its integration "
                                   f"{integration} is suspended: pending deliveries wait until the integration is reactivated.")
    await trellis("webhooks", "pause", sub_id)
    code, out, _ = await trellis("webhooks", "resume", sub_id)
    assert out.splitlines()[0] == (f"Resumed webhook subscription {sub_id}. Its integration {integration} is suspended: "
                                   "pending deliveries wait until the integration is reactivated.")
    code, out, _ = await trellis("webhooks", "resume", sub_id, "--json")
    assert json.loads(out)["resumed"] is False and json.loads(out)["subscription"]["integration_suspended"] is True



async def test_deliveries_attempt_shows_what_was_sent_and_what_came_back(trellis, receiver: Receiver) -> None:
    receiver.answer_headers = {"X-Receiver-Says": "queued"}
    receiver.behaviour = lambda _: (503, "busy \x1b[31mred\x1b[0m, try later")
    code, out, _ = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created", "--json")
    created = json.loads(out)
    sid, secret = created["subscription"]["id"], created["signing_secret"]
    assert (await trellis("activities", "publish", "--type", "lot.created"))[0] == 0
    [got] = await receiver.wait_for(1)

    async def logged() -> list[dict] | None:
        code, out, _ = await trellis("webhooks", "deliveries", sid, "--json")
        return json.loads(out)["attempts"] or None
    [attempt] = await eventually(logged)

    code, out, err = await trellis("webhooks", "deliveries", sid, "--attempt", attempt["id"])
    assert code == 0, err
    assert "Request headers sent" in out and f"X-Webhook-Signature:  {got.headers['X-Webhook-Signature']}" in out
    assert "X-Receiver-Says:" in out and "queued" in out and "503" in out
    assert "busy \\x1b[31mred\\x1b[0m, try later" in out and "\x1b" not in out  # no escape reaches the terminal
    assert secret not in out

    code, out, _ = await trellis("webhooks", "deliveries", sid, "--attempt", attempt["id"], "--json")
    shown = json.loads(out)["attempt"]
    assert {h["name"] for h in shown["exchange"]["request_headers"]} >= {"X-Webhook-Signature", "Host"}

    code, _, err = await trellis("webhooks", "deliveries", sid, "--attempt", "att_nope")
    assert code != 0 and "att_nope" in err


async def test_custom_headers_from_the_command_line_and_stdin_are_sent_and_shown_as_hints(
        trellis, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("stdin-key-abcdef123456\n"))
    code, out, err = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created",
                                   "--header", "X-Tenant=north", "--secret-header", "X-Api-Key")
    assert code == 0, err
    assert "X-Tenant: (5 characters)" in out and "X-Api-Key: …3456 (22 characters)" in out
    assert "stdin-key-abcdef123456" not in out
    sid = next(line.split()[-1] for line in out.splitlines() if line.startswith("ID"))
    assert (await trellis("activities", "publish", "--type", "lot.created"))[0] == 0
    [got] = await receiver.wait_for(1)
    assert got.headers["X-Api-Key"] == "stdin-key-abcdef123456" and got.headers["X-Tenant"] == "north"

    code, _, err = await trellis("webhooks", "update", sid, "--header", "Host=evil.test")
    assert code != 0 and "Host cannot be set" in err
    code, _, err = await trellis("webhooks", "update", sid, "--header", "novalue")
    assert code != 0 and "NAME=VALUE" in err
    code, out, _ = await trellis("webhooks", "show", sid)
    assert "X-Api-Key: …3456" in out  # the refused updates changed nothing
    code, out, _ = await trellis("webhooks", "update", sid, "--clear-headers")
    assert code == 0 and "X-Api-Key" not in out and "X-Tenant" not in out


async def test_a_client_certificate_from_files_is_presented_and_a_bad_one_refused(trellis, tls, tmp_path: Path) -> None:
    import ssl

    from tests.integration.webhooks.receiver import CERT_NAMES
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert(*CERT_NAMES).configure_cert(context)
    tls.ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    receiver = await Receiver(context).start()
    try:
        client = tls.ca.issue_cert("cli-hooks", common_name="cli-hooks")
        cert, key, other = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "o.pem"
        client.cert_chain_pems[0].write_to_path(str(cert))
        client.private_key_pem.write_to_path(str(key))
        tls.ca.issue_cert("other").private_key_pem.write_to_path(str(other))
        code, _, err = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created",
                                     "--client-cert", str(cert), "--client-key", str(other))
        assert code != 0 and "does not match the certificate" in err
        code, out, err = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created",
                                       "--client-cert", str(cert), "--client-key", str(key))
        assert code == 0, err
        assert "CN=cli-hooks," in out and "(SHA-256 " in out and "PRIVATE KEY" not in out
        sid = next(line.split()[-1] for line in out.splitlines() if line.startswith("ID"))
        code, out, _ = await trellis("webhooks", "test", sid)
        assert code == 0 and len(receiver.received) == 1
        code, out, _ = await trellis("webhooks", "update", sid, "--remove-client-cert")
        assert code == 0 and "CN=cli-hooks" not in out
        code, _, err = await trellis("webhooks", "update", sid, "--client-cert", str(cert))
        assert code != 0 and "together" in err
    finally:
        await receiver.stop()


async def test_regenerate_secret_with_an_overlap_and_its_refusals(trellis, receiver: Receiver) -> None:
    from standardwebhooks import Webhook
    code, out, _ = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created",
                                 "--scheme", "standard", "--json")
    created = json.loads(out)
    sid, old = created["subscription"]["id"], created["signing_secret"]
    code, out, err = await trellis("webhooks", "regenerate-secret", sid, "--overlap", "24h")
    assert code == 0, err
    assert "the previous secret signs too until" in out and "Previous secret signs until" in out
    new = next(line.strip() for line in out.splitlines() if line.strip().startswith("whsec_"))
    assert (await trellis("activities", "publish", "--type", "lot.created"))[0] == 0
    [got] = await receiver.wait_for(1)
    for secret in (old, new):
        Webhook(secret).verify(got.body, dict(got.headers))

    code, _, err = await trellis("webhooks", "regenerate-secret", sid, "--overlap", "8d")
    assert code != 0 and "604800 (7 days)" in err
    with pytest.raises(SystemExit) as usage:  # argparse refuses it before anything is sent
        await trellis("webhooks", "regenerate-secret", sid, "--overlap", "soon")
    assert usage.value.code == 2
    code, out, _ = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created", "--json")
    spec_id = json.loads(out)["subscription"]["id"]
    code, _, err = await trellis("webhooks", "regenerate-secret", spec_id, "--overlap", "1h")
    assert code != 0 and "room for one signature" in err
