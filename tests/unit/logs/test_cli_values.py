"""The logs CLI's own parsing and progress output, without a server."""

from __future__ import annotations

import argparse
import datetime as dt
import io

import pytest

from services.cli.commands.logs import Progress, parse_time

NOW = dt.datetime(2026, 4, 8, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", NOW - dt.timedelta(minutes=30)), ("24h", NOW - dt.timedelta(hours=24)), ("7d", NOW - dt.timedelta(days=7)),
    ("2w", NOW - dt.timedelta(weeks=2)), ("2026-04-01", dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc)),
    ("2026-04-01T09:30Z", dt.datetime(2026, 4, 1, 9, 30, tzinfo=dt.timezone.utc)),
    ("2026-04-01T11:30+02:00", dt.datetime(2026, 4, 1, 9, 30, tzinfo=dt.timezone.utc)),
])
def test_times_are_iso_8601_or_an_age(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, now=NOW) == expected


def test_other_times_are_refused_with_the_accepted_forms() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="24h"):
        parse_time("yesterday")


def test_progress_off_a_terminal_prints_a_line_per_tenth() -> None:
    out = io.StringIO()
    progress = Progress(out, "requests")
    for done in range(0, 1001, 50):
        progress.update(done, 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].endswith("100% 1,000/1,000 requests")
