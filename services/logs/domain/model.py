"""The logs service's rules, in plain Python: request-log filters and cursors, the audit chain
(HMAC-SHA256 over each entry and the previous entry's MAC), and how a broken chain is named.

The audit chain is one per organisation. Each entry's MAC is
`HMAC(key, previous MAC || "\\n" || canonical JSON of the entry)`, the first entry's previous
MAC being `HMAC(key, "genesis\\n" || org id)`. The entry's position (`seq`, from 1) is part of
what is signed, so removing, inserting or reordering entries breaks the chain exactly there.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from services.kit.errors import InvalidArgument

# The platform log: requests no organisation can be told of (an unknown API key, client or token,
# no credentials at all, a malformed request). Its rows are those with no organisation; an
# actor always has one (services.kit.auth refuses a token without), so no organisation's
# query can reach them (who may read which log: services.logs.application.access).
PLATFORM_LOG = ""

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ENDPOINT_FILTER = 512

# Every error code a request record can carry: the edge's (services/edge/domain/errors.py CODES) and
# its token endpoint's (RFC 6749 section 5.2, services/edge/entrypoints/openapi.py OAUTH_ERRORS). A filter on any other word can only be a typo,
# and answering it with "no requests match" would read as a clean bill of health.
# tests/unit/logs/test_query_filters.py keeps this list a superset of the edge's.
ERROR_CODES = frozenset({
    "missing_credentials", "invalid_api_key", "invalid_token", "token_expired", "credentials_mismatch",
    "integration_inactive", "ip_not_allowed", "insufficient_scope", "not_found", "method_not_allowed", "conflict",
    "invalid_request", "payload_too_large", "request_headers_too_large", "rate_limit_exceeded", "quota_exceeded",
    "upstream_unavailable", "upstream_error", "service_unavailable", "internal_error",
    # refused by the HTTP layer, or the client went away
    "malformed_request", "request_timeout", "too_many_connections", "client_closed_request",
    # the token endpoint
    "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type", "invalid_scope",
    "server_error", "temporarily_unavailable",
})
# The form of the ids the registry gives out (`int_` and lower-case base32): anything else names
# no integration, so it is refused rather than matched against nothing.
_INTEGRATION_ID = re.compile(r"int_[0-9a-z]{1,60}")

# Column sizes; longer values are cut before they are stored (and, for audit, before signing).
LIMITS = {
    "org_id": 200, "request_id": 128, "integration_id": 64, "method": 16, "endpoint": 2048, "ip": 64,
    "error_code": 64, "scope_category": 64, "event_id": 128, "service": 64, "actor_id": 200, "action": 128,
    "object_type": 64, "object_id": 200,
}


def clean(value: str, limit: int | None = None) -> str:
    """A string PostgreSQL can store (no NUL) within its column's size."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:limit] if limit is not None and len(value) > limit else value


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# --- the request log ------------------------------------------------------------------------

@dataclass(frozen=True)
class ApiRequest:
    """One partner request through the edge, as logged; in the platform log (no organisation)
    one row may stand for `repeats` requests of one source with one error code."""

    org_id: str
    request_id: str
    timestamp: dt.datetime
    integration_id: str
    method: str
    endpoint: str
    status: int
    duration_ms: float
    ip: str
    error_code: str
    scope_category: str
    integration_name: str = ""
    repeats: int = 1

    @classmethod
    def normalised(cls, **values: Any) -> "ApiRequest":
        """A record with every text field cleaned and cut to its column."""
        for name, limit in LIMITS.items():
            if name in values:
                values[name] = clean(str(values[name]), limit)
        values["method"] = str(values.get("method", "")).upper()
        return cls(**values)


@dataclass(frozen=True)
class StatusFilter:
    """`success` (2xx/3xx), `error` (>= 400), a class (`4xx`) or an exact code (`429`)."""

    low: int
    high: int

    @property
    def exact(self) -> bool:
        return self.low == self.high

    @classmethod
    def parse(cls, text: str) -> "StatusFilter | None":
        value = text.strip().lower()
        if not value:
            return None
        if value == "success":
            return cls(200, 399)
        if value == "error":
            return cls(400, 599)
        if re.fullmatch(r"[1-5]xx", value):
            base = int(value[0]) * 100
            return cls(base, base + 99)
        if re.fullmatch(r"[1-5][0-9][0-9]", value):
            return cls(int(value), int(value))
        raise InvalidArgument(
            f"status {text!r} must be success, error, a class such as 4xx, or a code such as 429", field="status"
        )


@dataclass(frozen=True)
class RequestFilter:
    """Filters that combine: every one given must match."""

    integration_id: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    status: StatusFilter | None = None
    endpoint: str = ""
    ip: str = ""
    error_code: str = ""

    def __post_init__(self) -> None:
        """Each filter in its stored form (lower-case ids and codes, an address as the edge
        writes it), or InvalidArgument for one that could never match a request."""
        if self.since and self.until and self.since >= self.until:
            raise InvalidArgument("since must be before until", field="since")
        if len(self.endpoint) > MAX_ENDPOINT_FILTER:
            raise InvalidArgument(f"endpoint filter is longer than {MAX_ENDPOINT_FILTER} characters", field="endpoint")
        check_text(self.endpoint, "endpoint")
        object.__setattr__(self, "integration_id", integration_filter(self.integration_id))
        object.__setattr__(self, "ip", ip_filter(self.ip))
        object.__setattr__(self, "error_code", error_code_filter(self.error_code))


def check_text(value: str, name: str, limit: int | None = None) -> str:
    """A text filter the databases can compare: no NUL character, within the column's size."""
    if "\x00" in value:
        raise InvalidArgument(f"{name} must not contain a NUL character", field=name)
    if limit is not None and len(value) > limit:
        raise InvalidArgument(f"{name} is longer than {limit} characters", field=name)
    return value


def integration_filter(text: str) -> str:
    """An integration id as the registry gives them out (`int_…`), lower-cased; "" for none."""
    value = text.strip().lower()
    if value and not _INTEGRATION_ID.fullmatch(value):
        raise InvalidArgument(f"integration {text!r} is not an integration id (int_ and letters and digits)",
                              field="integration_id")
    return value


def ip_filter(text: str) -> str:
    """One IPv4 or IPv6 address, written as the edge records it (2001:DB8::1 -> 2001:db8::1)."""
    value = text.strip()
    if not value:
        return ""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(
            f"ip {text!r} is not an IP address: give one IPv4 or IPv6 address, such as 203.0.113.7 or 2001:db8::7",
            field="ip",
        ) from None
    return str(address)


def error_code_filter(text: str) -> str:
    """One of ERROR_CODES, lower-cased; "" for none."""
    value = text.strip().lower()
    if value and value not in ERROR_CODES:
        raise InvalidArgument(
            f"error code {text!r} is not one a request can carry; codes are: {', '.join(sorted(ERROR_CODES))}",
            field="error_code",
        )
    return value


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after (timestamp, request id), newest first."""

    timestamp: dt.datetime
    request_id: str

    def encode(self) -> str:
        raw = json.dumps([self.timestamp.isoformat(), self.request_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            when, request_id = json.loads(raw)
            timestamp = dt.datetime.fromisoformat(when)
            if timestamp.tzinfo is None or not isinstance(request_id, str):
                raise ValueError("bad cursor fields")
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise InvalidArgument("page_token is not one this service returned", field="page_token") from exc
        return cls(timestamp, request_id)


@dataclass(frozen=True)
class SeqCursor:
    """Where the next page of audit entries starts: before this chain position."""

    seq: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"a{self.seq}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "SeqCursor":
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            if not raw.startswith("a"):
                raise ValueError("not an audit cursor")
            return cls(int(raw[1:]))
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument("page_token is not one this service returned", field="page_token") from exc


# --- the audit chain ------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditRecord:
    """An audit event as it arrives, before it has a place in its organisation's chain."""

    event_id: str
    occurred_at: dt.datetime
    service: str
    org_id: str
    actor_id: str
    action: str
    object_type: str
    object_id: str
    before_json: str
    after_json: str
    reason: str
    request_id: str

    @classmethod
    def normalised(cls, **values: Any) -> "AuditRecord":
        for name, value in values.items():
            if isinstance(value, str):
                values[name] = clean(value, LIMITS.get(name))
        values["occurred_at"] = _micro(values["occurred_at"])
        return cls(**values)


@dataclass(frozen=True)
class AuditEntry:
    """One entry of an organisation's audit chain, with its MAC."""

    seq: int
    event_id: str
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    service: str
    org_id: str
    actor_id: str
    action: str
    object_type: str
    object_id: str
    before_json: str
    after_json: str
    reason: str
    request_id: str
    mac: str = ""


def _micro(when: dt.datetime) -> dt.datetime:
    """UTC, to the microsecond both databases keep."""
    return when.astimezone(dt.timezone.utc)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def canonical(entry: AuditEntry) -> bytes:
    """The bytes an entry's MAC covers: every field but the MAC, as sorted compact JSON."""
    content = {
        "seq": entry.seq, "event_id": entry.event_id, "occurred_at": _iso(entry.occurred_at),
        "recorded_at": _iso(entry.recorded_at), "service": entry.service, "org_id": entry.org_id,
        "actor_id": entry.actor_id, "action": entry.action, "object_type": entry.object_type,
        "object_id": entry.object_id, "before_json": entry.before_json, "after_json": entry.after_json,
        "reason": entry.reason, "request_id": entry.request_id,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def genesis_mac(key: bytes, org_id: str) -> str:
    """The "previous MAC" of an organisation's first entry: binds the chain to its organisation."""
    return hmac.new(key, b"genesis\n" + org_id.encode(), hashlib.sha256).hexdigest()


def entry_mac(key: bytes, previous_mac: str, entry: AuditEntry) -> str:
    return hmac.new(key, previous_mac.encode() + b"\n" + canonical(entry), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """The end of an organisation's chain: how many entries, the last position, its MAC."""

    org_id: str
    count: int
    last_seq: int
    head_mac: str


def append(key: bytes, head: ChainHead, record: AuditRecord, recorded_at: dt.datetime) -> tuple[AuditEntry, ChainHead]:
    """The record as the chain's next entry, and the new head."""
    entry = AuditEntry(
        seq=head.last_seq + 1, recorded_at=_micro(recorded_at), event_id=record.event_id, occurred_at=record.occurred_at,
        service=record.service, org_id=record.org_id, actor_id=record.actor_id, action=record.action,
        object_type=record.object_type, object_id=record.object_id, before_json=record.before_json,
        after_json=record.after_json, reason=record.reason, request_id=record.request_id,
    )
    entry = replace(entry, mac=entry_mac(key, head.head_mac, entry))
    return entry, ChainHead(head.org_id, head.count + 1, entry.seq, entry.mac)


def empty_head(key: bytes, org_id: str) -> ChainHead:
    return ChainHead(org_id, 0, 0, genesis_mac(key, org_id))


@dataclass(frozen=True)
class Checkpoint:
    """A chain head at a moment, signed with the audit key so a forged one is refused."""

    org_id: str
    count: int
    last_seq: int
    head_mac: str
    created_at: dt.datetime
    signature: str = ""

    def _content(self) -> bytes:
        fields = {"org_id": self.org_id, "count": self.count, "last_seq": self.last_seq, "head_mac": self.head_mac,
                  "created_at": _iso(self.created_at)}
        return b"checkpoint\n" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: bytes) -> "Checkpoint":
        return replace(self, signature=hmac.new(key, self._content(), hashlib.sha256).hexdigest())

    def verify_signature(self, key: bytes) -> None:
        want = hmac.new(key, self._content(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, self.signature):
            raise InvalidArgument("the checkpoint's signature does not match: it was altered or made with another key",
                                  field="checkpoint")


class Problem(str, Enum):
    ALTERED = "altered"
    REMOVED = "removed"
    INSERTED = "inserted"
    TRUNCATED = "truncated"


@dataclass(frozen=True)
class Finding:
    """The first place the chain stops proving itself."""

    problem: Problem
    seq: int
    message: str
    event_id: str = ""


@dataclass
class ChainWalker:
    """Walks one organisation's entries in position order and names the first problem.

    `push` each entry in order, then `finish` with the head the database records and, when
    given, a checkpoint kept outside the database. Holds one entry back, because telling an
    altered entry from an inserted one needs a look at the entry after it.
    """

    key: bytes
    org_id: str
    checkpoint: Checkpoint | None = None
    verified: int = 0
    finding: Finding | None = None
    _previous_mac: str = ""
    _expected_seq: int = 1
    _pending: AuditEntry | None = None
    _checkpoint_mac: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._previous_mac = genesis_mac(self.key, self.org_id)

    @property
    def last_mac(self) -> str:
        return self._previous_mac

    @property
    def last_seq(self) -> int:
        return self._expected_seq - 1

    def push(self, entry: AuditEntry) -> bool:
        """Take the next entry; False once a problem was found (stop feeding)."""
        if self.finding is not None:
            return False
        if self._pending is not None:
            self.finding = self._check(self._pending, entry)
        self._pending = entry
        return self.finding is None

    def finish(self, head: ChainHead | None) -> Finding | None:
        if self.finding is None and self._pending is not None:
            self.finding = self._check(self._pending, None, head)
            self._pending = None
        if self.finding is None and head is not None:
            self.finding = self._against_head(head)
        if self.finding is None and self.checkpoint is not None:
            self.finding = self._against_checkpoint(self.checkpoint)
        return self.finding

    def _check(self, entry: AuditEntry, after: AuditEntry | None, head: ChainHead | None = None) -> Finding | None:
        expected = self._expected_seq
        if entry.seq > expected:
            return Finding(Problem.REMOVED, expected, f"entry {expected} was removed: the chain goes from entry "
                                                      f"{expected - 1} straight to entry {entry.seq}")
        if entry.seq < expected:
            return Finding(Problem.INSERTED, entry.seq, f"entry {entry.seq} ({entry.event_id}) was inserted: that "
                                                        f"position is taken already", entry.event_id)
        if hmac.compare_digest(entry_mac(self.key, self._previous_mac, entry), entry.mac):
            self._accept(entry)
            return None
        if after is not None:
            if after.seq == entry.seq + 1 and hmac.compare_digest(entry_mac(self.key, entry.mac, after), after.mac):
                return self._altered(entry)
            if hmac.compare_digest(entry_mac(self.key, self._previous_mac, replace(after, seq=entry.seq)), after.mac):
                return Finding(Problem.INSERTED, entry.seq, f"entry {entry.seq} ({entry.event_id}) was inserted: the "
                                                            f"entry after it continues the chain without it", entry.event_id)
            if hmac.compare_digest(entry_mac(self.key, entry.mac, replace(after, seq=after.seq + 1)), after.mac):
                return Finding(Problem.REMOVED, entry.seq, f"entry {entry.seq} was removed and the entries after it "
                                                           f"renumbered")
        elif head is not None and entry.seq > head.last_seq:
            return Finding(Problem.INSERTED, entry.seq, f"entry {entry.seq} ({entry.event_id}) was inserted past the "
                                                        f"recorded chain head", entry.event_id)
        return self._altered(entry)

    def _altered(self, entry: AuditEntry) -> Finding:
        return Finding(Problem.ALTERED, entry.seq, f"entry {entry.seq} ({entry.event_id}) was altered: its content "
                                                   f"or MAC no longer matches the chain", entry.event_id)

    def _accept(self, entry: AuditEntry) -> None:
        self._previous_mac = entry.mac
        self._expected_seq += 1
        self.verified += 1
        if self.checkpoint is not None and entry.seq == self.checkpoint.last_seq:
            self._checkpoint_mac = entry.mac

    def _against_head(self, head: ChainHead) -> Finding | None:
        if head.last_seq > self.last_seq:
            return Finding(Problem.REMOVED, self.last_seq + 1,
                           f"entries {self.last_seq + 1}..{head.last_seq} were removed: the chain head records "
                           f"{head.last_seq} entries but the trail ends at entry {self.last_seq}")
        if head.last_seq < self.last_seq:
            return Finding(Problem.INSERTED, head.last_seq + 1,
                           f"entries after {head.last_seq} were inserted past the recorded chain head")
        if not hmac.compare_digest(head.head_mac, self._previous_mac) or head.count != self.verified:
            return Finding(Problem.ALTERED, self.last_seq, "the recorded chain head does not match the last entry")
        return None

    def _against_checkpoint(self, checkpoint: Checkpoint) -> Finding | None:
        if checkpoint.last_seq > self.last_seq:
            return Finding(Problem.TRUNCATED, self.last_seq + 1,
                           f"the trail was truncated: the checkpoint of {_iso(checkpoint.created_at)} covers entries up "
                           f"to {checkpoint.last_seq}, the trail now ends at entry {self.last_seq}")
        want = self._checkpoint_mac if checkpoint.last_seq else genesis_mac(self.key, self.org_id)
        if want is None or not hmac.compare_digest(want, checkpoint.head_mac) or checkpoint.count != checkpoint.last_seq:
            return Finding(Problem.ALTERED, checkpoint.last_seq,
                           f"entry {checkpoint.last_seq} is not the one the checkpoint recorded: the trail was rewritten")
        return None


def decode_audit_key(value: str, *, embedded: bool) -> bytes:
    """The audit HMAC key from its setting (base64 of >= 32 bytes).

    The placeholder is refused outside the embedded mode; inside it (no generated key) a fixed
    development key is used, which proves nothing and is never for production.
    """
    if value in ("", "change-me"):
        if not embedded:
            raise ValueError("TRELLIS_AUDIT_HMAC_KEY must be set to base64 of at least 32 random bytes")
        return b"trellis-embedded-development-audit-key"
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("TRELLIS_AUDIT_HMAC_KEY is not valid base64") from exc
    if len(key) < 32:
        raise ValueError(f"TRELLIS_AUDIT_HMAC_KEY must decode to at least 32 bytes, got {len(key)}")
    return key


# --- the request histogram (the console's chart) --------------------------------------------

# Bucket widths (seconds) to choose from, narrowest first; a range too long for 200 of the
# widest takes a whole number of weeks.
HISTOGRAM_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 200
# Integrations with cells of their own; the rest are counted together as OTHER_INTEGRATIONS.
MAX_HISTOGRAM_INTEGRATIONS = 12
OTHER_INTEGRATIONS = "*"


@dataclass(frozen=True)
class HistogramCell:
    """Requests of one integration in one bucket (`bucket_start` a multiple of the width since the epoch)."""

    bucket_start: dt.datetime
    integration_id: str
    requests: int
    errors: int
    limited: int
    integration_name: str = ""


@dataclass(frozen=True)
class Histogram:
    """The cells over [start, end), by bucket then integration; `requests` counts every one."""

    bucket_seconds: int
    start: dt.datetime | None
    end: dt.datetime | None
    cells: tuple[HistogramCell, ...]
    requests: int
    integrations: int


def bucket_floor(when: dt.datetime, step: int) -> dt.datetime:
    seconds = math.floor(when.timestamp())
    return dt.datetime.fromtimestamp(seconds - seconds % step, dt.timezone.utc)


def bucket_count(start: dt.datetime, end: dt.datetime, step: int) -> int:
    """How many buckets of `step` seconds, aligned on the epoch, cover [start, end)."""
    origin = bucket_floor(start, step)
    return max(1, math.ceil((end - origin).total_seconds() / step))


def bucket_width(start: dt.datetime, end: dt.datetime, requested: int = 0) -> int:
    """The width asked for (refused when it needs more than MAX_BUCKETS buckets), or the narrowest
    of HISTOGRAM_STEPS that covers the range in at most MAX_BUCKETS."""
    if requested < 0:
        raise InvalidArgument("bucket_seconds must not be negative", field="bucket_seconds")
    if requested:
        if bucket_count(start, end, requested) > MAX_BUCKETS:
            raise InvalidArgument(
                f"bucket_seconds {requested} needs {bucket_count(start, end, requested):,} buckets for this range; "
                f"at most {MAX_BUCKETS}: choose a wider bucket or 0 to let the service choose", field="bucket_seconds")
        return requested
    for step in HISTOGRAM_STEPS:
        if bucket_count(start, end, step) <= MAX_BUCKETS:
            return step
    week = HISTOGRAM_STEPS[-1]
    step = week * math.ceil((end - start).total_seconds() / week / (MAX_BUCKETS - 1))
    while bucket_count(start, end, step) > MAX_BUCKETS:
        step += week
    return step


def fold_histogram(cells: list[HistogramCell], *, step: int, start: dt.datetime | None, end: dt.datetime | None,
                   keep: int = MAX_HISTOGRAM_INTEGRATIONS) -> Histogram:
    """The histogram with the `keep` busiest integrations on their own and the rest together
    (OTHER_INTEGRATIONS), so its size is at most MAX_BUCKETS x (keep + 1) cells."""
    totals: dict[str, int] = {}
    for c in cells:
        totals[c.integration_id] = totals.get(c.integration_id, 0) + c.requests
    ranked = sorted(totals, key=lambda iid: (-totals[iid], iid))
    kept = set(ranked[:keep])
    merged: dict[tuple[dt.datetime, str], HistogramCell] = {}
    for c in cells:
        if c.integration_id in kept:
            merged[(c.bucket_start, c.integration_id)] = c
            continue
        key = (c.bucket_start, OTHER_INTEGRATIONS)
        was = merged.get(key)
        merged[key] = HistogramCell(c.bucket_start, OTHER_INTEGRATIONS, c.requests + (was.requests if was else 0),
                                    c.errors + (was.errors if was else 0), c.limited + (was.limited if was else 0),
                                    "Other integrations")
    order = {iid: i for i, iid in enumerate(ranked[:keep])}
    ordered = sorted(merged.values(), key=lambda c: (c.bucket_start, order.get(c.integration_id, keep)))
    return Histogram(step, start, end, tuple(ordered), sum(totals.values()), len(totals))
