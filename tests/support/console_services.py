"""The webhooks and logs services behind the console in its tests: real services on port 0,
SQLite, the session's nats-server, each with its own JetStream durables; webhooks trusting the
test CA of the HTTPS receivers (tests/integration/webhooks/receiver.py) on loopback, with a
retry schedule shrunk to under a few seconds so a receiver's failures take a subscription to
Failing while a test waits."""

from __future__ import annotations

import secrets
import sqlite3
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
