"""What callers ask the registry to do, one imperative command per use case.

`request_id` ties a change to the caller's request in the audit trail; for activation and
reactivation it is also identity's idempotency key, so a retry never issues a second live set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.registry.domain.model import Status
from services.registry.domain.setup import SetupStatus


@dataclass(frozen=True)
class CreateIntegration:
    vendor_id: str
    name: str
    owner: str
    description: str = ""
    scopes: Sequence[str] = ()
    rate_limit_per_minute: int | None = None  # None: the default; a given 0 is refused
    daily_quota: int = 0  # 0: no daily quota
    ip_allowlist: Sequence[str] = ()
    request_id: str = ""


@dataclass(frozen=True)
class ApproveIntegration:
    integration_id: str
    request_id: str = ""


@dataclass(frozen=True)
class ActivateIntegration:
    integration_id: str
    request_id: str = ""


@dataclass(frozen=True)
class UpdateIntegration:
    integration_id: str
    # Field name -> new value, for the fields the update mask names.
    changes: Mapping[str, Any] = field(default_factory=dict)
    expected_version: int = 0  # 0 skips the check
    request_id: str = ""


@dataclass(frozen=True)
class SuspendIntegration:
    integration_id: str
    reason: str
    request_id: str = ""


@dataclass(frozen=True)
class ReactivateIntegration:
    integration_id: str
    request_id: str = ""


@dataclass(frozen=True)
class RevokeIntegration:
    integration_id: str
    reason: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class RegenerateApiKey:
    integration_id: str
    request_id: str = ""


@dataclass(frozen=True)
class ListIntegrations:
    statuses: Sequence[Status] = ()
    vendor_id: str = ""
    page_size: int = 0
    page_token: str = ""


# --- setup requests of pre-built integrations ------------------------------------------------


@dataclass(frozen=True)
class CreateSetupRequest:
    prebuilt_id: str
    # Every connection field, secrets included (they are sealed, never stored in plain text).
    connection: Mapping[str, str] = field(default_factory=dict, repr=False)
    contact_email: str = ""
    notes: str = ""
    request_id: str = ""  # the same one in the same organisation returns the first request


@dataclass(frozen=True)
class ListSetupRequests:
    statuses: Sequence[SetupStatus] = ()
    all_organisations: bool = False  # platform operators: every organisation's queue, oldest first
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class StartSetupRequest:
    setup_request_id: str
    request_id: str = ""


@dataclass(frozen=True)
class CompleteSetupRequest:
    setup_request_id: str
    note: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class DeclineSetupRequest:
    setup_request_id: str
    reason: str
    request_id: str = ""


@dataclass(frozen=True)
class RevealSetupRequestSecrets:
    setup_request_id: str
    reason: str = ""  # optional: the state (In progress) already says why; recorded in the history and audit
    request_id: str = ""
