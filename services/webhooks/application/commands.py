"""What callers ask webhooks to do, one command per use case.

Every command names the caller's view: `org_id` (only the edge sets it) and `integration_id`
(the partner's integration on edge calls; an optional owner filter for administrators).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.webhooks.domain.model import DeliveryStatus, SignatureScheme, SubscriptionStatus


@dataclass(frozen=True)
class View:
    """On whose behalf: see services.webhooks.application.handlers.caller_for."""

    org_id: str = ""
    integration_id: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class CreateSubscription:
    url: str
    activity_types: Sequence[str]
    description: str = ""
    scheme: SignatureScheme = SignatureScheme.SPEC
    view: View = field(default_factory=View)
    filter: str = ""  # JMESPath over the delivery document; domain/filters.py
    custom_headers: Mapping[str, str] = field(default_factory=dict)
    client_tls: ClientTls | None = None


@dataclass(frozen=True)
class ClientTls:
    """A client certificate (PEM, leaf first) and its unencrypted private key (PEM) for mutual
    TLS; in UpdateSubscription.changes["client_certificate"], None removes it."""

    certificate_pem: str
    private_key_pem: str


@dataclass(frozen=True)
class UpdateSubscription:
    subscription_id: str
    changes: Mapping[str, object]
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class SubscriptionRef:
    """Get, pause, resume, delete, regenerate the secret, send a test."""

    subscription_id: str
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class ListSubscriptions:
    statuses: Sequence[SubscriptionStatus] = ()
    page_size: int = 0
    page_token: str = ""
    view: View = field(default_factory=View)
    with_last_attempts: bool = False


@dataclass(frozen=True)
class ListDeliveries:
    subscription_id: str = ""
    statuses: Sequence[DeliveryStatus] = ()
    event_id: str = ""
    page_size: int = 0
    page_token: str = ""
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class ListAttempts:
    subscription_id: str = ""
    succeeded: bool | None = None
    event_id: str = ""
    delivery_id: str = ""
    page_size: int = 0
    page_token: str = ""
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class DeliveryRef:
    delivery_id: str
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class PublishActivity:
    type: str
    data_json: str = ""
    event_id: str = ""
    sender_type: str = ""
    sender_id: str = ""
    occurred_at: dt.datetime | None = None
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class ListActivities:
    types: Sequence[str] = ()
    page_size: int = 0
    page_token: str = ""
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class ApplyIntegrationChange:
    """An IntegrationChanged event from the registry."""

    event_id: str
    org_id: str
    integration_id: str
    status: str
    version: int


@dataclass(frozen=True)
class StartRecovery:
    """Send again every failed delivery of a subscription whose event arrived in [since, until)."""

    subscription_id: str
    since: dt.datetime | None
    until: dt.datetime | None = None
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class RecoveryRef:
    recovery_id: str
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class ListRecoveries:
    subscription_id: str = ""
    page_size: int = 0
    page_token: str = ""
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class SetRetention:
    """The organisation's retention in days; 0 returns it to the service's default."""

    days: int
    view: View = field(default_factory=View)


@dataclass(frozen=True)
class AttemptRef:
    """One attempt of the delivery log, with what it sent and what came back."""

    attempt_id: str
    view: View = field(default_factory=View)
