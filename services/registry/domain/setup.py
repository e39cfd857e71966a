"""Pre-built integrations and their setup requests: the catalogue, the connection details each
asks for, and the request's life ("Pre-Built Integrations" in the spec).

WooCommerce, Shopify and QuickBooks Online are managed connections: an organisation submits a
setup request with its connection details, and the platform team configures it.

    Submitted ──> In progress ──> Configured (terminal)
        └─────────────┴─────────> Declined, with a reason (terminal)

The catalogue is not the custom-integration vendor list (model.VENDORS): its ids are never
vendors of CreateIntegration, and ListVendors does not show it.

Secret connection details (a store's API token) never live on a SetupRequest: validation splits
them off, the use case seals them as one blob, and the request keeps only their names. A platform
operator reads them (reveal_secrets) only while the request is In progress, and never the one
who submitted it; each read is a step of the history. When the request becomes Configured or
Declined the blob is erased, and the history says so.

Separation of duties: the person who submitted a request does not start, complete, decline it
or read its secrets, even when they hold the platform team's permission too.

Plain Python, as model.py; errors are services.kit.errors classes naming the field.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

# --- the catalogue -------------------------------------------------------------------------------


class FieldKind(str, Enum):
    """How a connection field's value is checked beyond its length."""

    TEXT = "text"
    HTTPS_URL = "https_url"  # https://host[:port][/path], no query, fragment or credentials
    SHOPIFY_DOMAIN = "shopify_domain"  # <store>.myshopify.com
    DIGITS = "digits"  # QuickBooks' company (realm) id


@dataclass(frozen=True)
class ConnectionField:
    """One connection detail a pre-built integration asks for."""

    name: str
    label: str
    help: str
    required: bool
    secret: bool
    max_length: int
    kind: FieldKind = FieldKind.TEXT


@dataclass(frozen=True)
class PrebuiltIntegration:
    id: str
    name: str
    description: str
    fields: tuple[ConnectionField, ...]

    def field(self, name: str) -> ConnectionField | None:
        return next((f for f in self.fields if f.name == name), None)


PREBUILT_INTEGRATIONS: tuple[PrebuiltIntegration, ...] = (
    PrebuiltIntegration(
        "woocommerce", "WooCommerce",
        # The spec's words ("Pre-Built Integrations", the product named Trellis), then how it connects.
        "Automatic SKU and order synchronisation between Trellis and your WooCommerce store. Product data is "
        "pushed to WooCommerce, and incoming orders are received back into Trellis, through the store's REST API.",
        (
            ConnectionField("store_url", "Store URL", "Your store's address, e.g. https://shop.example.com",
                            required=True, secret=False, max_length=2048, kind=FieldKind.HTTPS_URL),
            ConnectionField("consumer_key", "Consumer key",
                            "WooCommerce > Settings > Advanced > REST API > Add key (Read/Write); starts with ck_",
                            required=True, secret=True, max_length=200),
            ConnectionField("consumer_secret", "Consumer secret", "Shown with the consumer key; starts with cs_",
                            required=True, secret=True, max_length=200),
        ),
    ),
    PrebuiltIntegration(
        "shopify", "Shopify",
        "Automatic SKU and order synchronisation between Trellis and your Shopify store. Product data is pushed "
        "to Shopify, and incoming orders are received back into Trellis, through a custom app's Admin API.",
        (
            ConnectionField("shop_domain", "Shop domain", "Your store's myshopify.com domain, e.g. acme.myshopify.com",
                            required=True, secret=False, max_length=255, kind=FieldKind.SHOPIFY_DOMAIN),
            ConnectionField("admin_api_access_token", "Admin API access token",
                            "Settings > Apps and sales channels > Develop apps > your app > API credentials; "
                            "starts with shpat_",
                            required=True, secret=True, max_length=255),
        ),
    ),
    PrebuiltIntegration(
        "quickbooks_online", "QuickBooks Online",
        "Automatic push of CRM account records and invoices from Trellis to QuickBooks Online, keeping your "
        "accounting system up to date without manual data entry. The Trellis platform team connects your company through "
        "Intuit's sign-in (OAuth) while configuring it, so no password or token is asked for here.",
        (
            ConnectionField("company_id", "Company ID (realm ID)",
                            "QuickBooks > Settings (gear) > Account and settings > Billing & subscription: Company ID",
                            required=True, secret=False, max_length=32, kind=FieldKind.DIGITS),
            ConnectionField("company_name", "Company name", "As it appears in QuickBooks, to confirm the right company",
                            required=False, secret=False, max_length=200),
        ),
    ),
)
_PREBUILT_BY_ID = {p.id: p for p in PREBUILT_INTEGRATIONS}


def prebuilt(prebuilt_id: str) -> PrebuiltIntegration:
    """The catalogue entry with this id; InvalidArgument naming the known ids otherwise."""
    found = _PREBUILT_BY_ID.get(prebuilt_id)
    if found is None:
        raise InvalidArgument(
            f"unknown pre-built integration {prebuilt_id!r}; pre-built integrations are: {', '.join(_PREBUILT_BY_ID)}",
            field="prebuilt_id", prebuilt_id=prebuilt_id,
        )
    return found


# --- validation ----------------------------------------------------------------------------------

MAX_CONTACT_EMAIL_LENGTH = 254
MAX_NOTES_LENGTH = 2000
MAX_REASON_LENGTH = 2000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SHOPIFY_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _field_error(name: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"connection.{name} {why}", field=f"connection.{name}")


def _https_url(name: str, value: str) -> str:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _field_error(name, f"must be an https:// URL such as https://shop.example.com, got {value!r}") from None
    host = (parts.hostname or "").lower()
    labels = host.split(".")
    if (parts.scheme.lower() != "https" or not host or len(labels) < 2 or not all(_HOST_LABEL.match(x) for x in labels)
            or parts.username is not None or parts.query or parts.fragment or port == 0):
        raise _field_error(name, f"must be an https:// URL such as https://shop.example.com, with no query, "
                                 f"fragment or user name; got {value!r}")
    return value


def _checked(f: ConnectionField, raw: str) -> str:
    value = raw.strip()
    if len(value) > f.max_length:
        raise _field_error(f.name, f"must be at most {f.max_length} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise _field_error(f.name, "must be one line of text, with no control characters")
    if f.kind is FieldKind.HTTPS_URL:
        return _https_url(f.name, value)
    if f.kind is FieldKind.SHOPIFY_DOMAIN:
        domain = value.lower().removeprefix("https://").rstrip("/")
        if not _SHOPIFY_DOMAIN.match(domain):
            raise _field_error(f.name, f"must be your store's myshopify.com domain, e.g. acme.myshopify.com; got {value!r}")
        return domain
    if f.kind is FieldKind.DIGITS and not value.isdecimal():
        raise _field_error(f.name, f"must be digits only (QuickBooks shows it as the Company ID), got {value!r}")
    return value


@dataclass(frozen=True)
class ConnectionDetails:
    """A request's connection details, checked: the plain ones as given (normalised), and the
    secret ones apart, to be sealed. `repr` never shows a secret."""

    plain: dict[str, str]
    secrets: dict[str, str] = field(repr=False)


def validate_connection(entry: PrebuiltIntegration, given: Mapping[str, str]) -> ConnectionDetails:
    """Every field the catalogue entry lists, checked: InvalidArgument naming the field for a name
    it does not list, a required one missing (or blank), one too long or of the wrong form."""
    unknown = sorted(set(given) - {f.name for f in entry.fields})
    if unknown:
        raise InvalidArgument(
            f"{entry.name} takes no connection field {', '.join(repr(u) for u in unknown)}; "
            f"its fields are: {', '.join(f.name for f in entry.fields)}",
            field=f"connection.{unknown[0]}", fields=",".join(unknown),
        )
    plain: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for f in entry.fields:
        raw = given.get(f.name, "")
        if not raw.strip():
            if f.required:
                raise _field_error(f.name, f"is required ({f.label}: {f.help})")
            continue
        (secrets if f.secret else plain)[f.name] = _checked(f, raw)
    return ConnectionDetails(plain, secrets)


def validate_contact_email(value: str) -> str:
    text = value.strip()
    if not text:
        return ""
    if len(text) > MAX_CONTACT_EMAIL_LENGTH or not _EMAIL.match(text):
        raise InvalidArgument(f"contact_email must be an email address such as ops@example.com, got {value[:80]!r}",
                              field="contact_email")
    return text


def _optional_text(value: str, what: str, limit: int) -> str:
    text = value.strip()
    if len(text) > limit:
        raise InvalidArgument(f"{what} must be at most {limit} characters, got {len(text)}", field=what)
    return text


# --- the request's life --------------------------------------------------------------------------


class SetupStatus(str, Enum):
    SUBMITTED = "submitted"
    IN_PROGRESS = "in_progress"
    CONFIGURED = "configured"
    DECLINED = "declined"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


class SetupAction(str, Enum):
    START = "start"
    COMPLETE = "complete"
    DECLINE = "decline"


# action -> (states it may start from, the state it leads to, the step's name in the history)
SETUP_TRANSITIONS: Mapping[SetupAction, tuple[frozenset[SetupStatus], SetupStatus, str]] = {
    SetupAction.START: (frozenset({SetupStatus.SUBMITTED}), SetupStatus.IN_PROGRESS, "started"),
    SetupAction.COMPLETE: (frozenset({SetupStatus.IN_PROGRESS}), SetupStatus.CONFIGURED, "configured"),
    SetupAction.DECLINE: (frozenset({SetupStatus.SUBMITTED, SetupStatus.IN_PROGRESS}), SetupStatus.DECLINED, "declined"),
}
TERMINAL = frozenset({SetupStatus.CONFIGURED, SetupStatus.DECLINED})
# Steps of the history that are not state changes (from_status == to_status).
SECRETS_REVEALED = "secrets_revealed"  # a platform operator read the sealed connection secrets
SECRETS_ERASED = "secrets_erased"  # the sealed blob was deleted on Configured or Declined
# What each platform step is, in a separation-of-duties refusal: "you cannot <verb> it".
_VERBS = {SetupAction.START: "start", SetupAction.COMPLETE: "complete", SetupAction.DECLINE: "decline"}


def next_setup_status(request_id: str, current: SetupStatus, action: SetupAction) -> SetupStatus:
    """The state `action` leads to; FailedPrecondition naming `current` when it is illegal."""
    sources, target, _ = SETUP_TRANSITIONS[action]
    if current not in sources:
        if current in TERMINAL:
            why = f"{current.label.lower()} is final; the organisation submits a new request instead"
        else:
            why = "only " + " or ".join(s.label.lower() for s in SetupStatus if s in sources) + " requests allow this"
        raise FailedPrecondition(
            f"cannot {action.value} setup request {request_id}: it is {current.label.lower()}; {why}",
            setup_request_id=request_id, state=current.value,
        )
    return target


@dataclass(frozen=True)
class SetupStep:
    """One step of a request's history: submitted, started, configured or declined, and the
    steps that change no state (secrets_revealed, secrets_erased: from_status == to_status)."""

    action: str
    actor_id: str
    from_status: SetupStatus | None
    to_status: SetupStatus
    note: str
    at: dt.datetime


@dataclass
class SetupRequest:
    """One organisation's request for a pre-built integration. Holds no secret: only the names
    of the secret fields given (`secrets_given`); their sealed values are the store's."""

    id: str
    org_id: str
    prebuilt_id: str
    requested_by: str
    request_id: str
    created_at: dt.datetime
    updated_at: dt.datetime
    connection: dict[str, str] = field(default_factory=dict)
    secrets_given: list[str] = field(default_factory=list)
    contact_email: str = ""
    notes: str = ""
    status: SetupStatus = SetupStatus.SUBMITTED
    handled_by: str = ""
    decline_reason: str = ""
    configured_note: str = ""
    version: int = 1
    history: list[SetupStep] = field(default_factory=list)

    @classmethod
    def submit(cls, *, id: str, org_id: str, prebuilt_id: str, details: ConnectionDetails, requested_by: str,
               request_id: str, now: dt.datetime, contact_email: str = "", notes: str = "") -> "SetupRequest":
        """A new Submitted request; `details` come from validate_connection for this entry."""
        entry = prebuilt(prebuilt_id)
        return cls(
            id=id, org_id=org_id, prebuilt_id=entry.id, requested_by=requested_by, request_id=request_id,
            created_at=now, updated_at=now, connection=dict(details.plain),
            secrets_given=[f.name for f in entry.fields if f.name in details.secrets],
            contact_email=validate_contact_email(contact_email), notes=_optional_text(notes, "notes", MAX_NOTES_LENGTH),
            history=[SetupStep("submitted", requested_by, None, SetupStatus.SUBMITTED, "", now)],
        )

    def _not_the_requester(self, actor_id: str, what: str) -> None:
        """PermissionDenied when `actor_id` submitted this request: the platform team's steps are
        someone else's, even for a user who holds both permissions."""
        if actor_id == self.requested_by:
            raise PermissionDenied(
                f"you submitted this setup request, so you cannot {what}: a different member of the platform "
                f"team must (separation of duties)",
                setup_request_id=self.id,
            )

    def check(self, action: SetupAction, actor_id: str) -> SetupStatus:
        """The state `action` by `actor_id` leads to: FailedPrecondition when the state does not
        allow it, PermissionDenied when they submitted the request."""
        target = next_setup_status(self.id, self.status, action)
        self._not_the_requester(actor_id, f"{_VERBS[action]} it")
        return target

    def _move(self, action: SetupAction, actor_id: str, note: str, now: dt.datetime) -> None:
        target = self.check(action, actor_id)
        self.history.append(SetupStep(SETUP_TRANSITIONS[action][2], actor_id, self.status, target, note, now))
        if target in TERMINAL and self.secrets_given:
            # The use case deletes the sealed blob in the same transaction (erase_secrets on save).
            self.history.append(SetupStep(SECRETS_ERASED, actor_id, target, target, "", now))
        self.status = target
        self.handled_by = actor_id
        self.updated_at = now
        self.version += 1

    @property
    def secrets_erased(self) -> bool:
        return any(s.action == SECRETS_ERASED for s in self.history)

    def reveal_secrets(self, operator: str, reason: str, now: dt.datetime) -> None:
        """Record that `operator` read the sealed connection secrets, with their reason (optional):
        FailedPrecondition unless In progress with secrets given, PermissionDenied for the requester."""
        if self.status is not SetupStatus.IN_PROGRESS or not self.secrets_given:
            raise FailedPrecondition(
                f"cannot read the connection secrets of setup request {self.id}: {self._why_no_secrets()}",
                setup_request_id=self.id, state=self.status.value,
            )
        self._not_the_requester(operator, "read its connection secrets")
        note = _optional_text(reason, "reason", MAX_REASON_LENGTH)
        self.history.append(SetupStep(SECRETS_REVEALED, operator, self.status, self.status, note, now))
        self.updated_at = now
        self.version += 1

    def _why_no_secrets(self) -> str:
        if not self.secrets_given:
            return f"{prebuilt(self.prebuilt_id).name} connection details hold no secret, and none was given"
        if self.status is SetupStatus.SUBMITTED:
            return "it is submitted; start it first (they can be read only while it is in progress)"
        return (f"it is {self.status.label.lower()}, and its connection secrets were erased then; "
                "the organisation submits a new request to connect again")

    def start(self, operator: str, now: dt.datetime) -> None:
        """Submitted -> In progress: the platform team has picked it up."""
        self._move(SetupAction.START, operator, "", now)

    def complete(self, operator: str, note: str, now: dt.datetime) -> None:
        """In progress -> Configured, with the team's note to the organisation (optional)."""
        self.check(SetupAction.COMPLETE, operator)
        self.configured_note = _optional_text(note, "note", MAX_REASON_LENGTH)
        self._move(SetupAction.COMPLETE, operator, self.configured_note, now)

    def decline(self, operator: str, reason: str, now: dt.datetime) -> None:
        """Submitted or In progress -> Declined; the reason, which the organisation reads, is required."""
        self.check(SetupAction.DECLINE, operator)
        text = reason.strip()
        if not text:
            raise InvalidArgument("a reason is required to decline a setup request (the organisation reads it)",
                                  field="reason")
        self.decline_reason = _optional_text(text, "reason", MAX_REASON_LENGTH)
        self._move(SetupAction.DECLINE, operator, self.decline_reason, now)

    def copy(self) -> "SetupRequest":
        return replace(self, connection=dict(self.connection), secrets_given=list(self.secrets_given),
                       history=list(self.history))

    def snapshot(self) -> dict[str, Any]:
        """The request's fields as JSON-ready values for audit before/after: no secret is held here."""
        return {
            "id": self.id, "org_id": self.org_id, "prebuilt_id": self.prebuilt_id, "status": self.status.value,
            "connection": dict(self.connection), "secrets_given": list(self.secrets_given),
            "contact_email": self.contact_email, "notes": self.notes, "requested_by": self.requested_by,
            "handled_by": self.handled_by, "decline_reason": self.decline_reason,
            "configured_note": self.configured_note, "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(), "version": self.version,
        }


def setup_snapshot_json(request: SetupRequest | None) -> str:
    return json.dumps(request.snapshot(), sort_keys=True) if request is not None else ""


def setup_request_not_found(setup_request_id: str) -> NotFound:
    return NotFound(f"setup request {setup_request_id} not found", setup_request_id=setup_request_id)


@dataclass(frozen=True)
class SetupRequestChanged:
    """A setup request was submitted, started, configured or declined, or its connection secrets
    were read (secrets_revealed): the audit trail is told, with names of secrets only."""

    kind: str  # submitted, started, configured, declined, secrets_revealed
    before: SetupRequest | None
    after: SetupRequest
    actor_id: str
    reason: str = ""
    request_id: str = ""
