"""Identity's storage on SQLite and PostgreSQL: migrations, and the rules the indexes hold."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from services.identity.domain.model import SigningKey, SigningKeyStatus, generate_api_key, generate_client
from services.identity.adapters.signing import JwtSigning
from services.identity.adapters.store import IdentityStore, SqlIdentityUnitOfWork, metadata, signing_keys
from services.identity.application.tokens import SigningKeyRing
from services.kit.crypto import Envelope
from services.kit.errors import Unavailable
from services.kit.db import create_engine, migrate_async, session_factory, utcnow
from services.kit.ids import new_id


@pytest.fixture
async def sessions(database_url: str):
    await migrate_async("identity", database_url)
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


async def test_migrations_match_the_metadata(database_url: str) -> None:
    await migrate_async("identity", database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_a_second_live_api_key_for_one_integration_is_refused(sessions) -> None:
    integration = new_id("int")
    async with sessions() as session, session.begin():
        await IdentityStore(session).add_api_key("org_a", integration, generate_api_key("grq_live_"), new_id("key"), utcnow())
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await IdentityStore(session).add_api_key("org_a", integration, generate_api_key("grq_live_"), new_id("key"), utcnow())


async def test_a_second_live_client_for_one_integration_is_refused(sessions) -> None:
    integration = new_id("int")
    async with sessions() as session, session.begin():
        await IdentityStore(session).add_client("org_a", integration, generate_client(), ["inventory:read"], utcnow())
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await IdentityStore(session).add_client("org_a", integration, generate_client(), ["inventory:read"], utcnow())


async def test_revoked_keys_make_room_for_a_new_live_key(sessions) -> None:
    integration = new_id("int")
    async with sessions() as session, session.begin():
        store = IdentityStore(session)
        await store.add_api_key("org_a", integration, generate_api_key("grq_live_"), new_id("key"), utcnow())
        revoked = await store.revoke_live_api_keys("org_a", integration, utcnow())
        await store.add_api_key("org_a", integration, generate_api_key("grq_live_"), new_id("key"), utcnow())
    assert len(revoked) == 1
    async with sessions() as session:
        latest = await IdentityStore(session).latest_api_key("org_a", integration)
    assert latest is not None and latest.live and latest.id != revoked[0].id


async def test_only_one_signing_key_can_be_current(sessions) -> None:
    def key(kid: str) -> SigningKey:
        return SigningKey(kid=kid, alg="RS256", public_jwk={"kid": kid}, status=SigningKeyStatus.CURRENT,
                          created_at=dt.datetime.now(dt.timezone.utc))

    async with sessions() as session, session.begin():
        await IdentityStore(session).add_signing_key(key("sk_one"), b"sealed")
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await IdentityStore(session).add_signing_key(key("sk_two"), b"sealed")


async def test_an_event_is_marked_processed_once(sessions) -> None:
    event_id = new_id("evt")
    async with sessions() as session, session.begin():
        assert await IdentityStore(session).mark_processed(event_id, utcnow()) is True
    async with sessions() as session, session.begin():
        assert await IdentityStore(session).mark_processed(event_id, utcnow()) is False


def ring_of(sessions, kek: Envelope, algorithm: str) -> SigningKeyRing:
    return SigningKeyRing(lambda read_only=False: SqlIdentityUnitOfWork(sessions, read_only=read_only), JwtSigning(kek, algorithm))


async def test_a_sealed_private_key_moved_to_another_row_does_not_open(sessions) -> None:
    kek = Envelope({1: os.urandom(32)}, 1)
    ring = ring_of(sessions, kek, "RS256")
    first = await ring.ensure_current()
    async with SqlIdentityUnitOfWork(sessions) as uow:
        second, _ = await ring.rotate(uow)
        await uow.commit()
    # Swap the two sealed blobs, as someone with write access to the table might.
    async with sessions() as session, session.begin():
        blobs = {kid: await IdentityStore(session).sealed_private_key(kid) for kid in (first, second.kid)}
        await session.execute(update(signing_keys).where(signing_keys.c.kid == first).values(private_key=blobs[second.kid]))
        await session.execute(update(signing_keys).where(signing_keys.c.kid == second.kid).values(private_key=blobs[first]))
    fresh = ring_of(sessions, kek, "RS256")  # nothing cached
    with pytest.raises(Unavailable):
        async with sessions() as session:
            await fresh.current_signer(IdentityStore(session))
    with pytest.raises(Unavailable):
        await fresh.ensure_current()
    # Put back where they belong, they open again.
    async with sessions() as session, session.begin():
        await session.execute(update(signing_keys).where(signing_keys.c.kid == first).values(private_key=blobs[first]))
        await session.execute(update(signing_keys).where(signing_keys.c.kid == second.kid).values(private_key=blobs[second.kid]))
    assert await fresh.ensure_current() == second.kid


async def test_replicas_starting_together_agree_on_one_current_key(sessions) -> None:
    kek = Envelope({1: os.urandom(32)}, 1)
    kids = await asyncio.gather(*(ring_of(sessions, kek, "ES256").ensure_current() for _ in range(4)))
    assert len(set(kids)) == 1
    async with sessions() as session:
        current = await IdentityStore(session).signing_keys([SigningKeyStatus.CURRENT])
    assert [k.kid for k in current] == [kids[0]]
