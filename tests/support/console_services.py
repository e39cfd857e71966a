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
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as wpb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.db import migrate_async
from services.kit.service import RunningService
from services.logs.adapters.consumers import Durables
from services.logs.entrypoints.main import bootstrap as logs_bootstrap
from services.webhooks.entrypoints.main import bootstrap as webhooks_bootstrap
from tests.support.settings import Settings
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


@contextmanager
def behind_the_service(database: Path, *, bulk: bool = False) -> Iterator[sqlite3.Connection]:
    """A write transaction on a service's SQLite file while the service runs. It begins
    IMMEDIATE, taking the write lock (waiting up to 30 s for the service's) before it reads: a
    deferred one reads first, and when the service commits while it waits for the lock its
    snapshot is stale and SQLite fails it at once ("database is locked") without waiting.
    `bulk` trades durability for speed, for rows generated in their thousands."""
    db = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        if bulk:
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA cache_size=-200000")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


async def change_behind_the_service(database: Path, change: Callable[[sqlite3.Connection], object]) -> None:
    """`change(db)` in a write transaction behind a running service's back, on a thread: the
    service under test shares the test's event loop, and a write it has begun commits only when
    that loop runs, so waiting for its lock on the loop's own thread would wait out the timeout
    and fail ("database is locked")."""
    def run() -> None:
        with behind_the_service(database) as db:
            change(db)
    await asyncio.to_thread(run)


async def tamper_audit_entry(database: Path, org: str, seq: int, *, reason: str) -> None:
    """Change one audit entry in the logs database behind the service's back, as an intruder with
    write access to it would."""
    def tamper(db: sqlite3.Connection) -> None:
        changed = db.execute("UPDATE audit_entries SET reason = ? WHERE org_id = ? AND seq = ?", (reason, org, seq))
        assert changed.rowcount == 1, (org, seq)
    await change_behind_the_service(database, tamper)


async def delete_audit_entry(database: Path, org: str, seq: int) -> None:
    """Delete one audit entry behind the service's back."""
    def delete(db: sqlite3.Connection) -> None:
        deleted = db.execute("DELETE FROM audit_entries WHERE org_id = ? AND seq = ?", (org, seq))
        assert deleted.rowcount == 1, (org, seq)
    await change_behind_the_service(database, delete)


async def insert_audit_entry(database: Path, org: str, seq: int, *, event_id: str, action: str) -> None:
    """Slip a forged entry in at position `seq`, as a copy of the entry before it with another
    event id, action and a MAC the intruder made up. A position inside the chain moves the
    entries from there one place on first (their MACs untouched), as a careful intruder would;
    one past the end is simply added."""
    def insert(db: sqlite3.Connection) -> None:
        later = [n for (n,) in db.execute("SELECT seq FROM audit_entries WHERE org_id = ? AND seq >= ? "
                                          "ORDER BY seq DESC", (org, seq))]
        for n in later:
            db.execute("UPDATE audit_entries SET seq = seq + 1 WHERE org_id = ? AND seq = ?", (org, n))
        columns = [row[1] for row in db.execute("PRAGMA table_info(audit_entries)")]
        row = dict(zip(columns, db.execute("SELECT * FROM audit_entries WHERE org_id = ? AND seq = ?",
                                           (org, seq - 1)).fetchone(), strict=True))
        row.update(seq=seq, event_id=event_id, action=action, mac="ab" * 32)
        db.execute(f"INSERT INTO audit_entries ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                   [row[c] for c in columns])
    await change_behind_the_service(database, insert)


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


async def publish_activity(port: int, token: str, type_: str = "lot.created", data_json: str = '{"lot_id": "L-1"}') -> None:
    """One platform activity, as the platform publishes it (the webhooks service's gRPC API)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await webhooks_pb2_grpc.WebhooksStub(channel).PublishActivity(
            wpb.PublishActivityRequest(type=type_, data_json=data_json),
            metadata=(("authorization", f"Bearer {token}"),))


def generate_requests(database: Path, org: str, rows: int) -> None:
    """`rows` API requests of `org` straight into the logs store, one millisecond apart and ending
    now: seven integrations (`int_00`…`int_06`), every 50th a 429, every 97th a 503, a thousand
    endpoints. One INSERT … SELECT over a recursive CTE, the secondary indexes dropped first and
    built again after: seconds instead of minutes."""
    end = int(time.time())
    with behind_the_service(database, bulk=True) as db:
        indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'api_requests' "
                             "AND sql IS NOT NULL").fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        db.execute("""
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last)
            INSERT INTO api_requests (org_id, request_id, ts, integration_id, method, endpoint, status, duration_ms,
                                      ip, error_code, scope_category, repeats)
            SELECT :org, printf('req-%07d', i),
                   strftime('%Y-%m-%d %H:%M:%S', :start + i / 1000, 'unixepoch') || printf('.%06d', (i % 1000) * 1000),
                   printf('int_%02d', i % 7), CASE WHEN i % 5 = 0 THEN 'POST' ELSE 'GET' END,
                   printf('/v1/inventory/lots/%d', i % 1000),
                   CASE WHEN i % 50 = 0 THEN 429 WHEN i % 97 = 0 THEN 503 ELSE 200 END, 1.5 + (i % 40),
                   printf('203.0.113.%d', i % 200),
                   CASE WHEN i % 50 = 0 THEN 'rate_limit_exceeded' WHEN i % 97 = 0 THEN 'upstream_unavailable'
                        ELSE '' END, 'inventory', 1
            FROM n""", {"last": rows - 1, "org": org, "start": end - rows // 1000})
        for _, sql in indexes:
            db.execute(sql)


def generate_attempts(database: Path, org: str, subscription_id: str, rows: int) -> None:
    """`rows` delivery attempts of one subscription straight into the webhooks store, one a second
    ending now: every tenth failed with a 503, attempts 1 to 5 in turn."""
    end = int(time.time())
    with behind_the_service(database, bulk=True) as db:
        db.execute("""
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last)
            INSERT INTO attempts (id, org_id, delivery_id, subscription_id, event_id, event_type, round, attempt,
                                  attempted_at, duration_ms, status_code, succeeded, error, error_detail, response_body,
                                  url, test, sent_by)
            SELECT printf('att_bench%08d', i), :org, printf('dlv_bench%08d', i / 5), :sub, printf('evt_bench%08d', i / 5),
                   'lot.created', 1, 1 + i % 5, strftime('%Y-%m-%d %H:%M:%S', :start + i, 'unixepoch') || '.000000',
                   12.5, CASE WHEN i % 10 = 0 THEN 503 ELSE 200 END, CASE WHEN i % 10 = 0 THEN 0 ELSE 1 END,
                   CASE WHEN i % 10 = 0 THEN 'http_status' ELSE 'none' END,
                   CASE WHEN i % 10 = 0 THEN 'HTTP 503' ELSE '' END, 'ok', 'https://127.0.0.1:9/hook', 0, 'bench'
            FROM n""", {"last": rows - 1, "org": org, "sub": subscription_id, "start": end - rows})
