"""Webhooks' rules in plain Python: the activity catalogue, subscriptions and their states,
signing secrets and signatures, the delivery body, and the retry schedule.

Nothing here does I/O. The wire formats follow the spec exactly: the body is serialised once
and those bytes are signed; `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of "<ts>.<body>">`
keyed by the secret string as shown to the user.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from services.kit.errors import FailedPrecondition, InvalidArgument
from services.webhooks.domain.filters import check_filter
from services.webhooks.domain.client_tls import ClientCertificate

# --- the catalogue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityType:
    id: str
    name: str
    category: str


# The spec's table ("Choosing Activity Types"), in its order, with stable ids.
ACTIVITY_TYPES: tuple[ActivityType, ...] = tuple(
    ActivityType(id_, name, category)
    for category, entries in (
        ("Cultivation", (("batch.created", "Batch created"), ("harvest.recorded", "Harvest recorded"),
                         ("drying.completed", "Drying complete"), ("curing.completed", "Curing complete"))),
        ("Inventory", (("lot.created", "Lot created"), ("lot.transferred", "Lot transferred"),
                       ("weight.adjusted", "Weight adjusted"), ("destruction.queued", "Destruction queued"),
                       ("destruction.completed", "Destruction completed"))),
        ("Orders & Shipments", (("order.created", "Order created"), ("order.status_changed", "Order status changed"),
                                ("shipment.shipped", "Shipment shipped"), ("shipment.delivered", "Shipment delivered"))),
        ("Quality & Compliance", (("sample.created", "Sample created"), ("lab_results.received", "Lab results received"),
                                  ("capa.opened", "CAPA opened"), ("deviation.recorded", "Deviation recorded"),
                                  ("recall.initiated", "Recall initiated"))),
        ("Plant Care", (("pesticide.applied", "Pesticide applied"), ("fertiliser.applied", "Fertiliser applied"),
                        ("cuttings.propagated", "Cuttings propagated"), ("seeds.germinated", "Seeds germinated"))),
        ("Production", (("crude_extraction.recorded", "Crude extraction recorded"),
                        ("distillation.recorded", "Distillation recorded"),
                        ("final_product_weights.recorded", "Final product weights recorded"))),
    )
    for id_, name in entries
)
# What webhooks itself says about an organisation's subscriptions, delivered like any activity
# to its other subscriptions (a subscription never receives the alerts about itself).
SUBSCRIPTION_FAILING_TYPE = "webhook.subscription_failing"
SUBSCRIPTION_RECOVERED_TYPE = "webhook.subscription_recovered"
ALERT_TYPES: tuple[ActivityType, ...] = (
    ActivityType(SUBSCRIPTION_FAILING_TYPE, "Webhook subscription failing", "Webhooks"),
    ActivityType(SUBSCRIPTION_RECOVERED_TYPE, "Webhook subscription recovered", "Webhooks"),
)
# What a subscription can choose: the spec's catalogue and the alerts.
CATALOGUE: tuple[ActivityType, ...] = ACTIVITY_TYPES + ALERT_TYPES
KNOWN_TYPES = frozenset(t.id for t in CATALOGUE)
ALL_TYPES = "*"
TEST_TYPE = "webhook.test"

# What the platform may publish: the catalogue and future types of the same shape.
_TYPE_SHAPE = re.compile(r"^[a-z][a-z0-9_]{0,40}(\.[a-z][a-z0-9_]{0,40}){1,3}$")


def check_activity_types(types: Iterable[str]) -> tuple[str, ...]:
    """A subscription's types, sorted and unique; `*` alone stands for every type."""
    chosen = {t.strip() for t in types if t.strip()}
    if not chosen:
        raise InvalidArgument(f"choose at least one activity type, or {ALL_TYPES} for all; known types: {', '.join(sorted(KNOWN_TYPES))}")
    unknown = sorted(chosen - KNOWN_TYPES - {ALL_TYPES})
    if unknown:
        raise InvalidArgument(
            f"unknown activity type(s) {', '.join(unknown)}; known types: {', '.join(sorted(KNOWN_TYPES))}, "
            f"or {ALL_TYPES} for all current and future types",
            activity_types=",".join(unknown),
        )
    if ALL_TYPES in chosen:
        return (ALL_TYPES,)
    return tuple(sorted(chosen))


def check_published_type(activity_type: str) -> str:
    """A type an activity may carry: the catalogue's, or a future one of the same shape."""
    activity_type = activity_type.strip()
    if activity_type in (ALL_TYPES, TEST_TYPE):
        raise InvalidArgument(f"{activity_type!r} cannot be published as an activity type")
    if activity_type.startswith("webhook."):
        raise InvalidArgument(f"{activity_type!r} cannot be published: webhook.* types are the alerts webhooks "
                              "itself sends", type=activity_type)
    if not _TYPE_SHAPE.match(activity_type):
        raise InvalidArgument(
            f"activity type {activity_type!r} is malformed: lower-case words joined by dots, like lot.created",
            type=activity_type,
        )
    return activity_type


# --- subscriptions -------------------------------------------------------------------------------

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500


class SubscriptionStatus(enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"
    FAILING = "failing"
    DISABLED = "disabled"


class SignatureScheme(enum.Enum):
    SPEC = "spec"
    STANDARD_WEBHOOKS = "standard_webhooks"


def check_url(url: str) -> str:
    """An endpoint URL: absolute HTTPS with a host, no credentials, no fragment."""
    url = url.strip()
    if not url:
        raise InvalidArgument("an endpoint URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(f"the endpoint URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"the endpoint URL is malformed: {exc}", url=url) from exc
    if parts.scheme.lower() != "https":
        raise InvalidArgument(f"the endpoint URL must use HTTPS (https://…), got {parts.scheme or 'no'} scheme", url=url)
    if not parts.hostname:
        raise InvalidArgument("the endpoint URL has no host", url=url)
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("the endpoint URL must not carry credentials: deliveries send no authorisation; "
                              "verify the signature instead", url=url)
    if parts.fragment:
        raise InvalidArgument("the endpoint URL must not have a #fragment", url=url)
    if port == 0:
        raise InvalidArgument("the endpoint URL has port 0", url=url)
    return url


def check_description(description: str) -> str:
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(f"the description is longer than {MAX_DESCRIPTION_LENGTH} characters")
    return description


@dataclass
class Subscription:
    """An organisation-wide webhook subscription; its secret lives sealed in the store."""

    id: str
    org_id: str
    url: str
    activity_types: tuple[str, ...]
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    secret_created_at: dt.datetime
    integration_id: str = ""
    description: str = ""
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE
    scheme: SignatureScheme = SignatureScheme.SPEC
    integration_suspended: bool = False
    failing_since: dt.datetime | None = None
    version: int = 1
    # A JMESPath expression over the delivery document ("": every event); domain/filters.py.
    filter: str = ""
    # Names and masked hints of the custom headers every delivery sends; the values live sealed.
    custom_headers: tuple[CustomHeaderHint, ...] = ()
    # Presented in each delivery's TLS handshake (mutual TLS); its key lives sealed in the store.
    client_certificate: ClientCertificate | None = None
    # After a rotation with an overlap (Standard Webhooks only): until then the previous secret
    # signs too, its signature beside the new one's in `webhook-signature`.
    previous_secret_expires_at: dt.datetime | None = None

    def matches(self, activity_type: str) -> bool:
        return ALL_TYPES in self.activity_types or activity_type in self.activity_types

    @property
    def receives_new_events(self) -> bool:
        """Active and Failing subscriptions get a delivery per matching event (Failing queues it)."""
        return self.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.FAILING)

    def _changed(self, now: dt.datetime) -> None:
        self.updated_at = now
        self.version += 1

    def _require_not_disabled(self) -> None:
        if self.status is SubscriptionStatus.DISABLED:
            raise FailedPrecondition("this subscription was disabled when its integration was revoked",
                                     subscription_id=self.id, status=self.status.value)

    def update(self, changes: Mapping[str, object], now: dt.datetime) -> None:
        """Changes url, activity_types, description, signature_scheme or filter (already checked)."""
        self._require_not_disabled()
        for name, value in changes.items():
            if name == "url":
                self.url = check_url(str(value))
            elif name == "activity_types":
                self.activity_types = check_activity_types(cast("Iterable[str]", value))
            elif name == "description":
                self.description = check_description(str(value))
            elif name == "signature_scheme":
                assert isinstance(value, SignatureScheme)
                self.scheme = value
            elif name == "filter":
                self.filter = check_filter(str(value))
            elif name == "client_certificate":  # checked by client_tls.check_client_certificate, or None
                assert value is None or isinstance(value, ClientCertificate)
                self.client_certificate = value
            elif name == "custom_headers":
                self.custom_headers = header_hints(check_custom_headers(cast("Mapping[str, str]", value)))
            else:  # pragma: no cover - the transport checks the mask
                raise InvalidArgument(f"{name} cannot be updated")
        self._changed(now)

    def pause(self, now: dt.datetime) -> None:
        self._require_not_disabled()
        if self.status is SubscriptionStatus.PAUSED:
            return
        if self.status is SubscriptionStatus.FAILING:
            # Pausing forgets the health state: resume sends the queue (a test would too).
            self.failing_since = None
        self.status = SubscriptionStatus.PAUSED
        self._changed(now)

    def resume(self, now: dt.datetime) -> None:
        self._require_not_disabled()
        if self.status is not SubscriptionStatus.PAUSED:
            return
        self.status = SubscriptionStatus.ACTIVE
        self._changed(now)

    def secret_regenerated(self, now: dt.datetime, overlap: dt.timedelta = dt.timedelta(0)) -> None:
        """A new secret from now; with an overlap the one before signs too until `now + overlap`."""
        self._require_not_disabled()
        check_overlap(overlap, self.scheme)
        self.secret_created_at = now
        self.previous_secret_expires_at = now + overlap if overlap else None
        self._changed(now)

    def signs_with_previous(self, now: dt.datetime) -> bool:
        """Whether a delivery at `now` carries the previous secret's signature too."""
        return (self.scheme is SignatureScheme.STANDARD_WEBHOOKS and self.previous_secret_expires_at is not None
                and now < self.previous_secret_expires_at)

    def mark_failing(self, now: dt.datetime) -> bool:
        """All attempts of an event failed: Active -> Failing. False when it was not Active."""
        if self.status is not SubscriptionStatus.ACTIVE:
            return False
        self.status = SubscriptionStatus.FAILING
        self.failing_since = now
        self._changed(now)
        return True

    def recover(self, now: dt.datetime) -> bool:
        """A test delivery succeeded: Failing -> Active. False when it was not Failing."""
        if self.status is not SubscriptionStatus.FAILING:
            return False
        self.status = SubscriptionStatus.ACTIVE
        self.failing_since = None
        self._changed(now)
        return True

    def integration_status_changed(self, integration_status: str, now: dt.datetime) -> str | None:
        """Follows the owning integration; returns the event kind it caused, if any."""
        if self.status is SubscriptionStatus.DISABLED:
            return None
        if integration_status == "revoked":
            self.status = SubscriptionStatus.DISABLED
            self.integration_suspended = False
            self._changed(now)
            return "disabled"
        suspended = integration_status == "suspended"
        if suspended != self.integration_suspended:
            self.integration_suspended = suspended
            self._changed(now)
            return "integration_suspended" if suspended else "integration_reactivated"
        return None

    def audit_view(self) -> dict[str, object]:
        """What the audit trail keeps: never the secret."""
        return {
            "url": self.url, "activity_types": list(self.activity_types), "description": self.description,
            "status": self.status.value, "signature_scheme": self.scheme.value, "integration_id": self.integration_id,
            "filter": self.filter,
            **({"custom_headers": [h.name for h in self.custom_headers]} if self.custom_headers else {}),
            **({"client_certificate": self.client_certificate.sha256_fingerprint} if self.client_certificate else {}),
        }


# --- secrets and signatures -------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def secret_aad(subscription_id: str) -> bytes:
    """What a sealed signing secret is bound to: it opens only as this subscription's."""
    return f"subscriptions.secret:{subscription_id}".encode()


def previous_secret_aad(subscription_id: str) -> bytes:
    """The previous signing secret during an overlap: its own column of this subscription."""
    return f"subscriptions.previous_secret:{subscription_id}".encode()


def new_signing_secret() -> str:
    """`whsec_` + base64 of 32 random bytes.

    The spec's scheme keys HMAC with this whole string's UTF-8 bytes; Standard Webhooks keys it
    with the base64-decoded part after `whsec_`. One string serves both.
    """
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def spec_signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<raw body>`, keyed by the secret's UTF-8 bytes."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def standard_webhooks_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` of HMAC-SHA256 over `<id>.<timestamp>.<body>`, keyed by the decoded secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


MAX_SECRET_OVERLAP = dt.timedelta(days=7)


def check_overlap(overlap: dt.timedelta, scheme: SignatureScheme) -> None:
    """A rotation's overlap: none, or up to 7 days on the Standard Webhooks scheme only."""
    if overlap < dt.timedelta(0):
        raise InvalidArgument("the overlap must not be negative", field="overlap")
    if overlap > MAX_SECRET_OVERLAP:
        raise InvalidArgument(f"the overlap is at most 7 days ({int(MAX_SECRET_OVERLAP.total_seconds())} seconds); "
                              f"got {overlap}", field="overlap")
    if overlap and scheme is SignatureScheme.SPEC:
        raise FailedPrecondition(
            "a rotation with an overlap needs the standard_webhooks scheme: the spec's scheme has room for one "
            "signature (X-Webhook-Signature: sha256=<hex>), so there the previous secret stops signing at once. "
            "Regenerate without an overlap, or switch the subscription to standard_webhooks first, whose "
            "webhook-signature header carries both signatures during the overlap",
            field="overlap", signature_scheme=scheme.value)


def delivery_headers(
    scheme: SignatureScheme, secret: str, *, event_id: str, event_type: str, timestamp: int, body: bytes, user_agent: str,
    previous_secret: str | None = None,
) -> dict[str, str]:
    """Every header of one attempt; signed at `timestamp` (Unix seconds of this attempt). With
    `previous_secret` (Standard Webhooks, during an overlap) both signatures go, space-separated."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        "X-Webhook-Event": event_type,
    }
    if scheme is SignatureScheme.STANDARD_WEBHOOKS:
        headers["webhook-id"] = event_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = standard_webhooks_signature(secret, event_id, timestamp, body)
        if previous_secret is not None:
            headers["webhook-signature"] += " " + standard_webhooks_signature(previous_secret, event_id, timestamp, body)
    else:
        headers["X-Webhook-Id"] = event_id
        headers["X-Webhook-Timestamp"] = str(timestamp)
        headers["X-Webhook-Signature"] = spec_signature(secret, timestamp, body)
    return headers


SENT_BODY_LIMIT = 64 * 1024  # what the delivery log shows of the body sent


@dataclass(frozen=True)
class HeaderSent:
    """One header a delivery's attempts send: its value, or what the value is made of when each
    attempt computes it anew (`per_attempt`)."""

    name: str
    value: str
    per_attempt: bool = False


def headers_sent(scheme: SignatureScheme, *, event_id: str, event_type: str, user_agent: str) -> list[HeaderSent]:
    """The headers of every attempt as the log can re-derive them without the secret: the same
    names as delivery_headers, with the timestamp and the signature described, not computed."""
    made_of = {
        "X-Webhook-Timestamp": "Unix seconds when the attempt was made",
        "X-Webhook-Signature": "sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\" with the signing secret>",
        "webhook-timestamp": "Unix seconds when the attempt was made",
        "webhook-signature": "v1,<base64 HMAC-SHA256 of \"<id>.<timestamp>.<body>\" with the signing secret>",
    }
    # Signed with a throwaway key so that the names (and their order) are delivery_headers' own.
    names = delivery_headers(scheme, SECRET_PREFIX + base64.b64encode(bytes(SECRET_BYTES)).decode(),
                             event_id=event_id, event_type=event_type, timestamp=0, body=b"", user_agent=user_agent)
    return [HeaderSent(name, made_of[name], True) if name in made_of else HeaderSent(name, value)
            for name, value in names.items()]


# --- activities and the delivery body -----------------------------------------------------------------

SENDER_TYPES = ("integration", "user", "system")
# The actor of the changes no one asked for (a subscription failing, recovering, following its integration).
SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class IncomingActivity:
    """One platform activity as received (JetStream or PublishActivity), before storing."""

    event_id: str
    type: str
    org_id: str
    occurred_at: dt.datetime
    sender_type: str
    sender_id: str
    data: object
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    # An alert about this subscription: it gets no delivery of it; and, when the subscription
    # is a partner integration's, only that integration's and the administrators' subscriptions
    # do (another partner never learns of it).
    about_subscription_id: str = ""
    about_integration_id: str = ""

    def reaches(self, subscription_id: str, integration_id: str) -> bool:
        """Whether a matching subscription (its id and owning integration) may receive it."""
        if not self.about_subscription_id:
            return True
        return subscription_id != self.about_subscription_id and integration_id in ("", self.about_integration_id)


def parse_data(data_json: str) -> object:
    """An event's `data`: any JSON value; empty means {}."""
    if not data_json.strip():
        return {}
    try:
        return json.loads(data_json)
    except ValueError as exc:
        raise InvalidArgument(f"data_json is not valid JSON: {exc}") from exc


def check_sender(sender_type: str, sender_id: str) -> tuple[str, str]:
    sender_type = sender_type.strip().lower() or "system"
    if sender_type not in SENDER_TYPES:
        raise InvalidArgument(f"sender_type must be one of {', '.join(SENDER_TYPES)}", sender_type=sender_type)
    return sender_type, sender_id.strip()[:128]


def iso_utc(when: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z."""
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def delivery_document(activity: IncomingActivity) -> dict[str, object]:
    """The delivery body as a JSON value: what a subscription's filter reads."""
    return {
        "id": activity.event_id,
        "type": activity.type,
        "created_at": iso_utc(activity.occurred_at),
        "organisation_id": activity.org_id,
        "sender": {"type": activity.sender_type, "id": activity.sender_id},
        "data": activity.data,
    }


def delivery_body(activity: IncomingActivity) -> bytes:
    """The body every delivery of this event sends: serialised once, signed as these bytes."""
    document = delivery_document(activity)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def sample_data(subscription: Subscription) -> dict[str, object]:
    return {
        "message": "This is a test webhook from Trellis.",
        "subscription_id": subscription.id,
        "url": subscription.url,
    }


# --- attempts and the retry schedule --------------------------------------------------------------------


class AttemptError(enum.Enum):
    NONE = "none"
    HTTP_STATUS = "http_status"
    REDIRECT = "redirect"
    TIMEOUT = "timeout"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION = "connection"
    TLS = "tls"
    DNS = "dns"
    SSRF_REFUSED = "ssrf_refused"


# Transport failures worth another try. A refused address is retried like a name that does not
# resolve: DNS answers change, no connection is ever made to a refused address, and a partner
# (who sees both as `unusable_host`) must not learn from the retries which one it was.
RETRYABLE_ERRORS = frozenset({AttemptError.TIMEOUT, AttemptError.CONNECTION_REFUSED, AttemptError.CONNECTION,
                              AttemptError.TLS, AttemptError.DNS, AttemptError.SSRF_REFUSED})
RESPONSE_BODY_LIMIT = 2048


@dataclass(frozen=True)
class HttpResult:
    """What one POST came to: an HTTP status, or a transport error."""

    status_code: int = 0
    error: AttemptError = AttemptError.NONE
    error_detail: str = ""
    response_body: str = ""
    duration_ms: float = 0.0
    # What the sender read, before the attempt bounds and masks it (AttemptExchange.record).
    response_headers: tuple[tuple[str, str], ...] = ()
    raw_body: bytes = b""
    # Every header the request went with (the client's own, Host and Content-Length, included).
    sent_headers: tuple[tuple[str, str], ...] = ()
    exchange: "AttemptExchange | None" = None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300 and self.error is AttemptError.NONE

    @property
    def retryable(self) -> bool:
        """5xx, timeouts and connection, TLS, DNS and refused-address errors are retried; 4xx and 3xx never."""
        if self.error is AttemptError.HTTP_STATUS:
            return self.status_code >= 500
        return self.error in RETRYABLE_ERRORS


def classify_status(status_code: int, body: str, duration_ms: float) -> HttpResult:
    """An HTTP answer as an attempt result: 2xx success, 3xx a redirect not followed, else failure."""
    if 200 <= status_code < 300:
        return HttpResult(status_code, AttemptError.NONE, "", body, duration_ms)
    if 300 <= status_code < 400:
        return HttpResult(status_code, AttemptError.REDIRECT, f"HTTP {status_code}: redirects are not followed", body, duration_ms)
    return HttpResult(status_code, AttemptError.HTTP_STATUS, f"HTTP {status_code}", body, duration_ms)


class DeliveryStatus(enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FILTERED = "filtered"  # the subscription's filter did not pass the event: never attempted


@dataclass(frozen=True)
class RetryPolicy:
    """The spec's schedule: attempt 1 at once, then each delay after the attempt before."""

    delays_seconds: tuple[float, ...] = (60.0, 300.0, 1800.0, 7200.0)

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.delays_seconds):
            raise ValueError("retry delays must not be negative")

    @classmethod
    def of(cls, delays: Sequence[float]) -> "RetryPolicy":
        return cls(tuple(float(d) for d in delays))

    @property
    def max_attempts(self) -> int:
        return len(self.delays_seconds) + 1

    def next_attempt_at(self, attempt: int, started_at: dt.datetime) -> dt.datetime | None:
        """When attempt `attempt + 1` is due after attempt `attempt` failed; None after the last."""
        if attempt >= self.max_attempts:
            return None
        return started_at + dt.timedelta(seconds=self.delays_seconds[attempt - 1])


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt does to its delivery and subscription."""

    status: DeliveryStatus
    next_attempt_at: dt.datetime | None
    exhausted: bool  # the last attempt of the schedule failed: the subscription becomes Failing


def outcome_of(result: HttpResult, attempt: int, started_at: dt.datetime, policy: RetryPolicy, *, test: bool = False) -> AttemptOutcome:
    """Success ends the delivery; a retryable failure schedules the next attempt until the last;
    anything else fails it at once. A test delivery is tried once."""
    if result.succeeded:
        return AttemptOutcome(DeliveryStatus.SUCCEEDED, None, False)
    if test or not result.retryable:
        return AttemptOutcome(DeliveryStatus.FAILED, None, False)
    next_at = policy.next_attempt_at(attempt, started_at)
    if next_at is None:
        return AttemptOutcome(DeliveryStatus.FAILED, None, True)
    return AttemptOutcome(DeliveryStatus.PENDING, next_at, False)


def waits_for(subscription: Subscription) -> str:
    """What a pending delivery of this subscription waits for beyond its due time ("" for nothing):
    only an Active subscription whose integration is not suspended is attempted."""
    if subscription.status is SubscriptionStatus.PAUSED:
        return "the subscription is paused: it goes when the subscription is resumed"
    if subscription.status is SubscriptionStatus.FAILING:
        return "the subscription is failing: it goes once a test delivery succeeds"
    if subscription.status is SubscriptionStatus.DISABLED:
        return "the subscription is disabled: it will not go"
    if subscription.integration_suspended:
        return "its integration is suspended: it goes when the integration is reactivated"
    return ""


def pending_delivery_text(*, attempts: int, round_: int, next_attempt_at: dt.datetime | None,
                          subscription: Subscription, now: dt.datetime) -> str:
    """When a pending delivery goes: `attempt 2 is due at 2026-…Z`, and what it waits for."""
    which = f"attempt {attempts + 1}" + (f" of round {round_}" if round_ > 1 else "")
    if next_attempt_at is None or next_attempt_at <= now:
        due = f"{which} is due now"
    else:
        due = f"{which} is due at {next_attempt_at.astimezone(dt.timezone.utc).isoformat(timespec='seconds').replace('+00:00', 'Z')}"
    held = waits_for(subscription)
    return f"{due}, but {held}" if held else due


def truncate_body(raw: bytes) -> str:
    """The first 2 KB of a response, as text."""
    return raw[:RESPONSE_BODY_LIMIT].decode("utf-8", errors="replace")


# --- listings ----------------------------------------------------------------------------------

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# --- recovery after an outage ---------------------------------------------------------------------

# A recovery re-queues its deliveries this many per transaction: a long one never holds the
# deliveries table for long, so the dispatcher's claims and records go on between batches.
RECOVERY_BATCH = 1000
# Clock skew allowed between the caller and this service before a time counts as "in the future".
RECOVERY_CLOCK_SKEW = dt.timedelta(seconds=60)


def check_recovery_range(since: dt.datetime | None, until: dt.datetime | None,
                         now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[since, until) of a recovery: since required and not in the future, until (default now)
    not in the future and after since."""
    if since is None:
        raise InvalidArgument("since is required: recover the failed deliveries whose event arrived since when?",
                              field="since")
    if since > now + RECOVERY_CLOCK_SKEW:
        raise InvalidArgument(f"since ({iso_utc(since)}) is in the future; nothing has arrived since then",
                              field="since")
    if until is None:
        until = now
    elif until > now + RECOVERY_CLOCK_SKEW:
        raise InvalidArgument(f"until ({iso_utc(until)}) is in the future; leave it out to recover up to now",
                              field="until")
    if since >= until:
        raise InvalidArgument(f"since ({iso_utc(since)}) must be before until ({iso_utc(until)})", field="until")
    return since, until


@dataclass(frozen=True)
class Recovery:
    """One recovery operation and its progress: `queued` deliveries sent again, `done` of them
    finished their new round (`succeeded` or failed again)."""

    id: str
    org_id: str
    subscription_id: str
    since: dt.datetime
    until: dt.datetime
    created_by: str
    created_at: dt.datetime
    queued: int = 0
    done: int = 0
    succeeded: int = 0
    waiting_for: str = ""

    @property
    def failed(self) -> int:
        return self.done - self.succeeded

    @property
    def finished(self) -> bool:
        return self.done >= self.queued


# --- retention -------------------------------------------------------------------------------------

DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 3650
# Rows deleted per transaction by a retention pass (as the logs service's RETENTION_BATCH).
RETENTION_BATCH = 1000


def check_retention_days(days: int) -> int:
    """An organisation's retention in days (1 .. MAX_RETENTION_DAYS); 0 clears the override."""
    if days < 0 or days > MAX_RETENTION_DAYS:
        raise InvalidArgument(f"days must be between 1 and {MAX_RETENTION_DAYS} (or 0 to return to the default)",
                              field="days")
    return days


# --- alerts -----------------------------------------------------------------------------------------

ALERT_SENDER = "webhooks"


def subscription_alert(type_: str, *, event_id: str, org_id: str, subscription_id: str, integration_id: str, url: str,
                       failing_since: dt.datetime | None, now: dt.datetime,
                       **detail: object) -> IncomingActivity:
    """`webhook.subscription_failing` or `webhook.subscription_recovered` about one subscription,
    as an activity of its organisation that its other subscriptions may receive."""
    data: dict[str, object] = {
        "subscription_id": subscription_id, "integration_id": integration_id or None, "endpoint_url": url,
        "status": "failing" if type_ == SUBSCRIPTION_FAILING_TYPE else "active",
        "failing_since": iso_utc(failing_since) if failing_since is not None else None, **detail,
    }
    return IncomingActivity(event_id=event_id, type=type_, org_id=org_id, occurred_at=now, sender_type="system",
                            sender_id=ALERT_SENDER, data=data, about_subscription_id=subscription_id,
                            about_integration_id=integration_id)


# --- what an attempt sent and what came back ----------------------------------------------------

EXCHANGE_BODY_LIMIT = 4096          # bytes of the answer's body an attempt keeps
MAX_EXCHANGE_HEADERS = 50           # headers kept of each direction; the rest are counted as omitted
MAX_EXCHANGE_HEADER_NAME = 128      # characters of a name kept; a longer header is omitted
MAX_EXCHANGE_HEADER_VALUE = 1024    # characters of a value kept (cut, marked with …)
MAX_EXCHANGE_HEADER_BYTES = 8192    # names and values of one direction, together
MASK = "[masked]"
# A secret shorter than this is masked where it is a header's whole value we sent, not searched
# for in what a receiver answered: a short value ("1", "yes") would blank out unrelated text.
MIN_ECHO_MASK = 6


class Masker:
    """Replaces secrets in what an attempt records: the values of the named headers wherever we
    sent them, and every occurrence of a secret (signing secret, custom header value) in an answer."""

    def __init__(self, secrets: Iterable[str], masked_names: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_ECHO_MASK}, key=len, reverse=True)
        self._names = frozenset(n.lower() for n in masked_names)

    @classmethod
    def for_signing(cls, signing_secrets: Iterable[str], headers: Mapping[str, str] | None = None) -> "Masker":
        """The signing secrets (whole, and their base64 key after `whsec_`) and custom headers' values."""
        custom = dict(headers or {})
        secrets = [part for s in signing_secrets for part in (s, s.removeprefix(SECRET_PREFIX))]
        return cls([*secrets, *custom.values()], custom)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def header(self, name: str, value: str) -> str:
        return MASK if name.lower() in self._names else self.text(value)


def _kept_headers(headers: Iterable[tuple[str, str]], masker: Masker) -> tuple[tuple[tuple[str, str], ...], int]:
    """The headers within the bounds, masked; and how many were left out."""
    kept: list[tuple[str, str]] = []
    omitted = 0
    size = 0
    for name, value in headers:
        if len(kept) >= MAX_EXCHANGE_HEADERS or len(name) > MAX_EXCHANGE_HEADER_NAME:
            omitted += 1
            continue
        shown = masker.header(name, value)
        if len(shown) > MAX_EXCHANGE_HEADER_VALUE:
            shown = shown[:MAX_EXCHANGE_HEADER_VALUE - 1] + "…"
        cost = len(name.encode()) + len(shown.encode())
        if size + cost > MAX_EXCHANGE_HEADER_BYTES:
            omitted += 1
            continue
        size += cost
        kept.append((name, shown))
    return tuple(kept), omitted


def masked_body(raw: bytes, masker: Masker, limit: int) -> tuple[str, bool]:
    """The first `limit` bytes of an answer as text, secrets masked before the cut (so no
    secret survives in part at the cut); and whether anything was cut."""
    text = masker.text(raw.decode("utf-8", errors="replace")).encode()
    return text[:limit].decode("utf-8", errors="ignore"), len(text) > limit


@dataclass(frozen=True)
class AttemptExchange:
    """What one attempt sent (its headers, signature included, as the receiver saw them) and
    what came back (headers, the first 4 KiB of the body), bounded, with secrets masked."""

    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: str = ""
    response_body_truncated: bool = False
    headers_omitted: int = 0    # headers of either direction left out by the bounds

    @classmethod
    def record(cls, request_headers: Iterable[tuple[str, str]], response_headers: Iterable[tuple[str, str]], raw_body: bytes,
               masker: Masker) -> "AttemptExchange":
        sent, sent_omitted = _kept_headers(request_headers, masker)
        answered, answered_omitted = _kept_headers(response_headers, masker)
        body, truncated = masked_body(raw_body, masker, EXCHANGE_BODY_LIMIT)
        return cls(sent, answered, body, truncated, sent_omitted + answered_omitted)

    def as_json(self) -> str:
        return json.dumps({"request_headers": self.request_headers, "response_headers": self.response_headers,
                           "response_body": self.response_body, "response_body_truncated": self.response_body_truncated,
                           "headers_omitted": self.headers_omitted}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "AttemptExchange":
        doc = json.loads(text)
        return cls(tuple((str(n), str(v)) for n, v in doc["request_headers"]),
                   tuple((str(n), str(v)) for n, v in doc["response_headers"]),
                   str(doc["response_body"]), bool(doc["response_body_truncated"]), int(doc["headers_omitted"]))


# --- custom headers --------------------------------------------------------------------------------

MAX_CUSTOM_HEADERS = 20
MAX_CUSTOM_HEADER_NAME = 64
MAX_CUSTOM_HEADER_VALUE = 1024
MAX_CUSTOM_HEADERS_BYTES = 8192
# What a delivery, its framing or its signature depends on, and hop-by-hop headers: a custom
# header may not set them (compared in lower case).
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "expect", "user-agent",
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "upgrade", "traceparent", "tracestate",
    "x-webhook-id", "x-webhook-event", "x-webhook-timestamp", "x-webhook-signature",
    "webhook-id", "webhook-timestamp", "webhook-signature",
})
# RFC 9110's token: the characters a field name may have.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# A field value: visible ASCII, spaces and tabs inside; no CR, LF, NUL or other control, and no
# non-ASCII (clients and servers disagree on how to encode it).
_FIELD_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?$")


@dataclass(frozen=True)
class CustomHeaderHint:
    """A custom header as it is shown back: its name and a hint of its value, never the value."""

    name: str
    hint: str


def check_custom_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Custom headers a subscription's deliveries may send, within their bounds; refuses the names
    that would break a delivery or its signature, and anything that is not a header."""
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise InvalidArgument(f"at most {MAX_CUSTOM_HEADERS} custom headers, got {len(headers)}", field="custom_headers")
    checked: dict[str, str] = {}
    seen: set[str] = set()
    size = 0
    for raw_name, value in headers.items():
        name = raw_name.strip()
        shown = name[:MAX_CUSTOM_HEADER_NAME]
        if not name:
            raise InvalidArgument("a custom header needs a name", field="custom_headers")
        if len(name) > MAX_CUSTOM_HEADER_NAME:
            raise InvalidArgument(f"custom header name {shown!r}… is longer than {MAX_CUSTOM_HEADER_NAME} characters",
                                  field="custom_headers")
        if not _TOKEN.match(name):
            raise InvalidArgument(f"custom header name {shown!r} is not a header name: letters, digits and !#$%&'*+-.^_`|~ only",
                                  field="custom_headers", header=shown)
        if name.lower() in RESERVED_HEADERS:
            raise InvalidArgument(
                f"custom header {name} cannot be set: Trellis sets it for every delivery (its framing, its signature "
                f"or its timestamp), or it is a hop-by-hop header; reserved: {', '.join(sorted(RESERVED_HEADERS))}",
                field="custom_headers", header=name)
        if name.lower() in seen:
            raise InvalidArgument(f"custom header {name} is given twice (names are case-insensitive)",
                                  field="custom_headers", header=name)
        if len(value) > MAX_CUSTOM_HEADER_VALUE:
            raise InvalidArgument(f"the value of custom header {name} is longer than {MAX_CUSTOM_HEADER_VALUE} characters",
                                  field="custom_headers", header=name)
        if not _FIELD_VALUE.match(value):
            raise InvalidArgument(f"the value of custom header {name} is empty, has spaces at its ends, or holds a "
                                  "line break, a control or a non-Latin-1 character", field="custom_headers", header=name)
        size += len(name) + len(value)
        if size > MAX_CUSTOM_HEADERS_BYTES:
            raise InvalidArgument(f"the custom headers' names and values together exceed {MAX_CUSTOM_HEADERS_BYTES} bytes",
                                  field="custom_headers")
        seen.add(name.lower())
        checked[name] = value
    return checked


def value_hint(value: str) -> str:
    """What is shown of a custom header's value: its last 4 characters when it is long enough
    (12 or more) that they give nothing away, else nothing but its length."""
    if len(value) >= 12:
        return f"…{value[-4:]} ({len(value)} characters)"
    return f"({len(value)} characters)"


def header_hints(headers: Mapping[str, str]) -> tuple[CustomHeaderHint, ...]:
    return tuple(CustomHeaderHint(name, value_hint(value)) for name, value in headers.items())


def custom_headers_aad(subscription_id: str) -> bytes:
    """What a sealed set of custom headers is bound to: this subscription's column only."""
    return f"subscriptions.custom_headers:{subscription_id}".encode()


def seal_form(headers: Mapping[str, str]) -> bytes:
    """The custom headers as the bytes sealed at rest."""
    return json.dumps(dict(headers), ensure_ascii=False, separators=(",", ":")).encode()


def opened_form(plain: bytes) -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads(plain).items()}
