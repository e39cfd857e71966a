"""Fixtures for the logs service: a real service on port 0 with its own durable consumer
names (the session shares one nats-server), and a JetStream client to publish what the edge
and the other services would."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.kit.bus import ensure_streams
from services.kit.db import migrate_async
from services.kit.service import RunningService
from tests.support.settings import Settings
from services.logs.adapters.consumers import Durables
from services.logs.entrypoints.main import bootstrap
from tests.support.services import channel_to
from tests.support.waiting import eventually


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


@dataclass
class LogsRunner:
    """Starts and stops the logs service; the same durable names across restarts."""

    settings: Settings
    durables: Durables = field(default_factory=lambda: Durables.prefixed(unique("logs")))
    service: RunningService | None = None
    channel: grpc.aio.Channel | None = None

    async def start(self) -> logs_pb2_grpc.LogsStub:
        await migrate_async("logs", self.settings.database_url("logs"))
        self.service = await (await bootstrap(self.settings, address="127.0.0.1:0", durables=self.durables)).start()
        self.channel = channel_to(self.service)
        return logs_pb2_grpc.LogsStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.service is not None:
            await self.service.stop(0)
            self.service = None


@pytest.fixture
async def logs_runner(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., LogsRunner]]:
    runners: list[LogsRunner] = []

    def _make(**overrides: object) -> LogsRunner:
        runner = LogsRunner(make_settings(**overrides))
        runners.append(runner)
        return runner

    yield _make
    for runner in runners:
        await runner.stop()


@pytest.fixture
async def logs_stub(logs_runner: Callable[..., LogsRunner]) -> logs_pb2_grpc.LogsStub:
    return await logs_runner().start()


@pytest.fixture
async def js(nats_server) -> AsyncIterator[JetStreamContext]:  # type: ignore[no-untyped-def]
    nc = await nats.connect(nats_server.url)
    context = nc.jetstream()
    await ensure_streams(context)
    yield context
    await nc.close()


def ts(when: dt.datetime):  # type: ignore[no-untyped-def]
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


Publish = Callable[..., Awaitable[None]]


async def consumed(js: JetStreamContext, stream: str, durable: str) -> None:
    """Wait until the logs service's durable consumer has acked every message it was sent: each one
    published before the call is stored (a consumer acks only after its commit), or dropped. For a
    copy that must change nothing: a count that is right before the copy arrives proves nothing."""
    async def settled() -> bool:
        info = await js.consumer_info(stream, durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(settled, timeout=20, what=f"{durable} to take every message of {stream}")


def request_record(*, org: str, request_id: str, when: dt.datetime, integration: str = "int_x", method: str = "GET",
                   endpoint: str = "/lots", status: int = 200, ip: str = "203.0.113.9", error: str = "",
                   category: str = "inventory") -> events_pb2.ApiRequestLogged:
    return events_pb2.ApiRequestLogged(
        request_id=request_id, occurred_at=ts(when), org_id=org, integration_id=integration, method=method,
        endpoint=endpoint, status=status, duration_ms=3.25, ip=ip, error_code=error, scope_category=category,
    )


async def publish_request(js: JetStreamContext, *, msg_id: str | None = None, **fields: object) -> None:
    """One record alone on `apilog.request`, as publishers other than the edge send it."""
    record = request_record(**fields)  # type: ignore[arg-type]
    await js.publish("apilog.request", record.SerializeToString(), headers={"Nats-Msg-Id": msg_id or record.request_id})


async def publish_batch(js: JetStreamContext, records: list[events_pb2.ApiRequestLogged], *, batch_id: str) -> None:
    """Many records in one `ApiRequestBatch` on `apilog.batch`, as the edge sends them."""
    batch = events_pb2.ApiRequestBatch(records=records)
    await js.publish("apilog.batch", batch.SerializeToString(), headers={"Nats-Msg-Id": batch_id})


async def publish_audit(js: JetStreamContext, *, org: str, event_id: str, action: str = "integration.updated",
                        actor: str = "alice", object_id: str = "int_x", when: dt.datetime | None = None) -> None:
    event = events_pb2.AuditEvent(
        event_id=event_id, occurred_at=ts(when or dt.datetime.now(dt.timezone.utc)), service="registry", org_id=org,
        actor_id=actor, action=action, object_type="integration", object_id=object_id, before_json="{}",
        after_json='{"rate_limit_per_minute": 120}', reason="", request_id=unique("req"),
    )
    await js.publish(f"trellis.audit.registry.{action}", event.SerializeToString(), headers={"Nats-Msg-Id": event_id})


async def publish_integration(js: JetStreamContext, *, org: str, integration: str, version: int, name: str,
                              status: str = "active", scopes: tuple[str, ...] = ("inventory:read",),
                              rate_limit: int = 60, allowlist: tuple[str, ...] = (),
                              credentials_issued_at: dt.datetime | None = None, owner: str = "olivia") -> None:
    event = events_pb2.IntegrationChanged(
        event_id=unique("evt"), occurred_at=ts(dt.datetime.now(dt.timezone.utc)), kind="updated", org_id=org,
        integration_id=integration, status=status, scopes=list(scopes), rate_limit_per_minute=rate_limit,
        daily_quota=0, ip_allowlist=list(allowlist), version=version, actor_id="alice", name=name, owner=owner,
        vendor_id="sap",
    )
    if credentials_issued_at is not None:
        event.credentials_issued_at.CopyFrom(ts(credentials_issued_at))
    await js.publish("trellis.integration.updated", event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id})
