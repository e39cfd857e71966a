"""Setup requests on SQLite and PostgreSQL: round trip with history, the sealed blob at rest,
organisation isolation, one request per (organisation, request id), optimistic saves, and
keyset pages in both orders."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.crypto import Envelope
from services.kit.db import create_engine, migrate_async, session_factory
from services.kit.errors import Aborted, InvalidArgument, NotFound
from services.kit.ids import new_id
from services.kit.uow import WriteConflict
from services.registry.adapters.store import SetupRequestRepository, SqlRegistryUnitOfWork, outbox, setup_requests
from services.registry.application.handlers import setup_secrets_aad
from services.registry.domain.setup import SetupRequest, SetupRequestChanged, SetupStatus, prebuilt, validate_connection

T0 = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.timezone.utc)
WOO = {"store_url": "https://shop.example.com", "consumer_key": "ck_1", "consumer_secret": "cs_plain_value"}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate_async("registry", database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def make(org: str, *, minutes: int = 0, request_id: str = "") -> SetupRequest:
    return SetupRequest.submit(
        id=new_id("setup"), org_id=org, prebuilt_id="woocommerce",
        details=validate_connection(prebuilt("woocommerce"), WOO), requested_by="rita",
        request_id=request_id or new_id("req"), now=T0 + dt.timedelta(minutes=minutes), contact_email="a@example.com",
        notes="héllo",
    )


async def test_a_request_round_trips_with_its_history_and_its_secrets_only_sealed(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    envelope = Envelope({1: os.urandom(32)}, 1)
    r = make("org_round")
    r.start("op", T0 + dt.timedelta(hours=1))
    sealed = envelope.seal(b'{"consumer_secret": "cs_plain_value"}', setup_secrets_aad(r.id))
    async with sessions() as session, session.begin():
        await SetupRequestRepository(session).add(r, sealed)
    async with sessions() as session:
        loaded = await SetupRequestRepository(session).get("org_round", r.id)
        row = (await session.execute(select(setup_requests).where(setup_requests.c.id == r.id))).mappings().one()
    assert loaded == r and loaded.history[-1].at.tzinfo is not None
    assert "cs_plain_value" not in repr(dict(row)) and bytes(row["sealed_secrets"]) == sealed
    assert b"cs_plain_value" in envelope.open(bytes(row["sealed_secrets"]), setup_secrets_aad(r.id))


async def test_another_organisations_request_is_not_found_but_lookup_finds_it(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    r = make("org_mine")
    async with sessions() as session, session.begin():
        await SetupRequestRepository(session).add(r, None)
    async with sessions() as session:
        repo = SetupRequestRepository(session)
        with pytest.raises(NotFound):
            await repo.get("org_other", r.id)
        assert (await repo.lookup(r.id)).org_id == "org_mine"
        assert (await repo.by_request_id("org_mine", r.request_id)) == r
        assert await repo.by_request_id("org_other", r.request_id) is None


async def test_one_request_per_organisation_and_request_id(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with SqlRegistryUnitOfWork(sessions, postgres=False) as uow:
        await uow.setup_requests.add(make("org_a", request_id="req-1"), None)
        await uow.setup_requests.add(make("org_b", request_id="req-1"), None)
        await uow.commit()
    with pytest.raises(WriteConflict):
        async with SqlRegistryUnitOfWork(sessions, postgres=False) as uow:
            await uow.setup_requests.add(make("org_a", request_id="req-1"), None)
            await uow.commit()


async def test_a_save_over_a_moved_version_is_aborted(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    r = make("org_v")
    async with sessions() as session, session.begin():
        await SetupRequestRepository(session).add(r, None)
    r.start("op", T0)
    async with sessions() as session, session.begin():
        await SetupRequestRepository(session).save(r, expected_version=1)
    with pytest.raises(Aborted):
        async with sessions() as session, session.begin():
            await SetupRequestRepository(session).save(r, expected_version=1)
    async with sessions() as session:
        assert (await SetupRequestRepository(session).get("org_v", r.id)).status is SetupStatus.IN_PROGRESS


async def test_pages_run_newest_first_for_an_organisation_and_oldest_first_for_the_queue(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    mine = [make("org_p", minutes=n) for n in range(5)]
    theirs = make("org_q", minutes=2)
    async with sessions() as session, session.begin():
        for r in [*mine, theirs]:
            await SetupRequestRepository(session).add(r, None)

    async def walk(org: str | None, **kw: object) -> list[str]:
        ids, token = [], ""
        while True:
            async with sessions() as session:
                page = await SetupRequestRepository(session).list_page(org, page_size=2, page_token=token, **kw)  # type: ignore[arg-type]
            ids += [r.id for r in page.setup_requests]
            if not (token := page.next_page_token):
                return ids

    assert await walk("org_p") == [r.id for r in reversed(mine)]
    queue = await walk(None)
    assert [i for i in queue if i in {r.id for r in mine} | {theirs.id}] == [
        mine[0].id, mine[1].id, *sorted([mine[2].id, theirs.id]), mine[3].id, mine[4].id]
    assert await walk("org_p", statuses=[SetupStatus.DECLINED]) == []
    async with sessions() as session:
        with pytest.raises(InvalidArgument):
            await SetupRequestRepository(session).list_page("org_p", page_size=-1)
        with pytest.raises(InvalidArgument):
            await SetupRequestRepository(session).list_page("org_p", page_token="not-a-token")


async def test_a_change_is_one_audit_row_in_the_outbox_without_secrets(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    r = make("org_audit")
    async with SqlRegistryUnitOfWork(sessions, postgres=False) as uow:
        await uow.setup_requests.add(r, b"sealed")
        await uow.publish_setup(SetupRequestChanged("submitted", None, r, "rita", request_id=r.request_id))
        await uow.commit()
    async with sessions() as session:
        (row,) = (await session.execute(select(outbox.c.subject, outbox.c.payload))).all()
    assert row.subject == "trellis.audit.registry.setup_request.submitted"
    event = events_pb2.AuditEvent.FromString(row.payload)
    assert (event.object_type, event.object_id, event.action, event.org_id) == (
        "setup_request", r.id, "setup_request.submitted", "org_audit")
    assert "cs_plain_value" not in event.after_json and "consumer_secret" in event.after_json


async def test_the_sealed_blob_is_read_back_and_a_save_that_erases_it_leaves_null(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    r, kept = make("org_erase"), make("org_erase", minutes=1)
    async with sessions() as session, session.begin():
        repo = SetupRequestRepository(session)
        await repo.add(r, b"TE1-sealed-blob")
        await repo.add(kept, b"TE1-other-blob")
    async with sessions() as session, session.begin():
        repo = SetupRequestRepository(session)
        assert await repo.sealed_secrets(r.id) == b"TE1-sealed-blob"
        assert await repo.sealed_secrets("setup_nope") is None
        r.start("op", T0)
        await repo.save(r, expected_version=1)  # a save without erase keeps the blob
        assert await repo.sealed_secrets(r.id) == b"TE1-sealed-blob"
        r.decline("op", "Store unreachable", T0)
        await repo.save(r, expected_version=2, erase_secrets=True)
    async with sessions() as session:
        rows = {row["id"]: row for row in (await session.execute(
            select(setup_requests).where(setup_requests.c.org_id == "org_erase"))).mappings()}
        loaded = await SetupRequestRepository(session).get("org_erase", r.id)
    assert rows[r.id]["sealed_secrets"] is None and bytes(rows[kept.id]["sealed_secrets"]) == b"TE1-other-blob"
    assert loaded.secrets_given == ["consumer_key", "consumer_secret"] and loaded.history[-1].action == "secrets_erased"


async def test_migration_0003_erases_the_secrets_of_requests_that_ended_before_it(database_url: str) -> None:
    await migrate_async("registry", database_url, "0002")
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        ended, going = make("org_mig"), make("org_mig", minutes=1)
        ended.start("op", T0)
        ended.status = SetupStatus.CONFIGURED  # as a request completed before 0003 was stored: blob kept
        going.start("op", T0)
        async with sessions() as session, session.begin():
            await SetupRequestRepository(session).add(ended, b"TE1-ended")
            await SetupRequestRepository(session).add(going, b"TE1-going")
        await migrate_async("registry", database_url)
        async with sessions() as session:
            repo = SetupRequestRepository(session)
            assert await repo.sealed_secrets(ended.id) is None
            assert await repo.sealed_secrets(going.id) == b"TE1-going"
    finally:
        await engine.dispose()
