"""The registry's use cases: in one unit of work (application/ports.py), load through the
store, apply the domain rule, write the history row and publish the change, commit; then wait
for the relay to put the change on the bus.

Credentials live at identity, reached through `CredentialsPort`. Activation and reactivation
are a small saga: lease the integration, issue at identity, then commit (which ends the lease);
a commit that fails after issuing revokes what was issued. The lease keeps a second activation
from reaching identity, whose issue replaces the live set: without it, the loser's
compensation would revoke the winner's credentials. Suspension and revocation commit first,
then revoke at identity before they return; identity's consumer of the committed event is the
safety net when it is unreachable.

Every change is on the bus before its call returns (`published()` after the commit): edge replicas
drop their cached view of the integration on these events, so "takes effect immediately"
holds for the very next partner request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable

from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, PLATFORM_PERMISSION, Actor
from services.kit.clock import utcnow
from services.kit.crypto import aad_for
from services.kit.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.kit.ids import REQUEST_ID_FORM, is_request_id, new_id
from services.kit.uow import WriteConflict
from services.registry.application import commands
from services.registry.application.ports import (
    CredentialsPort,
    IssuedCredentials,
    Page,
    RegeneratedApiKey,
    RegistryUnitOfWork,
    RevealedSecrets,
    Sealing,
    SetupPage,
    UnitsOfWork,
)
from services.registry.domain.model import (
    SCOPE_CATEGORIES,
    VENDORS,
    Action,
    HistoryEntry,
    Integration,
    IntegrationChanged,
    ScopeCategory,
    Vendor,
    ensure_room_for_activation,
)
from services.registry.domain.setup import (
    PREBUILT_INTEGRATIONS,
    SECRETS_REVEALED,
    TERMINAL,
    PrebuiltIntegration,
    SetupRequest,
    SetupRequestChanged,
    prebuilt,
    validate_connection,
)

log = logging.getLogger(__name__)


# --- use cases ---------------------------------------------------------------------------------------

Mutation = Callable[[Integration], None]

# A lease older than this is taken to belong to a crashed replica: identity calls time out in
# seconds, so no live activation holds one this long.
DEFAULT_LEASE_SECONDS = 120.0


def _lease_id(request_id: str) -> str:
    """The request id names the lease and makes identity's issue idempotent; one is made when absent."""
    if request_id and not is_request_id(request_id):
        # It travels on to identity, as metadata too: what metadata cannot carry is refused here.
        raise InvalidArgument(f"request_id must be {REQUEST_ID_FORM}", field="request_id")
    return request_id or new_id("req")


class RegistryHandlers:
    """Every registry use case, each one short: domain rule, store, outbox, peer."""

    def __init__(
        self,
        units: UnitsOfWork,
        credentials: CredentialsPort,
        *,
        max_live_integrations: int,
        clock: Callable[[], dt.datetime] = utcnow,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self._uow = units
        self._credentials = credentials
        self._max_live = max_live_integrations
        self._clock = clock
        self._lease_ttl = dt.timedelta(seconds=lease_seconds)
        # SQLite has no advisory locks: one process serialises its own limit checks.
        self._limit_lock = asyncio.Lock()

    # catalogues: any authenticated actor

    def list_vendors(self, actor: Actor) -> tuple[Vendor, ...]:
        return VENDORS

    def list_scopes(self, actor: Actor) -> tuple[ScopeCategory, ...]:
        return SCOPE_CATEGORIES

    # reads

    async def get(self, actor: Actor, integration_id: str) -> Integration:
        actor.require(ADMIN_PERMISSION)
        async with self._uow() as uow:
            return await uow.integrations.get(actor.org_id, integration_id)

    async def list_integrations(self, actor: Actor, query: commands.ListIntegrations) -> Page:
        actor.require(ADMIN_PERMISSION)
        async with self._uow() as uow:
            return await uow.integrations.list_page(
                actor.org_id, statuses=query.statuses, vendor_id=query.vendor_id,
                page_size=query.page_size, page_token=query.page_token,
            )

    async def history(self, actor: Actor, integration_id: str) -> list[HistoryEntry]:
        actor.require(ADMIN_PERMISSION)
        async with self._uow() as uow:
            return await uow.integrations.history(actor.org_id, integration_id)

    async def lookup(self, actor: Actor, integration_id: str) -> Integration:
        """Any organisation's integration, for the edge (`trellis_edge`): one primary-key read."""
        actor.require(EDGE_PERMISSION)
        if not integration_id:
            raise InvalidArgument("integration_id is required")
        async with self._uow() as uow:
            return await uow.integrations.lookup(integration_id)

    # lifecycle: administrators only

    async def create(self, actor: Actor, cmd: commands.CreateIntegration) -> Integration:
        """A new integration in Requested state."""
        actor.require(ADMIN_PERMISSION)
        integration = Integration.request(
            id=new_id("int"), org_id=actor.org_id, vendor_id=cmd.vendor_id, name=cmd.name, owner=cmd.owner,
            requested_by=actor.user_id, now=self._clock(), description=cmd.description, scopes=cmd.scopes,
            rate_limit_per_minute=cmd.rate_limit_per_minute, daily_quota=cmd.daily_quota,
            ip_allowlist=cmd.ip_allowlist,
        )
        async with self._uow() as uow:
            await uow.integrations.add(integration)
            await self._record(uow, IntegrationChanged("created", None, integration, actor.user_id, request_id=cmd.request_id))
            await uow.commit()
        await uow.published()
        return integration

    async def approve(self, actor: Actor, cmd: commands.ApproveIntegration) -> Integration:
        """Requested -> Approved, by an administrator other than the requester."""
        actor.require(ADMIN_PERMISSION)
        now = self._clock()
        return await self._change(
            actor, cmd.integration_id, "approved", lambda i: i.approve(actor.user_id, now), request_id=cmd.request_id
        )

    async def update(self, actor: Actor, cmd: commands.UpdateIntegration) -> Integration:
        """Changes the named fields; every state but Revoked allows it."""
        actor.require(ADMIN_PERMISSION)
        if cmd.expected_version < 0:
            raise InvalidArgument(
                f"expected_version must be 0 (no check) or a version read before, got {cmd.expected_version}",
                expected_version=cmd.expected_version,
            )
        now = self._clock()
        return await self._change(
            actor, cmd.integration_id, "updated", lambda i: i.update(cmd.changes, now),
            request_id=cmd.request_id, expected_version=cmd.expected_version,
        )

    async def activate(self, actor: Actor, cmd: commands.ActivateIntegration) -> tuple[Integration, IssuedCredentials]:
        """Approved -> Active with credentials from identity, returned this once."""
        actor.require(ADMIN_PERMISSION)
        async with self._uow() as uow:
            integration = await uow.integrations.get(actor.org_id, cmd.integration_id)
            integration.check(Action.ACTIVATE)
            ensure_room_for_activation(await uow.integrations.count_live(actor.org_id), self._max_live)

        def activate(i: Integration, creds: IssuedCredentials, now: dt.datetime) -> None:
            i.activate(api_key_prefix=creds.api_key_prefix, client_id=creds.client_id, now=now)

        return await self._issue_then_commit(
            actor, integration, Action.ACTIVATE, "activated", cmd.request_id, activate, check_limit=True
        )

    async def reactivate(self, actor: Actor, cmd: commands.ReactivateIntegration) -> tuple[Integration, IssuedCredentials]:
        """Suspended -> Active with new credentials, by an administrator other than the suspender."""
        actor.require(ADMIN_PERMISSION)
        async with self._uow() as uow:
            integration = await uow.integrations.get(actor.org_id, cmd.integration_id)
        integration.check_reactivation(actor.user_id)

        def reactivate(i: Integration, creds: IssuedCredentials, now: dt.datetime) -> None:
            i.reactivate(actor.user_id, api_key_prefix=creds.api_key_prefix, client_id=creds.client_id, now=now)

        # Suspended already counts toward the limit, so reactivating never exceeds it.
        return await self._issue_then_commit(
            actor, integration, Action.REACTIVATE, "reactivated", cmd.request_id, reactivate, check_limit=False
        )

    async def suspend(self, actor: Actor, cmd: commands.SuspendIntegration) -> Integration:
        """Active -> Suspended; its credentials are revoked at identity before this returns."""
        actor.require(ADMIN_PERMISSION)
        now = self._clock()
        integration = await self._change(
            actor, cmd.integration_id, "suspended", lambda i: i.suspend(actor.user_id, cmd.reason, now),
            reason=cmd.reason, request_id=cmd.request_id,
        )
        await self._revoke_credentials(actor, integration, "suspended", cmd.reason, cmd.request_id)
        return integration

    async def revoke(self, actor: Actor, cmd: commands.RevokeIntegration) -> Integration:
        """Any state but Revoked -> Revoked, for good; credentials, if any were issued, are revoked."""
        actor.require(ADMIN_PERMISSION)
        now = self._clock()
        integration = await self._change(
            actor, cmd.integration_id, "revoked", lambda i: i.revoke(now), reason=cmd.reason, request_id=cmd.request_id
        )
        if integration.has_credentials:
            await self._revoke_credentials(actor, integration, "revoked", cmd.reason or "integration revoked", cmd.request_id)
        return integration

    async def regenerate_api_key(self, actor: Actor, cmd: commands.RegenerateApiKey) -> tuple[Integration, RegeneratedApiKey]:
        """A new API key for an Active integration; the old key stops working at once."""
        actor.require(ADMIN_PERMISSION)
        async with self._uow() as uow:
            integration = await uow.integrations.get(actor.org_id, cmd.integration_id)
        integration.check(Action.REGENERATE_API_KEY)
        key = await self._credentials.regenerate_api_key(actor, integration.id, cmd.request_id)
        now = self._clock()
        try:
            integration = await self._change(
                actor, integration.id, "api_key_regenerated",
                lambda i: i.api_key_regenerated(key.api_key_prefix, now), request_id=cmd.request_id,
            )
        except FailedPrecondition:
            # Suspended or revoked meanwhile: the key just made must not outlive that change.
            await self._compensate(actor, integration.id, "API key regenerated for an integration no longer active")
            raise
        return integration, key

    # steps the use cases share

    async def _change(
        self,
        actor: Actor,
        integration_id: str,
        kind: str,
        mutate: Mutation,
        *,
        reason: str = "",
        request_id: str = "",
        expected_version: int = 0,
    ) -> Integration:
        """Load, apply `mutate`, save over the version read, and record: one transaction."""
        async with self._uow() as uow:
            integration = await uow.integrations.get(actor.org_id, integration_id)
            read_version = expected_version or integration.version
            before = integration.copy()
            mutate(integration)
            await uow.integrations.save(integration, expected_version=read_version)
            await self._record(uow, IntegrationChanged(kind, before, integration, actor.user_id, reason=reason,
                                                       request_id=request_id))
            await uow.commit()
        await uow.published()
        return integration

    async def _issue_then_commit(
        self,
        actor: Actor,
        integration: Integration,
        action: Action,
        kind: str,
        request_id: str,
        apply: Callable[[Integration, IssuedCredentials, dt.datetime], None],
        *,
        check_limit: bool,
    ) -> tuple[Integration, IssuedCredentials]:
        """Lease the integration, issue credentials at identity, then commit the transition over
        the version read before issuing, ending the lease; when the commit fails, revoke what was
        issued and end the lease."""
        lease = _lease_id(request_id)
        await self._claim(actor, integration, action, lease)
        try:
            credentials = await self._credentials.issue(actor, integration.id, integration.scopes, lease)
        except BaseException:
            await self._release(actor, integration.id, lease)
            raise
        try:
            async with self._limit_lock, self._uow() as uow:
                if check_limit:
                    await uow.integrations.lock_org(actor.org_id)
                    ensure_room_for_activation(await uow.integrations.count_live(actor.org_id), self._max_live)
                current = await uow.integrations.get(actor.org_id, integration.id)
                before = current.copy()
                apply(current, credentials, self._clock())
                await uow.integrations.save(current, expected_version=integration.version, lease=lease)
                await self._record(uow, IntegrationChanged(kind, before, current, actor.user_id, request_id=lease))
                await uow.commit()
        except (Exception, asyncio.CancelledError):
            await self._undo_issue(actor, integration.id, lease, f"{kind} change was not committed")
            raise
        await uow.published()
        return current, credentials

    async def _claim(self, actor: Actor, integration: Integration, action: Action, lease: str) -> None:
        """Take the integration's lease in its own commit; Aborted while another holds it."""
        now = self._clock()
        async with self._uow() as uow:
            claimed = await uow.integrations.claim(
                actor.org_id, integration.id, lease=lease, status=integration.status, now=now,
                stale_before=now - self._lease_ttl,
            )
            current = None if claimed else await uow.integrations.get(actor.org_id, integration.id)
            await uow.commit()
        if current is not None:
            current.check(action)  # the state moved on meanwhile: FailedPrecondition naming it
            noun = "activation" if action is Action.ACTIVATE else "reactivation"
            raise Aborted(f"another {noun} of this integration is in progress; retry", integration_id=integration.id)

    async def _release(self, actor: Actor, integration_id: str, lease: str) -> None:
        try:
            async with self._uow() as uow:
                await uow.integrations.release(actor.org_id, integration_id, lease)
                await uow.commit()
        except Exception:  # noqa: BLE001 - the original failure is what the caller must see
            log.warning("could not release the lease on %s; it expires on its own", integration_id, exc_info=True)

    async def _undo_issue(self, actor: Actor, integration_id: str, lease: str, reason: str) -> None:
        """Revoke what this call issued while it still holds the lease, then end the lease.

        Under the lease no other issue for the integration is in flight, so its live credentials
        are the ones this call issued. A lease taken over as stale belongs to a newer call whose
        credentials must live: then nothing is revoked.
        """
        try:
            async with self._uow() as uow:
                held = await uow.integrations.holds(actor.org_id, integration_id, lease)
        except Exception:  # noqa: BLE001 - cannot tell: revoke, the safe side
            held = True
        if held:
            await self._compensate(actor, integration_id, reason)
        else:
            log.warning("lease on %s was taken over; leaving its credentials to the newer call", integration_id)
        await self._release(actor, integration_id, lease)

    async def _compensate(self, actor: Actor, integration_id: str, reason: str) -> None:
        try:
            await self._credentials.revoke(actor, integration_id, reason)
        except Exception:  # noqa: BLE001 - the original failure is what the caller must see
            # Left live, they still fail at the edge, which serves Active integrations only.
            log.warning("could not revoke credentials of %s after a failed commit", integration_id, exc_info=True)

    async def _revoke_credentials(self, actor: Actor, integration: Integration, kind: str, reason: str, request_id: str) -> None:
        try:
            await self._credentials.revoke(actor, integration.id, reason, request_id)
        except NotFound:
            pass  # identity holds nothing for it: nothing is live
        except Unavailable as exc:
            raise Unavailable(
                f"integration {integration.id} is {integration.status.value}, but identity could not be reached to "
                f"revoke its credentials now; identity revokes them when it consumes the "
                f"trellis.integration.{kind} event",
                integration_id=integration.id,
                state=integration.status.value,
            ) from exc

    async def _record(self, uow: RegistryUnitOfWork, change: IntegrationChanged) -> None:
        """The history row of one change, and the change published: in the unit's transaction."""
        await uow.integrations.add_history(change.history_entry(new_id("hst")))
        await uow.publish(change)


# --- setup requests of pre-built integrations ------------------------------------------------------


def setup_secrets_aad(setup_request_id: str) -> bytes:
    """What binds a request's sealed secrets to its row and column: a blob moved elsewhere fails to open."""
    return aad_for("setup_requests", "sealed_secrets", setup_request_id)


class SetupRequestHandlers:
    """The organisation's side (submit, read its own) and the platform team's (read every
    organisation's queue, start, complete, decline, read the connection secrets while
    configuring) of pre-built integration setup requests. Completing or declining erases the
    sealed secrets in the same transaction."""

    def __init__(self, units: UnitsOfWork, sealing: Sealing, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._uow = units
        self._sealing = sealing
        self._clock = clock

    def catalogue(self, actor: Actor) -> tuple[PrebuiltIntegration, ...]:
        return PREBUILT_INTEGRATIONS

    async def create(self, actor: Actor, cmd: commands.CreateSetupRequest) -> SetupRequest:
        """A new Submitted request; the same request id in the same organisation returns the first."""
        actor.require(ADMIN_PERMISSION)
        if cmd.request_id and not is_request_id(cmd.request_id):
            raise InvalidArgument(f"request_id must be {REQUEST_ID_FORM}", field="request_id")
        entry = prebuilt(cmd.prebuilt_id)
        details = validate_connection(entry, cmd.connection)
        request = SetupRequest.submit(
            id=new_id("setup"), org_id=actor.org_id, prebuilt_id=entry.id, details=details,
            requested_by=actor.user_id, request_id=cmd.request_id or new_id("req"), now=self._clock(),
            contact_email=cmd.contact_email, notes=cmd.notes,
        )
        sealed = (self._sealing.seal(json.dumps(details.secrets, sort_keys=True).encode(), setup_secrets_aad(request.id))
                  if details.secrets else None)
        try:
            async with self._uow() as uow:
                if cmd.request_id and (first := await uow.setup_requests.by_request_id(actor.org_id, cmd.request_id)):
                    return _same_request(first, entry.id)
                await uow.setup_requests.add(request, sealed)
                await uow.publish_setup(SetupRequestChanged("submitted", None, request, actor.user_id,
                                                            request_id=request.request_id))
                await uow.commit()
        except WriteConflict:
            # A retry of the same call committed first.
            async with self._uow() as uow:
                first = await uow.setup_requests.by_request_id(actor.org_id, request.request_id)
            if first is None:
                raise
            return _same_request(first, entry.id)
        await uow.published()
        return request

    async def get(self, actor: Actor, setup_request_id: str) -> SetupRequest:
        """An administrator's own organisation's request; any organisation's for a platform operator."""
        _require_id(setup_request_id)
        async with self._uow() as uow:
            if PLATFORM_PERMISSION in actor.permissions:
                return await uow.setup_requests.lookup(setup_request_id)
            actor.require(ADMIN_PERMISSION)
            return await uow.setup_requests.get(actor.org_id, setup_request_id)

    async def list_requests(self, actor: Actor, query: commands.ListSetupRequests) -> SetupPage:
        if query.all_organisations:
            actor.require(PLATFORM_PERMISSION)
        else:
            actor.require(ADMIN_PERMISSION)
        async with self._uow() as uow:
            return await uow.setup_requests.list_page(
                None if query.all_organisations else actor.org_id, statuses=query.statuses,
                page_size=query.page_size, page_token=query.page_token,
            )

    async def start(self, actor: Actor, cmd: commands.StartSetupRequest) -> SetupRequest:
        """Submitted -> In progress, by a platform operator."""
        now = self._clock()
        return await self._move(actor, cmd.setup_request_id, "started", lambda r: r.start(actor.user_id, now),
                                request_id=cmd.request_id)

    async def complete(self, actor: Actor, cmd: commands.CompleteSetupRequest) -> SetupRequest:
        """In progress -> Configured, by a platform operator."""
        now = self._clock()
        return await self._move(actor, cmd.setup_request_id, "configured",
                                lambda r: r.complete(actor.user_id, cmd.note, now), request_id=cmd.request_id)

    async def decline(self, actor: Actor, cmd: commands.DeclineSetupRequest) -> SetupRequest:
        """Submitted or In progress -> Declined with a reason, by a platform operator."""
        now = self._clock()
        return await self._move(actor, cmd.setup_request_id, "declined",
                                lambda r: r.decline(actor.user_id, cmd.reason, now), reason=cmd.reason,
                                request_id=cmd.request_id)

    async def reveal_secrets(self, actor: Actor, cmd: commands.RevealSetupRequestSecrets) -> RevealedSecrets:
        """The sealed connection secrets of an In progress request, opened for a platform operator
        other than its requester. The read is a history step and an audit event (names only),
        on the bus before the values are returned: there is no unrecorded read."""
        actor.require(PLATFORM_PERMISSION)
        _require_id(cmd.setup_request_id)
        async with self._uow() as uow:
            request = await uow.setup_requests.lookup(cmd.setup_request_id)
            before = request.copy()
            request.reveal_secrets(actor.user_id, cmd.reason, self._clock())
            sealed = await uow.setup_requests.sealed_secrets(request.id)
            if sealed is None:
                raise FailedPrecondition(f"setup request {request.id} holds no sealed connection secrets",
                                         setup_request_id=request.id, state=request.status.value)
            secrets = {str(k): str(v) for k, v in
                       json.loads(self._sealing.open(sealed, setup_secrets_aad(request.id))).items()}
            await uow.setup_requests.save(request, expected_version=before.version)
            await uow.publish_setup(SetupRequestChanged(SECRETS_REVEALED, before, request, actor.user_id,
                                                        reason=cmd.reason.strip(), request_id=cmd.request_id))
            await uow.commit()
        await uow.published()
        return RevealedSecrets(request, secrets)

    async def _move(self, actor: Actor, setup_request_id: str, kind: str, mutate: Callable[[SetupRequest], None], *,
                    reason: str = "", request_id: str = "") -> SetupRequest:
        actor.require(PLATFORM_PERMISSION)
        _require_id(setup_request_id)
        async with self._uow() as uow:
            request = await uow.setup_requests.lookup(setup_request_id)
            before = request.copy()
            mutate(request)
            # Configured or Declined: nobody needs the secrets any more, so they are not kept.
            await uow.setup_requests.save(request, expected_version=before.version,
                                          erase_secrets=request.status in TERMINAL)
            await uow.publish_setup(SetupRequestChanged(kind, before, request, actor.user_id, reason=reason.strip(),
                                                        request_id=request_id))
            await uow.commit()
        await uow.published()
        return request


def _require_id(setup_request_id: str) -> None:
    if not setup_request_id.strip():
        raise InvalidArgument("setup_request_id is required", field="setup_request_id")


def _same_request(first: SetupRequest, prebuilt_id: str) -> SetupRequest:
    """The request a retried create made the first time, unless the id now names another kind."""
    if first.prebuilt_id != prebuilt_id:
        raise AlreadyExists(
            f"request_id {first.request_id} already made setup request {first.id} for {first.prebuilt_id}; "
            "use a new request id for a new request",
            field="request_id", setup_request_id=first.id,
        )
    return first
