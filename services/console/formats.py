"""How values read on a page, for every area: times, counts, durations, and the times typed
into a filter. Presentation only."""

from __future__ import annotations

import datetime as dt
import re

from google.protobuf.timestamp_pb2 import Timestamp

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?")


def moment(ts: object) -> dt.datetime | None:
    """A protobuf Timestamp as an aware UTC datetime, None when unset."""
    seconds, nanos = getattr(ts, "seconds", 0), getattr(ts, "nanos", 0)
    if not seconds and not nanos:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc) + dt.timedelta(microseconds=nanos // 1000)


def when_seconds(ts: object) -> str:
    """`2026-04-01 09:30:12 UTC`, or "" when unset."""
    at = moment(ts)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""


def when_ms(ts: object) -> str:
    """`2026-04-01 09:30:12.345`, UTC, or "" when unset (the log grid's timestamp)."""
    at = moment(ts)
    return at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}" if at else ""


def iso(ts: object) -> str:
    """ISO 8601 with milliseconds and `Z`, as `trellis … --json` and the exports write times."""
    at = moment(ts)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z") if at else ""


def plural(count: int, word: str, words: str = "") -> str:
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def millis(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


class BadTime(ValueError):
    """A time typed into a filter that is not one."""


def parse_time(text: str, *, end_of_day: bool = False) -> dt.datetime | None:
    """A filter's time: `2026-04-01` (UTC midnight; with `end_of_day` the midnight after, so a
    date range includes its last day) or `2026-04-01T09:30` (UTC, as a datetime-local field
    sends it). None when empty; BadTime when it is not a time."""
    text = text.strip()
    if not text:
        return None
    try:
        if _DATE.fullmatch(text):
            day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
            return day + dt.timedelta(days=1) if end_of_day else day
        if _DATETIME.fullmatch(text):
            return dt.datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        pass
    raise BadTime(f"{text[:40]!r} is not a date: use YYYY-MM-DD (UTC), e.g. 2026-04-01.")


def timestamp(when: dt.datetime | None) -> Timestamp | None:
    if when is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts
