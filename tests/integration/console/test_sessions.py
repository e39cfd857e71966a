"""Sessions in the JetStream key-value bucket: what the bucket holds tells nothing usable."""

from __future__ import annotations

import time

import nats

from services.console.sessions import SESSIONS_BUCKET, PendingSignIn, Session, SessionStore


async def test_the_bucket_holds_neither_the_session_id_nor_its_tokens(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        store = await SessionStore.open(js, ttl_seconds=3600)
        token = "eyJhbGciOiJFUzI1NiJ9.payload-of-the-access-token.signature"
        session = await store.create(Session(user_id="alice", org_id="org_a", permissions=["p"], access_token=token,
                                             expires_at=time.time() + 600, method="oidc", refresh_token="refresh-me"))
        # Every subject the bucket's stream holds, from the stream itself: nats-py's kv.keys() can
        # end its replay early and find none (nats-io/nats.py#842).
        stream = f"KV_{SESSIONS_BUCKET}"
        subjects = (await js.stream_info(stream, subjects_filter=">")).state.subjects or {}
        assert any(s.startswith(f"$KV.{SESSIONS_BUCKET}.s.") for s in subjects), subjects  # this session's record
        assert session.id not in "".join(subjects)
        for subject in subjects:
            value = (await js.get_last_msg(stream, subject)).data or b""
            for secret in (session.id, token, "refresh-me", session.csrf_token, "alice"):
                assert secret.encode() not in value
        assert (await js.stream_info(stream)).config.max_age == 3600
        loaded = await store.load(session.id)
        assert loaded is not None and loaded.access_token == token and loaded.refresh_token == "refresh-me"
        assert await store.load(session.id[:-1] + ("A" if session.id[-1] != "A" else "B")) is None

        assert await store.claim_intent(session, "form-1") and not await store.claim_intent(session, "form-1")
        await store.end(session.id)
        assert await store.load(session.id) is None

        await store.begin_signin("browser-secret", PendingSignIn("state-1", "nonce", "verifier", "/integrations"))
        assert await store.finish_signin("another-browser", "state-1") is None
        assert (await store.finish_signin("browser-secret", "state-1")).nonce == "nonce"  # type: ignore[union-attr]
        assert await store.finish_signin("browser-secret", "state-1") is None
    finally:
        await nc.close()
