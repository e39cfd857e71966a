"""The API log's chart: buckets over the range, a series per integration (the busiest five and
the rest), error rate and 429s per bucket, and series told apart without colour."""

from __future__ import annotations

import datetime as dt

from services.console.logs.chart import OTHERS, Point, draw

T0 = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.timezone.utc)


def test_counts_per_bucket_error_rate_and_429s() -> None:
    points = [Point(T0 + dt.timedelta(minutes=m), "SAP", 429 if m % 10 == 0 else 200) for m in range(60)]
    points += [Point(T0 + dt.timedelta(minutes=m), "Shopify", 500) for m in range(0, 60, 2)]
    chart = draw(points, truncated=False)
    assert chart.rows == 90 and chart.step_label == "5 minutes" and len(chart.buckets) == 12
    assert [s.name for s in chart.series] == ["SAP", "Shopify"]
    assert sum(chart.series[0].counts) == 60 and sum(chart.series[1].counts) == 30
    assert sum(chart.totals) == 90 and sum(chart.errors) == 36 and sum(chart.limited) == 6
    assert chart.rate_of(0) == f"{(1 + 3) / (5 + 3):.0%}"
    assert len(chart.bars) == 6 and all(b.height > 0 for b in chart.bars)
    first, second = chart.series
    assert first.dash != second.dash and first.shape != second.shape and len(first.markers) == 12


def test_the_busiest_five_have_lines_of_their_own_and_the_rest_one_together() -> None:
    points = [Point(T0, f"int {n}", 200) for n in range(8) for _ in range(10 - n)]
    chart = draw(points, truncated=True)
    assert [s.name for s in chart.series] == ["int 0", "int 1", "int 2", "int 3", "int 4", OTHERS]
    assert chart.series[-1].total == 5 + 4 + 3
    assert len({(s.dash, s.shape) for s in chart.series}) == 6
    assert chart.truncated


def test_the_filters_range_is_drawn_when_given_and_nothing_when_empty() -> None:
    chart = draw([Point(T0, "SAP", 200)], truncated=False, since=T0 - dt.timedelta(days=1), until=T0 + dt.timedelta(days=1))
    assert chart.step_label == "1 hour" and len(chart.buckets) == 48
    assert draw([], truncated=False).empty
