"""Sign-in sessions and pending sign-ins, in JetStream key-value buckets every replica shares.

The browser holds only an opaque session id (256 random bits). The bucket never sees it: a
record's key is the SHA-256 of the id, and its value is sealed with AES-256-GCM under a key
derived from the id (HKDF), so someone reading the bucket can neither use a session's tokens
nor find the cookie that would. The bucket's TTL bounds every session; deleting the key ends
a session on every replica at once (sign-out).

A pending sign-in (OIDC state, nonce, PKCE verifier, where to return) is kept the same way
under the hash of its `state`, sealed with a key from the browser's sign-in cookie: only the
browser that started a sign-in can finish it, and only once.

One-time action ids ("intents") are claimed here too, so a form that issues credentials cannot
run twice from a reload, a back button or a double click (`claim_intent`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from services.kit.auth import ADMIN_PERMISSION, QA_PERMISSION
from services.kit.bus import while_electing

SESSIONS_BUCKET = "trellis_console_sessions"
SIGNIN_BUCKET = "trellis_console_signin"
# A sign-in started and not finished within this long must start again.
SIGNIN_TTL_SECONDS = 600.0


def new_secret() -> str:
    """An opaque id: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _key(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"trellis-console " + purpose).derive(secret.encode())


def _seal(secret: str, purpose: bytes, name: str, data: dict[str, Any]) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_key(secret, purpose)).encrypt(nonce, json.dumps(data).encode(), name.encode())


def _open(secret: str, purpose: bytes, name: str, sealed: bytes) -> dict[str, Any] | None:
    try:
        plain = AESGCM(_key(secret, purpose)).decrypt(sealed[:12], sealed[12:], name.encode())
    except (InvalidTag, ValueError):
        return None
    data: dict[str, Any] = json.loads(plain)
    return data


@dataclass
class Session:
    """One signed-in user. `id` and `revision` are the store's, never stored in the record."""

    user_id: str
    org_id: str
    permissions: list[str]
    access_token: str = field(repr=False)
    expires_at: float
    method: str                       # "oidc" or "local"
    csrf_token: str = field(default_factory=new_secret, repr=False)
    signed_in_at: float = field(default_factory=time.time)
    display_name: str = ""
    refresh_token: str = field(default="", repr=False)
    id_token: str = field(default="", repr=False)
    id: str = field(default="", repr=False, compare=False)
    revision: int = field(default=0, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        del data["id"], data["revision"]
        return data

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def reads_logs(self) -> bool:
        """QA or administrator: the API logs, the audit trail and the review (the logs service decides)."""
        return bool({QA_PERMISSION, ADMIN_PERMISSION} & set(self.permissions))


@dataclass(frozen=True)
class PendingSignIn:
    """What the callback of one OIDC sign-in needs, and where the user goes afterwards."""

    state: str
    nonce: str
    code_verifier: str = field(repr=False)
    return_to: str
    started_at: float = field(default_factory=time.time)


class SessionStore:
    """Sessions, pending sign-ins and claimed intents over two key-value buckets."""

    def __init__(self, sessions: KeyValue, signins: KeyValue) -> None:
        self._sessions, self._signins = sessions, signins

    @classmethod
    async def open(cls, js: JetStreamContext, *, ttl_seconds: float, replicas: int = 1) -> "SessionStore":
        """Bind to the buckets, creating them (or bringing them to this TTL) when needed."""
        sessions = await _bucket(js, SESSIONS_BUCKET, ttl_seconds, replicas, "Console sign-in sessions")
        signins = await _bucket(js, SIGNIN_BUCKET, SIGNIN_TTL_SECONDS, replicas, "Console sign-ins in progress")
        return cls(sessions, signins)

    # --- sessions ---------------------------------------------------------------------------

    async def create(self, session: Session) -> Session:
        """Store a new session under a new id (the id changes at every sign-in)."""
        session.id = new_secret()
        name = "s." + _digest(session.id)
        session.revision = await self._sessions.create(name, _seal(session.id, b"session", name, session.record()))
        return session

    async def load(self, session_id: str) -> Session | None:
        """The session with this id, or None (unknown, ended, expired, or not a session id)."""
        if not session_id or len(session_id) > 100:
            return None
        name = "s." + _digest(session_id)
        try:
            entry = await self._sessions.get(name)
        except (KeyNotFoundError, NotFoundError):
            return None
        data = _open(session_id, b"session", name, entry.value or b"")
        if data is None:
            return None
        return Session(**data, id=session_id, revision=entry.revision or 0)

    async def save(self, session: Session) -> bool:
        """Write a changed session (new tokens) if nobody else did meanwhile; False if someone did
        (another replica refreshed it first: load it again)."""
        name = "s." + _digest(session.id)
        try:
            session.revision = await self._sessions.update(name, _seal(session.id, b"session", name, session.record()),
                                                           last=session.revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def end(self, session_id: str) -> None:
        """Sign-out: the session stops working on every replica at once."""
        await self._sessions.purge("s." + _digest(session_id))

    # --- one-time actions ---------------------------------------------------------------------

    async def claim_intent(self, session: Session, intent: str) -> bool:
        """True the first time this session claims `intent`, False ever after (until the session ends)."""
        if not intent or len(intent) > 100:
            return False
        name = f"i.{_digest(session.id)[:32]}.{_digest(intent)}"
        try:
            await self._sessions.create(name, b"1")
        except KeyWrongLastSequenceError:
            return False
        return True

    # --- pending sign-ins -------------------------------------------------------------------

    async def begin_signin(self, browser_secret: str, pending: PendingSignIn) -> None:
        name = "p." + _digest(pending.state)
        await self._signins.create(name, _seal(browser_secret, b"signin", name, asdict(pending)))

    async def finish_signin(self, browser_secret: str, state: str) -> PendingSignIn | None:
        """The pending sign-in `state` names, removed so it cannot be used again; None when it is
        unknown, expired, already used, or was started by another browser."""
        if not state or len(state) > 200 or not browser_secret:
            return None
        name = "p." + _digest(state)
        try:
            entry = await self._signins.get(name)
        except (KeyNotFoundError, NotFoundError):
            return None
        data = _open(browser_secret, b"signin", name, entry.value or b"")
        if data is None:
            return None
        try:
            # Only one callback wins a race for the same state.
            await self._signins.update(name, b"", last=entry.revision)
        except KeyWrongLastSequenceError:
            return None
        await self._signins.purge(name)
        return PendingSignIn(**data)


async def _bucket(js: JetStreamContext, name: str, ttl: float, replicas: int, description: str) -> KeyValue:
    config = KeyValueConfig(bucket=name, description=description, ttl=ttl, history=1, storage=StorageType.FILE,
                            replicas=replicas)

    async def ensure() -> KeyValue:
        try:
            return await js.create_key_value(config)
        except BadRequestError:
            # It exists with another configuration (another TTL): bring it to this one.
            kv = await js.key_value(name)
            info = await js.stream_info(f"KV_{name}")
            info.config.max_age = ttl
            info.config.num_replicas = replicas
            await js.update_stream(info.config)
            return kv

    return await while_electing(ensure, what=f"key-value bucket {name}")
