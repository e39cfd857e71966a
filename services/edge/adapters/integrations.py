"""Integration snapshots (status, scopes, limits, allowlist) from the registry, cached briefly,
and the NATS subscriptions that drop cached state the moment the registry or identity says it
changed: every edge replica subscribes with a core (non-queue) subscription, so every replica
hears every change.

    trellis.integration.<kind>   IntegrationChanged  -> the snapshot; keys and tokens on suspend/revoke
    trellis.credentials.<kind>   CredentialsChanged  -> keys by revoked hash and by integration,
                                                         tokens by revoked client and by integration,
                                                         the JWKS on signing_key_rotated
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.adapters.cache import TtlCache
from services.edge.adapters.credentials import ApiKeys, Tokens, unavailable
from services.edge.adapters.peers import Peers
from services.edge.domain.errors import unauthorized
from services.edge.domain.model import IntegrationSnapshot
from services.kit import errors

log = logging.getLogger(__name__)

INTEGRATION_SUBJECTS = "trellis.integration.>"
CREDENTIALS_SUBJECTS = "trellis.credentials.>"
# Integration changes after which no credential of it may be used, whatever identity says.
_DEAD = frozenset({"suspended", "revoked"})


class Integrations:
    """Integration id -> snapshot, asking the registry (LookupIntegration) on a miss."""

    def __init__(self, peers: Peers, *, ttl: float) -> None:
        self._peers = peers
        self.cache: TtlCache[str, IntegrationSnapshot] = TtlCache(ttl)

    async def get(self, integration_id: str, request_id: str = "") -> IntegrationSnapshot:
        try:
            return await self.cache.get_or_load(integration_id, lambda: self._load(integration_id, request_id))
        except errors.NotFound as exc:
            # Identity holds a key for an integration the registry does not know: not usable.
            raise unauthorized("integration_inactive", "the integration of this API key does not exist; "
                               "ask your administrator to check it") from exc
        except errors.TrellisError as exc:
            if isinstance(exc, errors.PermissionDenied):
                log.error("registry refused the edge's service token: %s", exc)
            raise unavailable("the integration") from exc

    async def _load(self, integration_id: str, request_id: str) -> tuple[IntegrationSnapshot, tuple[()], None]:
        return await self._peers.lookup_integration(integration_id, request_id), (), None

    def forget(self, integration_id: str) -> None:
        self.cache.drop(integration_id)


class Invalidator:
    """Listens to integration and credential events and drops what they make stale."""

    def __init__(self, nc: NATS, integrations: Integrations, keys: ApiKeys, tokens: Tokens) -> None:
        self._nc = nc
        self._integrations = integrations
        self._keys = keys
        self._tokens = tokens
        self._subscriptions: list[Subscription] = []
        self._reconnects = 0
        self.events = 0

    async def start(self) -> None:
        self._reconnects = self._nc.stats.get("reconnects", 0)
        self._subscriptions = [
            await self._nc.subscribe(INTEGRATION_SUBJECTS, cb=self._on_integration),
            await self._nc.subscribe(CREDENTIALS_SUBJECTS, cb=self._on_credentials),
        ]
        # The subscriptions are live at the server before the edge takes its first request.
        await self._nc.flush()

    async def close(self) -> None:
        for subscription in self._subscriptions:
            try:
                await subscription.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be closed
                pass
        self._subscriptions.clear()

    def check_connection(self) -> None:
        """After a reconnect, events may have been missed while away: forget everything."""
        reconnects = self._nc.stats.get("reconnects", 0)
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            log.warning("NATS reconnected; dropping every cached key, token and integration")
            self._integrations.cache.clear()
            self._keys.cache.clear()
            self._tokens.cache.clear()
            self._tokens.own.keys.invalidate()

    async def _on_integration(self, msg: Msg) -> None:
        event = events_pb2.IntegrationChanged()
        try:
            event.ParseFromString(msg.data)
        except Exception:  # noqa: BLE001 - a malformed event cannot name what to drop
            log.warning("unreadable event on %s; dropping all integration snapshots", msg.subject)
            self._integrations.cache.clear()
            return
        self.events += 1
        self._integrations.forget(event.integration_id)
        if event.status in _DEAD or event.kind in _DEAD:
            self._keys.forget_integration(event.integration_id)
            self._tokens.forget_integration(event.integration_id)

    async def _on_credentials(self, msg: Msg) -> None:
        event = events_pb2.CredentialsChanged()
        try:
            event.ParseFromString(msg.data)
        except Exception:  # noqa: BLE001
            log.warning("unreadable event on %s; dropping all cached keys and tokens", msg.subject)
            self._keys.cache.clear()
            self._tokens.cache.clear()
            return
        self.events += 1
        for key_hash in event.revoked_api_key_hashes:
            self._keys.revoked(key_hash, event.integration_id)
        for client_id in event.revoked_client_ids:
            self._tokens.forget_client(client_id)
        if event.integration_id:
            self._keys.forget_integration(event.integration_id)
            if event.kind == "revoked":
                self._tokens.forget_integration(event.integration_id)
        if event.kind == "signing_key_rotated":
            self._tokens.own.keys.invalidate()
            # Tokens signed by a key that the rotation retired must not outlive it in the cache.
            self._tokens.cache.clear()
