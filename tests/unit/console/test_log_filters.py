"""The API log's filters as typed: dates read as UTC days (the end of a range included), what is
not a date named, links that keep the filters, and the grid's cells."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.datastructures import QueryParams

from services.console.formats import BadTime, parse_time
from services.console.logs.filters import LogFilter, rows_of
from services.contracts.trellis.logs.v1 import logs_pb2 as pb

UTC = dt.timezone.utc


def test_dates_are_utc_days_and_a_range_includes_its_last_day() -> None:
    assert parse_time("2026-04-01") == dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert parse_time("2026-04-01", end_of_day=True) == dt.datetime(2026, 4, 2, tzinfo=UTC)
    assert parse_time("2026-04-01T09:30") == dt.datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
    assert parse_time("  ") is None
    for bad in ("2026-13-45", "yesterday", "2026-04-01T25:00", "1/4/2026"):
        with pytest.raises(BadTime):
            parse_time(bad)


def test_the_filters_become_one_logs_request_and_links_keep_them() -> None:
    f = LogFilter.read(QueryParams("integration=int_abc&since=2026-04-01&until=2026-04-02&status=429&endpoint=/lots&x=1"))
    request = f.query(page_size=50, page_token="t")
    assert (request.integration_id, request.status, request.endpoint, request.page_token) == ("int_abc", "429", "/lots", "t")
    assert request.since.ToDatetime(tzinfo=UTC) == dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert request.until.ToDatetime(tzinfo=UTC) == dt.datetime(2026, 4, 3, tzinfo=UTC)
    assert f.params(page="p") == "integration=int_abc&since=2026-04-01&until=2026-04-02&status=429&endpoint=%2Flots&page=p"
    assert f.with_(integration="int_x").integration == "int_x" and f.integration == "int_abc"
    assert LogFilter.read(QueryParams("since=nope")).problems() == {"since": "'nope' is not a date: use YYYY-MM-DD (UTC), e.g. 2026-04-01."}
    assert dict(LogFilter(status="418").status_choices())["418"] == "418"


def test_each_row_of_the_grid() -> None:
    at = Timestamp()
    at.FromDatetime(dt.datetime(2026, 4, 1, 9, 30, 12, 345678, tzinfo=UTC))
    [row] = rows_of([pb.RequestRecord(request_id="a b/c", timestamp=at, integration_id="int_1", status=429,
                                      duration_ms=12.34)], LogFilter(status="error"))
    assert (row.at, row.at_iso) == ("2026-04-01 09:30:12.345", "2026-04-01T09:30:12.345Z")
    assert row.request_link == "/logs/requests/a%20b%2Fc" and row.integration == "int_1"
    assert row.integration_link == "/logs?integration=int_1&status=error" and row.status_class == "status-4xx"
    assert row.duration == "12 ms"
