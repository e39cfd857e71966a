"""identity's current partner-token signing key, opened the way identity opens it: for tests
that forge tokens validly signed but wrong in some other way."""

from __future__ import annotations

from services.identity.adapters import signing
from services.identity.adapters.store import IdentityStore
from services.identity.adapters.signing import open_private_key
from services.kit.crypto import Envelope
from services.kit.db import create_engine, session_factory
from tests.support.settings import Settings


async def current_private_key(settings: Settings) -> tuple[str, signing.PrivateKey]:
    """(kid, private key) of the current signing key in identity's database."""
    engine = create_engine(settings.database_url("identity"))
    try:
        async with session_factory(engine)() as session:
            store = IdentityStore(session)
            kid = await store.current_kid()
            assert kid is not None
            sealed = await store.sealed_private_key(kid)
    finally:
        await engine.dispose()
    assert sealed is not None
    return kid, open_private_key(Envelope(settings.kek_keys(), settings.kek_version), kid, sealed)
