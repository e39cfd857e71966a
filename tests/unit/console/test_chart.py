"""The API log's chart from the logs service's histogram: buckets over the range it covers, a
series per integration (the busiest five and the rest), error rate and 429s per bucket, and
series told apart without colour."""

from __future__ import annotations

import datetime as dt

from services.console.logs.chart import OTHERS, Cell, draw

T0 = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


def test_counts_per_bucket_error_rate_and_429s() -> None:
    cells = [Cell(T0 + dt.timedelta(minutes=5 * b), "SAP", 5, errors=1, limited=1) for b in range(12)]
    cells += [Cell(T0 + dt.timedelta(minutes=5 * b), "Shopify", 3, errors=3) for b in range(0, 12, 2)]
    chart = draw(cells, step=300, start=T0, end=T0 + HOUR)
    assert chart.rows == 78 and chart.step_label == "5 minutes" and len(chart.buckets) == 12
    assert [s.name for s in chart.series] == ["SAP", "Shopify"]
    assert sum(chart.series[0].counts) == 60 and sum(chart.series[1].counts) == 18
    assert sum(chart.totals) == 78 and sum(chart.errors) == 12 + 18 and sum(chart.limited) == 12
    assert chart.rate_of(0) == f"{(1 + 3) / (5 + 3):.0%}"
    assert len(chart.bars) == 12 and all(b.height > 0 for b in chart.bars)
    first, second = chart.series
    assert first.dash != second.dash and first.shape != second.shape and len(first.markers) == 12
    assert first.markers_path == "".join(first.markers) and first.markers[0].startswith("M")
    assert chart.table[0] == ("2026-04-01 09:00", "".join(f'<td class="num">{v}</td>' for v in (5, 3, 8, 4, "50%", 1)))
    assert chart.table[1][1].endswith('<td class="num">20%</td><td class="num">1</td>')


def test_the_busiest_five_have_lines_of_their_own_and_the_rest_one_together() -> None:
    cells = [Cell(T0, f"int {n}", 10 - n) for n in range(8)] + [Cell(T0, OTHERS, 4)]
    chart = draw(cells, step=60, start=T0, end=T0 + dt.timedelta(minutes=1))
    assert [s.name for s in chart.series] == ["int 0", "int 1", "int 2", "int 3", "int 4", OTHERS]
    assert chart.series[-1].total == 5 + 4 + 3 + 4  # the service's own "others" among them
    assert len({(s.dash, s.shape) for s in chart.series}) == 6


def test_the_range_the_histogram_covers_is_drawn_and_nothing_when_empty() -> None:
    chart = draw([Cell(T0, "SAP", 1)], step=3600, start=T0 - 24 * HOUR, end=T0 + 24 * HOUR)
    assert chart.step_label == "1 hour" and len(chart.buckets) == 48 and chart.totals[24] == 1
    assert chart.start == T0 - 24 * HOUR and chart.end == T0 + 24 * HOUR
    assert draw([], step=60, start=None, end=None).empty
    assert draw([Cell(T0, "SAP", 0)], step=60, start=T0, end=T0 + HOUR).empty
