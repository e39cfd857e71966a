"""Credential use cases: issue, revoke, regenerate, describe and verify an integration's API key
and OAuth client, bind external clients, and apply the registry's integration events.

Each command runs in one unit of work (application/ports.py) that also writes its outbox
events, and returns only after the relay has published them (`published()`): edge replicas drop
cached keys on these events, so a revoked or replaced credential fails on the very next partner
request. Plain-text secrets leave only in the returned values, once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.identity.application import commands
from services.identity.application.ports import Credentials, ExternalClient, IdentityUnitOfWork, Issuance, UnitsOfWork
from services.identity.domain.model import (
    ApiKey,
    OAuthClient,
    api_key_prefix_of,
    generate_api_key,
    generate_client,
    looks_like_api_key,
    match_api_key,
    validate_scopes,
)
from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, Actor
from services.kit.clock import utcnow
from services.kit.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.kit.ids import new_id
from services.kit.uow import WriteConflict

# Kinds of IntegrationChanged that end an integration's credentials.
ENDING_KINDS = frozenset({"suspended", "revoked"})


@dataclass(frozen=True)
class PartnerEndpoints:
    """What a partner is told alongside its credentials (settings.token_* values)."""

    api_key_prefix: str
    token_url: str
    issuer: str
    audience: str
    external_issuer: str = ""


def invalid_api_key() -> Unauthenticated:
    return Unauthenticated("invalid_api_key", error="invalid_api_key")


def _require_integration_id(integration_id: str) -> str:
    if not integration_id or len(integration_id) > 64:
        raise InvalidArgument("integration_id is required (at most 64 characters)")
    return integration_id


def _summary(keys: Iterable[ApiKey], clients: Iterable[OAuthClient]) -> dict[str, object]:
    """What the audit trail may say about credentials: prefixes and client ids, no secret."""
    return {"api_key_prefixes": [k.prefix for k in keys], "client_ids": [c.client_id for c in clients]}


class CredentialHandlers:
    """The credential use cases, sharing one unit-of-work factory."""

    def __init__(
        self,
        units: UnitsOfWork,
        endpoints: PartnerEndpoints,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._uow = units
        self._endpoints = endpoints
        self._clock = clock

    async def _owned(self, store: Credentials, actor: Actor, integration_id: str) -> bool:
        """True if the actor's organisation holds credentials for the integration, False if
        nobody does; another organisation's integration is NotFound."""
        owner = await store.owner_of(integration_id)
        if owner is not None and owner != actor.org_id:
            raise NotFound(f"integration {integration_id} not found", integration_id=integration_id)
        return owner is not None

    async def issue_credentials(self, actor: Actor, cmd: commands.IssueCredentials) -> commands.IssuedCredentials:
        """Issue a new API key and OAuth client, revoking the integration's previous ones.

        Idempotent per (integration, request id): the registry retries with the same id when it
        could not record the first answer. Plain text was never kept, so a retry cannot return
        the same secrets; it revokes what the first call issued and issues replacements, so an
        integration never holds two live sets. A retry that a later request has superseded is
        refused (FAILED_PRECONDITION) rather than killing the newer credentials.
        """
        actor.require(ADMIN_PERMISSION)
        integration_id = _require_integration_id(cmd.integration_id)
        scopes = validate_scopes(cmd.scopes)
        request_id = cmd.request_id or new_id("req")
        if len(request_id) > 128:
            raise InvalidArgument("request_id is at most 128 characters")
        try:
            async with self._uow() as uow:
                store = uow.credentials
                await self._owned(store, actor, integration_id)
                earlier = await store.issuance(actor.org_id, integration_id, request_id)
                if earlier is not None and await store.issued_after(actor.org_id, integration_id, earlier.created_at):
                    raise FailedPrecondition(
                        f"request {request_id} was superseded by a later issuance for integration {integration_id}",
                        integration_id=integration_id,
                    )
                now = self._clock()
                old_keys = await store.revoke_live_api_keys(actor.org_id, integration_id, now)
                old_clients = await store.revoke_live_clients(actor.org_id, integration_id, now)
                new_key, new_client = generate_api_key(self._endpoints.api_key_prefix), generate_client()
                key = await store.add_api_key(actor.org_id, integration_id, new_key, new_id("key"), now)
                client = await store.add_client(actor.org_id, integration_id, new_client, scopes, now)
                await store.record_issuance(
                    Issuance(integration_id, request_id, actor.org_id, key.id, client.client_id, now), replace=earlier is not None
                )
                await uow.credentials_changed(
                    "issued", org_id=actor.org_id, integration_id=integration_id, now=now,
                    revoked_api_key_hashes=[k.key_hash for k in old_keys],
                    revoked_client_ids=[c.client_id for c in old_clients],
                )
                await uow.audit(
                    "credentials.issued", org_id=actor.org_id, actor_id=actor.user_id,
                    object_type="credentials", object_id=integration_id, now=now,
                    before=_summary(old_keys, old_clients) if old_keys or old_clients else None,
                    after={**_summary([key], [client]), "scopes": list(scopes)},
                    reason=f"retry of request {request_id}" if earlier is not None else "", request_id=request_id,
                )
                await uow.commit()
        except WriteConflict as exc:
            raise Aborted("credentials for this integration changed concurrently; retry", integration_id=integration_id) from exc
        await uow.published()
        ep = self._endpoints
        return commands.IssuedCredentials(
            api_key=new_key.plaintext, api_key_prefix=key.prefix, client_id=client.client_id,
            client_secret=new_client.secret, token_url=ep.token_url, issuer=ep.issuer, audience=ep.audience,
            scopes=scopes, issued_at=now,
        )

    async def revoke_credentials(self, actor: Actor, cmd: commands.RevokeCredentials) -> int:
        """Revoke every live key and client of the integration; returns how many. Idempotent:
        nothing live (or nothing ever issued) is 0, not an error."""
        actor.require(ADMIN_PERMISSION)
        integration_id = _require_integration_id(cmd.integration_id)
        async with self._uow() as uow:
            if not await self._owned(uow.credentials, actor, integration_id):
                return 0
            count = await self._revoke(
                uow, org_id=actor.org_id, integration_id=integration_id, actor_id=actor.user_id,
                reason=cmd.reason, request_id=cmd.request_id,
            )
            await uow.commit()
        await uow.published()
        return count

    async def _revoke(
        self, uow: IdentityUnitOfWork, *, org_id: str, integration_id: str, actor_id: str,
        reason: str, request_id: str = "", created_before: dt.datetime | None = None,
    ) -> int:
        now = self._clock()
        store = uow.credentials
        keys = await store.revoke_live_api_keys(org_id, integration_id, now, created_before=created_before)
        clients = await store.revoke_live_clients(org_id, integration_id, now, created_before=created_before)
        if not keys and not clients:
            return 0
        await uow.credentials_changed(
            "revoked", org_id=org_id, integration_id=integration_id, now=now,
            revoked_api_key_hashes=[k.key_hash for k in keys], revoked_client_ids=[c.client_id for c in clients],
        )
        await uow.audit(
            "credentials.revoked", org_id=org_id, actor_id=actor_id, object_type="credentials",
            object_id=integration_id, now=now, before={**_summary(keys, clients), "status": "active"},
            after={"status": "revoked"}, reason=reason, request_id=request_id,
        )
        return len(keys) + len(clients)

    async def regenerate_api_key(self, actor: Actor, cmd: commands.RegenerateApiKey) -> commands.RegeneratedKey:
        """A new API key for an integration with live credentials; the old key fails at once."""
        actor.require(ADMIN_PERMISSION)
        integration_id = _require_integration_id(cmd.integration_id)
        try:
            async with self._uow() as uow:
                store = uow.credentials
                if not await self._owned(store, actor, integration_id):
                    raise NotFound(f"integration {integration_id} has no credentials", integration_id=integration_id)
                if await store.live_client(actor.org_id, integration_id) is None:
                    raise FailedPrecondition(
                        f"integration {integration_id} has no live credentials; activate or reactivate it first",
                        integration_id=integration_id,
                    )
                now = self._clock()
                old = await store.revoke_live_api_keys(actor.org_id, integration_id, now)
                new_key = generate_api_key(self._endpoints.api_key_prefix)
                key = await store.add_api_key(actor.org_id, integration_id, new_key, new_id("key"), now)
                await uow.credentials_changed(
                    "api_key_regenerated", org_id=actor.org_id, integration_id=integration_id, now=now,
                    revoked_api_key_hashes=[k.key_hash for k in old],
                )
                await uow.audit(
                    "credentials.api_key_regenerated", org_id=actor.org_id, actor_id=actor.user_id,
                    object_type="credentials", object_id=integration_id, now=now,
                    before={"api_key_prefixes": [k.prefix for k in old]}, after={"api_key_prefixes": [key.prefix]},
                    request_id=cmd.request_id,
                )
                await uow.commit()
        except WriteConflict as exc:
            raise Aborted("credentials for this integration changed concurrently; retry", integration_id=integration_id) from exc
        await uow.published()
        return commands.RegeneratedKey(api_key=new_key.plaintext, api_key_prefix=key.prefix)

    async def credential_info(self, actor: Actor, integration_id: str) -> commands.CredentialInfo:
        """What may be shown about an integration's credentials: prefix, client id, status."""
        actor.require(ADMIN_PERMISSION)
        integration_id = _require_integration_id(integration_id)
        async with self._uow(read_only=True) as uow:
            store = uow.credentials
            if not await self._owned(store, actor, integration_id):
                raise NotFound(f"integration {integration_id} has no credentials", integration_id=integration_id)
            key = await store.latest_api_key(actor.org_id, integration_id)
            client = await store.latest_client(actor.org_id, integration_id)
            external = await store.external_client_ids(actor.org_id, integration_id)
        assert client is not None  # _owned found one
        return commands.CredentialInfo(
            integration_id=integration_id,
            api_key_prefix=key.prefix if key else "",
            client_id=client.client_id,
            live=client.live and key is not None and key.live,
            issued_at=client.created_at,
            api_key_created_at=key.created_at if key else None,
            external_client_ids=tuple(external),
        )

    async def verify_api_key(self, actor: Actor, api_key: str) -> commands.VerifiedApiKey:
        """The integration a live API key belongs to; `invalid_api_key` for anything else."""
        actor.require(EDGE_PERMISSION)
        if not looks_like_api_key(api_key, self._endpoints.api_key_prefix):
            raise invalid_api_key()
        async with self._uow(read_only=True) as uow:
            store = uow.credentials
            candidates = dict(await store.live_api_keys_by_prefix(api_key_prefix_of(api_key)))
            key = match_api_key(api_key, candidates)
            if key is None:
                raise invalid_api_key()
            client_id = candidates[key]
            external = await store.external_client_ids(key.org_id, key.integration_id) if self._endpoints.external_issuer else []
        client_ids = ([client_id] if client_id else []) + external
        return commands.VerifiedApiKey(
            integration_id=key.integration_id, org_id=key.org_id, api_key_prefix=key.prefix, client_ids=tuple(client_ids)
        )

    async def register_external_client(self, actor: Actor, cmd: commands.RegisterExternalClient) -> None:
        """Bind an external issuer's client id to an integration of the actor's organisation.

        The integration must hold credentials here (it has been activated), which is how
        identity knows its organisation. Registering the same binding again is a no-op.
        """
        actor.require(ADMIN_PERMISSION)
        issuer = self._endpoints.external_issuer
        if not issuer:
            raise FailedPrecondition("external issuer mode is not configured (TRELLIS_EXTERNAL_ISSUER)")
        integration_id = _require_integration_id(cmd.integration_id)
        client_id = cmd.client_id.strip()
        if not client_id or len(client_id) > 200:
            raise InvalidArgument("client_id is required (at most 200 characters)")
        try:
            async with self._uow() as uow:
                store = uow.credentials
                if not await self._owned(store, actor, integration_id):
                    raise NotFound(f"integration {integration_id} has no credentials", integration_id=integration_id)
                existing = await store.external_client(issuer, client_id)
                if existing is not None:
                    if existing.org_id == actor.org_id and existing.integration_id == integration_id:
                        return
                    raise AlreadyExists(f"external client {client_id} is registered to another integration", client_id=client_id)
                now = self._clock()
                await store.add_external_client(ExternalClient(issuer, client_id, actor.org_id, integration_id, now))
                await uow.audit(
                    "external_client.registered", org_id=actor.org_id, actor_id=actor.user_id,
                    object_type="credentials", object_id=integration_id, now=now,
                    after={"issuer": issuer, "external_client_id": client_id}, request_id=cmd.request_id,
                )
                await uow.commit()
        except WriteConflict as exc:
            raise Aborted("external client registered concurrently; retry", client_id=client_id) from exc
        await uow.published()

    async def apply_integration_change(self, change: commands.ApplyIntegrationChange) -> None:
        """Safety net and scope sync for the registry's events; idempotent by event id.

        `suspended`/`revoked` revoke credentials issued before the event (a late event must not
        kill credentials a later reactivation issued); `updated` sets the live client's scopes
        unless a newer setting is already in place. Unknown integrations are ignored.
        """
        async with self._uow() as uow:
            now = self._clock()
            if not await uow.credentials.mark_processed(change.event_id, now):
                return
            if change.kind in ENDING_KINDS:
                await self._revoke(
                    uow, org_id=change.org_id, integration_id=change.integration_id,
                    actor_id=change.actor_id or "identity",
                    reason=f"integration {change.kind} (event {change.event_id})", created_before=change.occurred_at,
                )
            elif change.kind == "updated":
                await self._sync_scopes(uow, change, now)
            await uow.commit()
        await uow.published()

    async def _sync_scopes(self, uow: IdentityUnitOfWork, change: commands.ApplyIntegrationChange, now: dt.datetime) -> bool:
        store = uow.credentials
        client = await store.live_client(change.org_id, change.integration_id)
        scopes = validate_scopes(change.scopes)
        if client is None or change.occurred_at < client.scopes_updated_at or set(scopes) == set(client.scopes):
            return False
        await store.set_client_scopes(change.org_id, client.client_id, scopes, change.occurred_at)
        await uow.audit(
            "credentials.scopes_synced", org_id=change.org_id, actor_id=change.actor_id or "identity",
            object_type="credentials", object_id=change.integration_id, now=now,
            before={"client_id": client.client_id, "scopes": list(client.scopes)},
            after={"client_id": client.client_id, "scopes": list(scopes)}, reason=f"event {change.event_id}",
        )
        return True
