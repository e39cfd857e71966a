"""How webhook subscriptions and their delivery log are shown: status names, the buttons a
status offers, activity types grouped by the spec's categories, attempt outcomes. Presentation
only: the webhooks service decides every action (tests/unit/console/test_webhook_views.py holds
ACTIONS to its domain)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.console.formats import moment
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb

ALL_TYPES = "*"
STATUS_NAMES = {
    pb.SUBSCRIPTION_STATUS_ACTIVE: "Active",
    pb.SUBSCRIPTION_STATUS_PAUSED: "Paused",
    pb.SUBSCRIPTION_STATUS_FAILING: "Failing",
    pb.SUBSCRIPTION_STATUS_DISABLED: "Disabled",
}
STATUS_BY_SLUG = {name.lower(): value for value, name in STATUS_NAMES.items()}
SCHEMES = {
    "spec": (pb.SIGNATURE_SCHEME_SPEC, "X-Webhook-Signature (HMAC-SHA256 of <timestamp>.<body>, the spec's)"),
    "standard_webhooks": (pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS, "Standard Webhooks (webhook-id, webhook-timestamp, "
                          "webhook-signature)"),
}
SCHEME_SLUG = {value: slug for slug, (value, _) in SCHEMES.items()}
DELIVERY_STATUS_NAMES = {
    pb.DELIVERY_STATUS_PENDING: "Pending",
    pb.DELIVERY_STATUS_SUCCEEDED: "Succeeded",
    pb.DELIVERY_STATUS_FAILED: "Failed",
    pb.DELIVERY_STATUS_CANCELLED: "Cancelled",
    pb.DELIVERY_STATUS_FILTERED: "Filtered",
}
ERROR_NAMES = {
    pb.ATTEMPT_ERROR_HTTP_STATUS: "HTTP error status",
    pb.ATTEMPT_ERROR_REDIRECT: "Redirect (not followed)",
    pb.ATTEMPT_ERROR_TIMEOUT: "Timed out",
    pb.ATTEMPT_ERROR_CONNECTION_REFUSED: "Connection refused",
    pb.ATTEMPT_ERROR_CONNECTION: "Connection failed",
    pb.ATTEMPT_ERROR_TLS: "TLS handshake or certificate refused",
    pb.ATTEMPT_ERROR_DNS: "Host name did not resolve",
    pb.ATTEMPT_ERROR_SSRF_REFUSED: "Address refused (private or reserved)",
}
# The delivery log's tabs: slug -> (label, the service's outcome filter).
TABS = {"all": ("All", pb.OUTCOME_UNSPECIFIED), "succeeded": ("Succeeded", pb.OUTCOME_SUCCEEDED),
        "failed": ("Failed", pb.OUTCOME_FAILED), "filtered": ("Filtered", pb.OUTCOME_FILTERED)}
# The tab that lists deliveries, not attempts: the events the subscription's filter did not pass.
FILTERED_TAB = "filtered"
FILTER_HELP_URL = "https://jmespath.org/tutorial.html"
MAX_ATTEMPTS = 5  # the spec's retry schedule: attempt 1 immediately, 2-5 later

# The buttons each status offers, as the webhooks domain allows (services/webhooks/domain/model.py
# Subscription): a Disabled subscription (its integration revoked) can only be deleted; Enable
# is Resume, which changes only a Paused one; Pause from Active or Failing.
ACTIONS: dict[int, tuple[str, ...]] = {
    pb.SUBSCRIPTION_STATUS_ACTIVE: ("test", "pause", "edit", "regenerate-secret", "recover", "delete"),
    pb.SUBSCRIPTION_STATUS_FAILING: ("test", "pause", "edit", "regenerate-secret", "recover", "delete"),
    pb.SUBSCRIPTION_STATUS_PAUSED: ("test", "enable", "edit", "regenerate-secret", "recover", "delete"),
    pb.SUBSCRIPTION_STATUS_DISABLED: ("delete",),
}


def status_name(status: pb.SubscriptionStatus) -> str:
    return STATUS_NAMES.get(status, "Unknown")


def actions(status: int) -> tuple[str, ...]:
    return ACTIONS.get(status, ())


# Regenerate Secret's overlap choices (Standard Webhooks only): form value (seconds), label.
OVERLAPS: tuple[tuple[str, str], ...] = (
    ("0", "no overlap: the old secret stops at once"), ("3600", "1 hour"), ("86400", "24 hours"),
    ("259200", "3 days"), ("604800", "7 days (the most)"),
)
_OVERLAP_SECONDS = frozenset(int(value) for value, _ in OVERLAPS)


def overlap_seconds(value: object) -> int:
    """The overlap the Regenerate Secret form asks for: one of OVERLAPS, else none (the
    service bounds it again)."""
    try:
        seconds = int(str(value or "0"))
    except ValueError:
        return 0
    return seconds if seconds in _OVERLAP_SECONDS else 0


def scheme_label(scheme: pb.SignatureScheme) -> str:
    return SCHEMES[SCHEME_SLUG.get(scheme, "spec")][1]


def delivery_status(status: pb.DeliveryStatus) -> str:
    return DELIVERY_STATUS_NAMES.get(status, "Unknown")


def attempt_error(a: pb.Attempt) -> str:
    """What went wrong with an attempt, in words ("" when it succeeded)."""
    if a.error == pb.ATTEMPT_ERROR_NONE and (a.succeeded or not a.status_code):
        return ""
    if a.error == pb.ATTEMPT_ERROR_HTTP_STATUS:
        kind = "not retried (4xx)" if 400 <= a.status_code < 500 else "retried on the schedule"
        return a.error_detail or f"The receiver answered HTTP {a.status_code}: {kind}."
    return a.error_detail or ERROR_NAMES.get(a.error, "Failed")


def next_attempt(a: object) -> object | None:
    """When a pending delivery's next attempt is due, if the service says (Attempt.next_attempt_at,
    a field newer webhooks services send)."""
    at = getattr(a, "next_attempt_at", None)
    return at if at is not None and moment(at) else None


@dataclass(frozen=True)
class SentRequest:
    """What a delivery POSTed, as the page shows it: the body as text (bytes that are not UTF-8
    shown as replacement characters), its size, and the headers named by the service."""

    body: str
    body_size: int
    body_shown: int
    body_truncated: bool
    headers: tuple[pb.SentHeader, ...]


def sent_request(sent: pb.SentRequest) -> SentRequest:
    # A cut at the 64 KiB bound can split a character: shown as one replacement character.
    return SentRequest(sent.body.decode("utf-8", errors="replace"), sent.body_size, len(sent.body),
                       sent.body_truncated, tuple(sent.headers))


def types_label(types: Iterable[str], names: dict[str, str]) -> str:
    chosen = list(types)
    if ALL_TYPES in chosen:
        return "All current and future types"
    return ", ".join(names.get(t, t) for t in chosen)


@dataclass(frozen=True)
class TypeChoice:
    id: str
    name: str
    checked: bool


@dataclass(frozen=True)
class TypeGroup:
    category: str
    choices: tuple[TypeChoice, ...]


def type_groups(types: Iterable[pb.ActivityType], chosen: Iterable[str]) -> list[TypeGroup]:
    """The catalogue by the spec's categories, in its order, with what is chosen ticked."""
    picked = set(chosen)
    groups: dict[str, list[TypeChoice]] = {}
    for t in types:
        if t.id == ALL_TYPES:
            continue
        groups.setdefault(t.category, []).append(TypeChoice(t.id, t.name, t.id in picked))
    return [TypeGroup(category, tuple(choices)) for category, choices in groups.items()]
