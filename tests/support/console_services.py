"""The webhooks and logs services behind the console in its tests: real services on port 0,
SQLite, the session's nats-server, each with its own JetStream durables; webhooks trusting the
test CA of the HTTPS receivers (tests/integration/webhooks/receiver.py) on loopback, with a
retry schedule shrunk to under a few seconds so a receiver's failures take a subscription to
Failing while a test waits."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from services.kit.db import migrate_async
from services.kit.service import RunningService
from services.kit.settings import Settings
from services.logs.consumers import Durables
from services.logs.main import bootstrap as logs_bootstrap
from services.webhooks.main import bootstrap as webhooks_bootstrap
from tests.integration.webhooks.receiver import Tls

# Attempt 2 0.2 s after attempt 1, then 0.3, 0.4, 0.5: five attempts within about two seconds.
FAST_SCHEDULE = [0.2, 0.3, 0.4, 0.5]
LOOPBACK = ["127.0.0.0/8", "::1/128"]
UNREACHABLE = "127.0.0.1:1"  # refuses at once: a test that starts no such service reaches no other


async def start_webhooks(make_settings: Callable[..., Settings], tls: Tls, *, registry_addr: str) -> RunningService:
    settings = make_settings(
        webhooks_ca_bundle=str(tls.ca_file), webhooks_allowed_private_networks=LOOPBACK,
        webhooks_retry_schedule_seconds=FAST_SCHEDULE, webhooks_timeout_seconds=2.0, webhooks_poll_seconds=0.2,
        webhooks_consumer_name=f"webhooks-{uuid.uuid4().hex[:12]}", registry_addr=registry_addr)
    await migrate_async("webhooks", settings.database_url("webhooks"))
    service = await webhooks_bootstrap(settings, address="127.0.0.1:0", replay_history=False)
    return await service.start()


async def start_logs(make_settings: Callable[..., Settings], **overrides: object) -> RunningService:
    settings = make_settings(**overrides)
    await migrate_async("logs", settings.database_url("logs"))
    service = await logs_bootstrap(settings, address="127.0.0.1:0",
                                   durables=Durables.prefixed(f"console-logs-{secrets.token_hex(5)}"))
    return await service.start()


def database_file(settings: Settings, service: str) -> Path:
    """The SQLite file of a service under test."""
    url = settings.database_url(service)
    assert url.startswith("sqlite"), url
    return Path(url.split("///", 1)[1])


def tamper_audit_entry(database: Path, org: str, seq: int, *, reason: str) -> None:
    """Change one audit entry in the logs database behind the service's back, as an intruder with
    write access to it would."""
    with sqlite3.connect(database) as db:
        changed = db.execute("UPDATE audit_entries SET reason = ? WHERE org_id = ? AND seq = ?", (reason, org, seq))
        assert changed.rowcount == 1, (org, seq)


async def trellis_cli(*argv: str, data_dir: Path, private_pem: bytes, settings: Settings) -> tuple[int, str, str]:
    """`python -m services.cli *argv` as the test's actors: its data directory holds the key the
    services under test verify actor tokens with, and it names their issuer and audience."""
    secrets_dir = data_dir / "secrets"
    if not secrets_dir.exists():
        secrets_dir.mkdir(parents=True)
        (secrets_dir / "actor_private.pem").write_bytes(private_pem)
        (secrets_dir / "actor_public.pem").write_bytes(Path(settings.actor_public_key_file).read_bytes())
        (secrets_dir / "kek").write_text(base64.b64encode(os.urandom(32)).decode())
    env = {**os.environ, "TRELLIS_MODE": "embedded", "TRELLIS_ACTOR_ISSUER": settings.actor_issuer,
           "TRELLIS_ACTOR_AUDIENCE": settings.actor_audience, "TRELLIS_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *argv, "--data-dir", str(data_dir), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
