"""`trellis … show` and `redeliver` with ids that are not ours (non-ASCII, spaces, escape
sequences, very long), against real identity, registry, webhooks and logs services: one error
line saying NOT_FOUND (or INVALID_ARGUMENT) and the id, exit code 1; never `INTERNAL: Invalid
metadata`, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.cli.embedded import ensure_secrets
from services.cli.main import run
from tests.support.settings import Settings
from tests.integration.logs.conftest import LogsRunner, js, logs_runner  # noqa: F401 - fixtures reused
from tests.integration.webhooks.conftest import Webhooks, start_webhooks, tls  # noqa: F401 - fixtures reused
from tests.support.services import start_service

ODD = {"non_ascii": "é", "space": "a b", "escape_sequence": "\x1b[31mred", "long": "x" * 5000}


@pytest.fixture
async def trellis(tmp_path: Path, make_settings: Callable[..., Settings], start_webhooks: Callable[..., Awaitable[Webhooks]],  # noqa: F811
                  logs_runner: Callable[..., LogsRunner], capsys: pytest.CaptureFixture[str]):  # noqa: F811
    data_dir = tmp_path / "cli-data"
    local = ensure_secrets(data_dir)
    defaults = Settings()
    trust = {"actor_public_key_file": str(local.public_key_file), "actor_issuer": defaults.actor_issuer,
             "actor_audience": defaults.actor_audience}
    identity = await start_service("identity", make_settings(**trust, data_dir=data_dir))
    registry = await start_service("registry", make_settings(**trust, data_dir=data_dir,
                                                             identity_addr=f"127.0.0.1:{identity.port}"))
    webhooks = await start_webhooks(**trust)
    logs = logs_runner(**trust, audit_hmac_key=local.audit_hmac_key)
    await logs.start()
    assert logs.service is not None
    addresses = ["--identity-addr", f"127.0.0.1:{identity.port}", "--registry-addr", f"127.0.0.1:{registry.port}"]
    extra = {"webhooks": ["--webhooks-addr", f"127.0.0.1:{webhooks.service.port}"],
             "logs": ["--logs-addr", f"127.0.0.1:{logs.service.port}"]}

    async def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(run, [*argv[:2], "--data-dir", str(data_dir), "--org", "org_cli_odd", *addresses,
                                             *extra.get(argv[0], []), *argv[2:]])
        out, err = capsys.readouterr()
        return code, out, err

    try:
        yield cli
    finally:
        await registry.stop(0)
        await identity.stop(0)


@pytest.mark.parametrize("odd", list(ODD.values()), ids=list(ODD))
async def test_showing_an_id_that_is_not_ours_is_one_not_found_line(trellis, odd: str) -> None:  # type: ignore[no-untyped-def]
    for command in (("integrations", "show", f"int_{odd}"), ("webhooks", "show", f"whk_{odd}"),
                    ("webhooks", "redeliver", f"dlv_{odd}"), ("logs", "show", odd)):
        code, out, err = await trellis(*command)
        assert code == 1, (command[:2], out, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (command[:2], err[:300])
        assert "NOT_FOUND" in err or "INVALID_ARGUMENT" in err, (command[:2], err[:300])
        assert "INTERNAL" not in err and "Invalid metadata" not in err and "Traceback" not in err
        assert "\x1b" not in err, "the service's message is shown with control characters escaped"
        if len(odd) < 100:
            assert odd.replace("\x1b", "\\x1b") in err, (command[:2], err)
