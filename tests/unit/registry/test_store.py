"""The registry's tables on SQLite and PostgreSQL: migrations, round trip, isolation, listing,
and its unit of work's outbox rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory
from services.kit.errors import Aborted, InvalidArgument, NotFound
from services.kit.ids import new_id
from services.registry.adapters.store import IntegrationRepository, SqlRegistryUnitOfWork, metadata, outbox
from services.registry.domain.model import HistoryEntry, Integration, IntegrationChanged, Status

T0 = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate_async("registry", database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


Repo = Callable[[AsyncSession], IntegrationRepository]


@pytest.fixture
def repo(database_url: str) -> Repo:
    """The repository on a session: repo(session).add(...)."""
    return lambda session: IntegrationRepository(session, postgres=not is_sqlite(database_url))


def make(org: str, *, vendor: str = "sap", minutes: int = 0, status: Status = Status.REQUESTED) -> Integration:
    i = Integration.request(
        id=new_id("int"), org_id=org, vendor_id=vendor, name=f"{vendor} sync", owner="olivia",
        requested_by="rita", now=T0 + dt.timedelta(minutes=minutes),
        scopes=["orders:read", "crm:write"], rate_limit_per_minute=120, daily_quota=5000,
        ip_allowlist=["10.0.0.0/8", "2001:db8::1"], description="orders into SAP",
    )
    i.status = status
    return i


async def test_migrations_match_the_metadata(engine: AsyncEngine) -> None:
    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})  # type: ignore[arg-type]
        return compare_metadata(context, metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_integration_round_trips_every_field(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    i = make("org_round")
    i.approve("alex", T0)
    i.activate(api_key_prefix="grq_live_abcdefg", client_id="cli_round", now=T0 + dt.timedelta(seconds=1))
    async with sessions() as session, session.begin():
        await repo(session).add(i)
    async with sessions() as session:
        loaded = await repo(session).get("org_round", i.id)
    assert loaded == i
    assert loaded.activated_at is not None and loaded.activated_at.tzinfo is not None


async def test_another_organisations_integration_is_not_found(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    mine = make("org_mine")
    async with sessions() as session, session.begin():
        await repo(session).add(mine)
    async with sessions() as session:
        with pytest.raises(NotFound):
            await repo(session).get("org_other", mine.id)
        with pytest.raises(NotFound):
            await repo(session).history("org_other", mine.id)
        assert (await repo(session).list_page("org_other")).integrations == []
        assert await repo(session).count_live("org_other") == 0


async def test_save_refuses_a_stale_version(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    i = make("org_cas")
    async with sessions() as session, session.begin():
        await repo(session).add(i)
    first, second = i.copy(), i.copy()
    first.update({"owner": "first writer"}, T0)
    second.update({"owner": "second writer"}, T0)
    async with sessions() as session, session.begin():
        await repo(session).save(first, expected_version=1)
    with pytest.raises(Aborted):
        async with sessions() as session, session.begin():
            await repo(session).save(second, expected_version=1)
    async with sessions() as session:
        assert (await repo(session).get("org_cas", i.id)).owner == "first writer"


async def test_list_filters_by_status_and_vendor_newest_first(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    rows = [
        make("org_list", vendor="sap", minutes=1, status=Status.ACTIVE),
        make("org_list", vendor="xero", minutes=2, status=Status.SUSPENDED),
        make("org_list", vendor="sap", minutes=3, status=Status.REQUESTED),
        make("org_list", vendor="sap", minutes=4, status=Status.SUSPENDED),
        make("org_else", vendor="sap", minutes=5, status=Status.ACTIVE),
    ]
    async with sessions() as session, session.begin():
        for r in rows:
            await repo(session).add(r)
    async with sessions() as session:
        everything = await repo(session).list_page("org_list")
        live = await repo(session).list_page("org_list", statuses=[Status.ACTIVE, Status.SUSPENDED])
        sap_suspended = await repo(session).list_page("org_list", statuses=[Status.SUSPENDED], vendor_id="sap")
        xero = await repo(session).list_page("org_list", vendor_id="xero")
        assert await repo(session).count_live("org_list") == 3
    assert [i.id for i in everything.integrations] == [rows[3].id, rows[2].id, rows[1].id, rows[0].id]
    assert everything.next_page_token == ""
    assert [i.id for i in live.integrations] == [rows[3].id, rows[1].id, rows[0].id]
    assert [i.id for i in sap_suspended.integrations] == [rows[3].id]
    assert [i.id for i in xero.integrations] == [rows[1].id]


async def test_list_pages_with_an_opaque_token(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    # Two share a creation instant: the id breaks the tie, so no page repeats or skips one.
    rows = [make("org_pages", minutes=m) for m in (0, 1, 1, 2, 3, 4, 5)]
    async with sessions() as session, session.begin():
        for r in rows:
            await repo(session).add(r)
    seen: list[str] = []
    token = ""
    pages = 0
    async with sessions() as session:
        while True:
            page = await repo(session).list_page("org_pages", page_size=3, page_token=token)
            seen += [i.id for i in page.integrations]
            pages += 1
            token = page.next_page_token
            if not token:
                break
    expected = [i.id for i in sorted(rows, key=lambda i: (i.created_at, i.id), reverse=True)]
    assert seen == expected
    assert pages == 3


async def test_list_page_size_is_bounded_and_tokens_are_checked(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        with pytest.raises(InvalidArgument, match="page_token"):
            await repo(session).list_page("org_x", page_token="not-a-token")
        with pytest.raises(InvalidArgument, match="page_size"):
            await repo(session).list_page("org_x", page_size=-1)
        assert (await repo(session).list_page("org_x", page_size=100_000)).integrations == []


async def test_history_rows_come_back_oldest_first(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    i = make("org_hist")
    entries = [
        HistoryEntry(new_id("hst"), "org_hist", i.id, "created", "rita", None, Status.REQUESTED, "", "", "{}", T0),
        HistoryEntry(new_id("hst"), "org_hist", i.id, "approved", "alex", Status.REQUESTED, Status.APPROVED, "",
                     "{}", "{}", T0 + dt.timedelta(seconds=5)),
    ]
    async with sessions() as session, session.begin():
        await repo(session).add(i)
        for e in reversed(entries):
            await repo(session).add_history(e)
    async with sessions() as session:
        assert await repo(session).history("org_hist", i.id) == entries


async def test_a_lease_is_granted_once_in_the_right_state_until_released_or_stale(
    engine: AsyncEngine, repo: Repo
) -> None:
    sessions = session_factory(engine)
    i = make("org_lease", status=Status.APPROVED)
    async with sessions() as session, session.begin():
        await repo(session).add(i)
    fresh, stale = T0 - dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=3)

    async def claim(lease: str, *, status: Status = Status.APPROVED, at: dt.datetime = T0, stale_before: dt.datetime = fresh) -> bool:
        async with sessions() as session, session.begin():
            return await repo(session).claim("org_lease", i.id, lease=lease, status=status, now=at, stale_before=stale_before)

    assert await claim("req-other-state", status=Status.SUSPENDED) is False
    assert await claim("req-first") is True
    assert await claim("req-second") is False  # held, and not stale
    assert await claim("req-after-crash", at=stale, stale_before=T0 + dt.timedelta(seconds=1)) is True  # taken over
    async with sessions() as session, session.begin():
        assert await repo(session).holds("org_lease", i.id, "req-after-crash")
        assert not await repo(session).release("org_lease", i.id, "req-first")  # no longer its lease
        assert await repo(session).release("org_lease", i.id, "req-after-crash")
    assert await claim("req-next") is True


async def test_saving_under_a_lease_needs_it_and_ends_it(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    i = make("org_lease_save", status=Status.APPROVED)
    async with sessions() as session, session.begin():
        await repo(session).add(i)
        assert await repo(session).claim("org_lease_save", i.id, lease="req-1", status=Status.APPROVED, now=T0, stale_before=T0)
    changed = i.copy()
    changed.update({"owner": "new owner"}, T0)
    with pytest.raises(Aborted):
        async with sessions() as session, session.begin():
            await repo(session).save(changed, expected_version=1, lease="req-2")
    async with sessions() as session, session.begin():
        await repo(session).save(changed, expected_version=1, lease="req-1")
    async with sessions() as session:
        assert not await repo(session).holds("org_lease_save", i.id, "req-1")
        assert (await repo(session).get("org_lease_save", i.id)).owner == "new owner"


async def test_lookup_finds_an_integration_of_any_organisation(engine: AsyncEngine, repo: Repo) -> None:
    sessions = session_factory(engine)
    i = make("org_looked_up")
    async with sessions() as session, session.begin():
        await repo(session).add(i)
    async with sessions() as session:
        assert await repo(session).lookup(i.id) == i
        with pytest.raises(NotFound):
            await repo(session).lookup("int_nobody")


async def test_a_published_change_is_two_outbox_rows_in_the_units_transaction(engine: AsyncEngine, database_url: str) -> None:
    sessions = session_factory(engine)
    units = lambda: SqlRegistryUnitOfWork(sessions, postgres=not is_sqlite(database_url))  # noqa: E731
    kept, dropped = make("org_published"), make("org_published")
    async with units() as uow:
        await uow.integrations.add(kept)
        await uow.publish(IntegrationChanged("created", None, kept, "rita", request_id="req-7"))
        await uow.commit()
    async with units() as left:  # left without commit: neither its row nor its events
        await left.integrations.add(dropped)
        await left.publish(IntegrationChanged("created", None, dropped, "rita"))
    async with sessions() as session:
        rows = (await session.execute(select(outbox.c.id, outbox.c.subject, outbox.c.payload).order_by(outbox.c.seq))).all()
        assert await repo_count(session, "org_published") == 1
    assert [r.subject for r in rows] == ["trellis.integration.created", "trellis.audit.registry.integration.created"]
    assert [r.id for r in rows] == list(uow.event_ids)
    changed = events_pb2.IntegrationChanged.FromString(rows[0].payload)
    audit = events_pb2.AuditEvent.FromString(rows[1].payload)
    assert (changed.kind, changed.integration_id, changed.org_id, changed.actor_id) == ("created", kept.id, "org_published", "rita")
    assert (audit.action, audit.object_id, audit.request_id, audit.before_json) == ("integration.created", kept.id, "req-7", "")


async def repo_count(session: AsyncSession, org_id: str) -> int:
    return len((await IntegrationRepository(session, postgres=False).list_page(org_id)).integrations)
