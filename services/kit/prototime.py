"""protobuf Timestamps and datetimes, one way everywhere: our datetimes are aware and in UTC
(a naive one is taken as UTC, as `Timestamp.FromDatetime` does), and an unset Timestamp (zero)
means "no time" (None, or "" as text).

A Timestamp a caller sent may lie outside what a datetime holds (years 1 to 9999):
`to_datetime` and `field_datetime` refuse it as InvalidTime naming the field, which a servicer
sends as INVALID_ARGUMENT (not a server error) and an event decoder catches as a ValueError.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from services.kit.errors import InvalidArgument


class InvalidTime(InvalidArgument, ValueError):
    """A Timestamp no datetime can hold."""


def timestamp(when: dt.datetime) -> Timestamp:
    """The Timestamp of a datetime (naive: UTC)."""
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def timestamp_or_none(when: dt.datetime | None) -> Timestamp | None:
    """As `timestamp`, with None for no time (a message field then stays unset)."""
    return None if when is None else timestamp(when)


def now_timestamp() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def is_unset(ts: Timestamp) -> bool:
    return not ts.seconds and not ts.nanos


def to_datetime(ts: Timestamp, name: str = "timestamp") -> dt.datetime:
    """The aware UTC datetime of a Timestamp; InvalidTime (field `name`) when out of range."""
    try:
        value: dt.datetime = ts.ToDatetime(tzinfo=dt.timezone.utc)
        return value
    except (ValueError, OverflowError) as exc:
        raise InvalidTime(f"{name} is not a time between the years 1 and 9999", field=name) from exc


def field_datetime(message: Any, name: str) -> dt.datetime | None:
    """The datetime of a message's Timestamp field `name`, None when the field is not set."""
    if not message.HasField(name):
        return None
    return to_datetime(getattr(message, name), name)


def rfc3339(ts: Timestamp, timespec: str = "seconds") -> str:
    """`2025-01-31T12:00:00Z` (with `timespec` as `datetime.isoformat` takes it); "" when unset."""
    if is_unset(ts):
        return ""
    return to_datetime(ts).isoformat(timespec=timespec).replace("+00:00", "Z")
