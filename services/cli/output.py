"""How the CLI prints: aligned tables and key/value blocks for people, JSON for scripts.

Every JSON document is an object with named keys (`{"integration": …}`, `{"integrations": […]}`),
so later fields can be added without breaking a consumer. Enum values print as short lowercase
names (`active`), timestamps as ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from services.contracts.trellis.registry.v1 import registry_pb2
from services.kit.prototime import rfc3339

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from google.protobuf.timestamp_pb2 import Timestamp

    from services.contracts.trellis.identity.v1 import identity_pb2

STATUS_PREFIX = "INTEGRATION_STATUS_"
STATUS_NAMES = tuple(
    name.removeprefix(STATUS_PREFIX).lower()
    for name in registry_pb2.IntegrationStatus.keys()
    if name != f"{STATUS_PREFIX}UNSPECIFIED"
)
_ENUM_FIELDS = {"status", "from_status", "to_status"}
SETUP_STATUS_PREFIX = "SETUP_REQUEST_STATUS_"
_ENUM_PREFIXES = (STATUS_PREFIX, SETUP_STATUS_PREFIX)

CREDENTIALS_WARNING = (
    "warning: these credentials are shown only now and cannot be retrieved again. "
    "Store them in a secrets manager now."
)


# --- values ---------------------------------------------------------------------------------

def status_label(status: int) -> str:
    """`INTEGRATION_STATUS_ACTIVE` -> `Active` (the spec's wording)."""
    if status == registry_pb2.INTEGRATION_STATUS_UNSPECIFIED:
        return "-"
    name: str = registry_pb2.IntegrationStatus.Name(status)
    return name.removeprefix(STATUS_PREFIX).capitalize()


def status_value(name: str) -> registry_pb2.IntegrationStatus:
    """`active` (any case) -> the IntegrationStatus enum value; ValueError names the choices."""
    try:
        value: registry_pb2.IntegrationStatus = registry_pb2.IntegrationStatus.Value(STATUS_PREFIX + name.strip().upper())
        return value
    except ValueError:
        raise ValueError(f"unknown status {name!r}; choose from {', '.join(STATUS_NAMES)}") from None


def plural(count: int, singular: str, plural_form: str = "") -> str:
    """`1 integration`, `2 integrations`, `1,000 requests` (plural_form for irregular words)."""
    return f"{count:,} {singular if count == 1 else plural_form or singular + 's'}"


def timestamp(ts: Timestamp) -> str:
    """ISO 8601 UTC to the second; empty when the timestamp was never set."""
    return rfc3339(ts)


def message_dict(message: Message) -> dict[str, Any]:
    """A proto message as plain JSON data: proto field names, int64 as numbers, short enums."""
    from google.protobuf import json_format  # only --json needs it

    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    short: dict[str, Any] = _short_enums(data)
    return short


def _short_enum(name: str) -> str:
    for prefix in _ENUM_PREFIXES:
        if name.startswith(prefix):
            return name.removeprefix(prefix).lower()
    return name.lower()


def _short_enums(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (_short_enum(v) if k in _ENUM_FIELDS and isinstance(v, str) else _short_enums(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_short_enums(v) for v in value]
    return value


# --- layouts --------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns aligned to their widest cell; the last column is not padded."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, object]], indent: str = "") -> str:
    """`label  value` lines with the values aligned."""
    items = [(label, "" if value is None else str(value)) for label, value in pairs]
    width = max((len(label) for label, _ in items), default=0)
    return "\n".join(f"{indent}{label.ljust(width)}  {value}".rstrip() for label, value in items)


def print_json(document: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(document, out, indent=2, sort_keys=False)
    out.write("\n")


# --- Trellis objects ------------------------------------------------------------------------

def _joined(values: Iterable[str], empty: str = "-") -> str:
    values = list(values)
    return ", ".join(values) if values else empty


INTEGRATION_HEADERS = ("ID", "NAME", "VENDOR", "STATUS", "OWNER", "SCOPES", "CREATED")


def integration_row(i: registry_pb2.Integration) -> tuple[str, ...]:
    return (i.id, i.name, i.vendor_id, status_label(i.status), i.owner, _joined(i.scopes), timestamp(i.created_at))


def integration_details(i: registry_pb2.Integration) -> str:
    """The detail view of one integration (no secret: only the API key prefix)."""
    sensitive = set(i.sensitive_scopes)
    scopes = [f"{s} (sensitive)" if s in sensitive else s for s in i.scopes]
    pairs: list[tuple[str, object]] = [
        ("ID", i.id),
        ("Name", i.name),
        ("Vendor", i.vendor_id),
        ("Status", status_label(i.status)),
        ("Description", i.description),
        ("Owner", i.owner),
        ("Scopes", _joined(scopes)),
        ("Rate limit", f"{i.rate_limit_per_minute} requests/minute"),
        ("Daily quota", i.daily_quota or "none"),
        ("IP allowlist", _joined(i.ip_allowlist, empty="all IPs allowed")),
        ("Requested by", i.requested_by),
        ("Approved by", i.approved_by or "-"),
    ]
    if i.suspended_by:
        pairs += [("Suspended by", i.suspended_by), ("Suspension reason", i.suspension_reason)]
    pairs += [
        ("API key prefix", i.api_key_prefix or "-"),
        ("Client ID", i.client_id or "-"),
        ("Created", timestamp(i.created_at)),
        ("Updated", timestamp(i.updated_at)),
        ("Activated", timestamp(i.activated_at) or "-"),
        ("Credentials issued", timestamp(i.credentials_issued_at) or "-"),
        ("Version", i.version),
    ]
    return fields(pairs)


HISTORY_HEADERS = ("WHEN", "ACTION", "BY", "FROM", "TO", "REASON", "CHANGED")
# Fields that change with every write or with the lifecycle action itself (which the row
# already names); CHANGED lists the rest, the settings an administrator changed.
_IMPLIED = {
    "updated_at", "version", "status", "approved_by", "activated_at", "credentials_issued_at",
    "suspended_by", "suspension_reason", "api_key_prefix", "client_id",
}


def history_row(e: registry_pb2.HistoryEntry) -> tuple[str, ...]:
    return (timestamp(e.at), e.action, e.actor_id, status_label(e.from_status), status_label(e.to_status),
            e.reason, _joined(changed_fields(e.before_json, e.after_json), empty=""))


def changed_fields(before_json: str, after_json: str) -> list[str]:
    """The fields a history entry changed, from its before/after snapshots (sorted)."""
    try:
        before, after = json.loads(before_json or "{}"), json.loads(after_json or "{}")
    except json.JSONDecodeError:
        return []
    if not isinstance(before, dict) or not isinstance(after, dict) or not before:
        return []
    return sorted(k for k in before.keys() | after.keys() if k not in _IMPLIED and before.get(k) != after.get(k))


def credentials_block(c: identity_pb2.Credentials) -> str:
    """The one showing of plain-text credentials."""
    pairs: list[tuple[str, object]] = [
        ("API key", c.api_key),
        ("Client ID", c.client_id),
        ("Client secret", c.client_secret),
        ("Token URL", c.token_url),
        ("Issuer", c.issuer),
        ("Audience", c.audience),
        ("Scopes", _joined(c.scopes)),
    ]
    return fields([(k, v) for k, v in pairs if v], indent="  ")
