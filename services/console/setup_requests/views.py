"""How setup requests are shown: status names and badges, which buttons a state offers the
platform team, the connection details as a request may show them (secrets only as "given,
hidden"; their values only on the reveal answer), and a refusal's wording with the field's label. Presentation only: the registry
decides every action (a button shown is still refused there when the rules say so).
tests/unit/console/test_setup_views.py holds ACTIONS to the registry's transition table."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.contracts.trellis.registry.v1 import registry_pb2 as pb

STATUS_NAMES: dict[int, str] = {
    pb.SETUP_REQUEST_STATUS_SUBMITTED: "Submitted",
    pb.SETUP_REQUEST_STATUS_IN_PROGRESS: "In progress",
    pb.SETUP_REQUEST_STATUS_CONFIGURED: "Configured",
    pb.SETUP_REQUEST_STATUS_DECLINED: "Declined",
}
# The filter's slugs, as the registry's domain names the states.
STATUS_BY_SLUG = {
    "submitted": pb.SETUP_REQUEST_STATUS_SUBMITTED,
    "in_progress": pb.SETUP_REQUEST_STATUS_IN_PROGRESS,
    "configured": pb.SETUP_REQUEST_STATUS_CONFIGURED,
    "declined": pb.SETUP_REQUEST_STATUS_DECLINED,
}
SLUG_OF: dict[int, str] = {value: slug for slug, value in STATUS_BY_SLUG.items()}

# The platform team's buttons in each state, mirroring the registry's transitions
# (services/registry/domain/setup.py SETUP_TRANSITIONS): start from Submitted, complete from In
# progress, decline from either; Configured and Declined are final.
ACTIONS: dict[int, tuple[str, ...]] = {
    pb.SETUP_REQUEST_STATUS_SUBMITTED: ("start", "decline"),
    pb.SETUP_REQUEST_STATUS_IN_PROGRESS: ("complete", "decline"),
    pb.SETUP_REQUEST_STATUS_CONFIGURED: (),
    pb.SETUP_REQUEST_STATUS_DECLINED: (),
}
HISTORY_ACTIONS = {"submitted": "Submitted", "started": "Started", "configured": "Configured",
                   "declined": "Declined", "secrets_revealed": "Connection secrets read",
                   "secrets_erased": "Connection secrets erased"}


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, "Unknown")


def status_slug(status: int) -> str:
    """The badge's CSS class suffix: submitted, in-progress, configured, declined."""
    return SLUG_OF.get(status, "unknown").replace("_", "-")


def actions(status: int) -> tuple[str, ...]:
    return ACTIONS.get(status, ())


def offers_reveal(request: pb.SetupRequest) -> bool:
    """Whether the platform team's view offers "Reveal connection secrets": the registry opens
    them only while In progress, and only when some were given."""
    return request.status == pb.SETUP_REQUEST_STATUS_IN_PROGRESS and bool(request.secrets_given)


@dataclass(frozen=True)
class Revealed:
    """One secret connection detail on the reveal page: its element id, label and value."""

    id: str
    label: str
    value: str


def revealed(entry: pb.PrebuiltIntegration | None, secrets: Mapping[str, str]) -> list[Revealed]:
    """The secrets the registry opened, in the catalogue's order under their labels (any it
    does not list after them, under their names)."""
    labels = {f.name: f.label for f in entry.fields} if entry is not None else {}
    order = [name for name in labels if name in secrets] + sorted(set(secrets) - set(labels))
    return [Revealed(f"secret-{name}", labels.get(name, name), secrets[name]) for name in order]


def prebuilt_name(catalogue: Iterable[pb.PrebuiltIntegration], prebuilt_id: str) -> str:
    return next((p.name for p in catalogue if p.id == prebuilt_id), prebuilt_id)


@dataclass(frozen=True)
class Detail:
    """One connection detail as a request page shows it: a secret only as given or not."""

    name: str
    label: str
    value: str
    secret: bool
    given: bool


def connection_details(entry: pb.PrebuiltIntegration | None, request: pb.SetupRequest) -> list[Detail]:
    """The catalogue's fields in its order with what the request holds: a plain value as given,
    a secret as given (never its value: the registry never returns one) or not. Without the
    catalogue entry, the plain values under their names."""
    connection: Mapping[str, str] = request.connection
    secrets = set(request.secrets_given)
    if entry is None:
        return [Detail(name, name, value, False, True) for name, value in sorted(connection.items())] + [
            Detail(name, name, "", True, True) for name in request.secrets_given]
    details = []
    for f in entry.fields:
        if f.secret:
            details.append(Detail(f.name, f.label, "", True, f.name in secrets))
        else:
            details.append(Detail(f.name, f.label, connection.get(f.name, ""), False, f.name in connection))
    return details


def connection_field(refusal_field: str) -> str:
    """The connection field a refusal names (`connection.store_url` -> `store_url`), else ""."""
    return refusal_field.removeprefix("connection.") if refusal_field.startswith("connection.") else ""


def in_words(message: str, entry: pb.PrebuiltIntegration | None) -> str:
    """A registry message about `connection.<name>` with the field's label in its place
    ("Connection.store_url must be…" -> "Store URL must be…")."""
    if entry is None:
        return message
    for f in entry.fields:
        matched = re.match(rf"connection\.{re.escape(f.name)}\b", message, re.IGNORECASE)
        if matched:
            return str(f.label) + message[matched.end():]
    return message
