"""The API log's chart, drawn on the server as SVG: requests per integration over time, the
error rate, and the 429s, for every request the filters match over their whole range.

The logs service counts them (its RequestHistogram: per bucket and integration, at most 200
buckets, the busiest integrations each on its own); `draw(cells, ...)` turns those counts into
geometry (numbers and labels only); the
template `logs/_chart.html` writes the SVG elements, escaping every label. Readable without
colour: each integration's line has its own dash pattern and marker shape, named in the legend
beside the same pattern; the error rate and the 429s have panels of their own; and every number
drawn is also in a table under the chart.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

TOP_SERIES = 5
OTHERS = "Other integrations"
# Dash patterns and marker shapes, one per series, so no two series differ by colour alone.
DASHES = ("", "8 4", "2 3", "10 3 2 3", "4 4", "1 6")
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "plus")

WIDTH, LEFT, RIGHT = 880, 64, 16
VOLUME_HEIGHT, RATE_HEIGHT, LIMITED_HEIGHT = 200, 90, 70
TOP, GAP = 20, 42


@dataclass(frozen=True)
class Cell:
    """Requests of one integration in one bucket, as the logs service counted them."""

    at: dt.datetime         # the bucket's start
    integration: str        # the label: name, or id when it has no name
    requests: int
    errors: int = 0
    limited: int = 0


@dataclass(frozen=True)
class Series:
    name: str
    total: int
    counts: tuple[int, ...]
    points: str             # the polyline's "x,y x,y …"
    markers: tuple[str, ...]  # one path per bucket
    markers_path: str       # all of them as one path (one SVG element per series, not one per bucket)
    dash: str
    shape: str
    index: int
    legend_marker: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass
class Chart:
    """Everything `logs/_chart.html` draws."""

    rows: int
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    step_label: str = ""
    buckets: list[dt.datetime] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    limited: list[int] = field(default_factory=list)
    rate_points: str = ""
    rate_markers: str = ""   # one path
    bars: list[Bar] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    volume_ticks: list[Tick] = field(default_factory=list)
    limited_max: int = 0
    width: int = WIDTH
    left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    volume: tuple[int, int] = (TOP, TOP + VOLUME_HEIGHT)
    rate: tuple[int, int] = (0, 0)
    limited_band: tuple[int, int] = (0, 0)
    height: int = 0

    @property
    def empty(self) -> bool:
        return self.rows == 0

    @property
    def table(self) -> list[tuple[str, str]]:
        """The table's rows: the bucket's start, and its numbers (per series, all, errors, error
        rate, 429s) as the cells' HTML. Numbers and a percentage only, so nothing to escape: one
        string per row keeps a 200-bucket table from costing a template call per cell."""
        rows = []
        for i, b in enumerate(self.buckets):
            values = [*(s.counts[i] for s in self.series), self.totals[i], self.errors[i], self.rate_of(i),
                      self.limited[i]]
            rows.append((b.strftime("%Y-%m-%d %H:%M"), "".join(f'<td class="num">{v}</td>' for v in values)))
        return rows

    def rate_of(self, i: int) -> str:
        return f"{self.errors[i] / self.totals[i]:.0%}" if self.totals[i] else "–"


def _step_label(step: int) -> str:
    if step < 3600:
        return f"{step // 60} minute{'s' if step >= 120 else ''}"
    if step < 86400:
        return f"{step // 3600} hour{'s' if step >= 7200 else ''}"
    return f"{step // 86400} day{'s' if step >= 2 * 86400 else ''}"


def _floor(at: dt.datetime, step: int) -> dt.datetime:
    seconds = math.floor(at.timestamp())
    return dt.datetime.fromtimestamp(seconds - seconds % step, dt.timezone.utc)


def _shape_paths(r: float) -> dict[str, str]:
    """Each marker shape as a path relative to its centre (after an absolute `M x,y`)."""
    d, e = 2 * r, r + 1
    return {
        "circle": f"m{-r},0a{r},{r} 0 1,0 {d},0a{r},{r} 0 1,0 {-d},0",
        "square": f"m{-r},{-r}h{d}v{d}h{-d}z",
        "triangle": f"m0,{-e}l{e},{d + 1}l{-2 * e},0z",
        "diamond": f"m0,{-e}l{e},{e}l{-e},{e}l{-e},{-e}z",
        "cross": f"m{-r},{-r}l{d},{d}m0,{-d}l{-d},{d}",
        "plus": f"m{-e},0h{2 * e}m{-e},{-e}v{2 * e}",
    }


_SHAPE_PATHS = {3.5: _shape_paths(3.5), 2.5: _shape_paths(2.5)}


def marker(shape: str, x: float, y: float, r: float = 3.5) -> str:
    """An SVG path for a marker of `shape` centred on (x, y): the centre, then the shape
    relative to it (made once per size), so a chart of 200 buckets formats two numbers a marker."""
    paths = _SHAPE_PATHS.get(r) or _shape_paths(r)
    return f"M{x:.1f},{y:.1f}{paths.get(shape, paths['plus'])}"


def _nice_max(value: int) -> int:
    if value <= 5:
        return max(value, 1)
    magnitude = 10 ** int(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * magnitude:
            return int(factor * magnitude)
    return value


def draw(cells: Iterable[Cell], *, step: int, start: dt.datetime | None, end: dt.datetime | None) -> Chart:
    """The chart of the logs service's histogram: `cells` (in any order) in buckets of `step`
    seconds over [start, end), the range the histogram covers."""
    data = [c for c in cells if c.requests]
    chart = Chart(rows=sum(c.requests for c in data))
    if not data or start is None or end is None or step <= 0:
        return chart
    origin = _floor(start, step)
    count = max(1, math.ceil((end - origin).total_seconds() / step))
    buckets = [origin + dt.timedelta(seconds=step * i) for i in range(count)]

    per: dict[str, list[int]] = {}
    totals, errors, limited = [0] * count, [0] * count, [0] * count
    position = {b: i for i, b in enumerate(buckets)}  # the service's cells start on a bucket
    for c in data:
        i = position.get(c.at)
        if i is None:
            i = min(count - 1, max(0, int((c.at - origin).total_seconds() // step)))
        per.setdefault(c.integration, [0] * count)[i] += c.requests
        totals[i] += c.requests
        errors[i] += c.errors
        limited[i] += c.limited
    # The service's own "other integrations" go with the ones beyond the busiest TOP_SERIES.
    together = per.pop(OTHERS, None)
    ranked = sorted(per.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    shown = ranked[:TOP_SERIES]
    if len(ranked) > TOP_SERIES or together is not None:
        rest = [sum(c[i] for _, c in ranked[TOP_SERIES:]) + (together[i] if together else 0) for i in range(count)]
        shown.append((OTHERS, rest))

    plot_w = WIDTH - LEFT - RIGHT

    def x_of(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / count)

    top = _nice_max(max((max(c) for _, c in shown), default=1))
    v0, v1 = TOP, TOP + VOLUME_HEIGHT

    def y_of(n: int) -> float:
        return v1 - (v1 - v0) * n / top

    series = []
    for index, (name, counts) in enumerate(shown):
        shape, dash = SHAPES[index % len(SHAPES)], DASHES[index % len(DASHES)]
        # Each point's text once, for the line and (with the shape after it) for its marker.
        xy = [f"{x_of(i):.1f},{y_of(n):.1f}" for i, n in enumerate(counts)]
        relative = _SHAPE_PATHS[3.5][shape]
        drawn = tuple(f"M{p}{relative}" for p in xy)
        series.append(Series(name=name, total=sum(counts), counts=tuple(counts), points=" ".join(xy),
                             markers=drawn, markers_path="".join(drawn), dash=dash, shape=shape, index=index,
                             legend_marker=marker(shape, 15, 0)))

    r0 = v1 + GAP
    r1 = r0 + RATE_HEIGHT
    rate_xy = [(x_of(i), r1 - (r1 - r0) * (errors[i] / totals[i])) for i in range(count) if totals[i]]
    l0 = r1 + GAP
    l1 = l0 + LIMITED_HEIGHT
    limited_max = _nice_max(max(limited)) if max(limited) else 1
    bar_w = max(1.0, plot_w / count * 0.6)
    bars = [Bar(x_of(i) - bar_w / 2, l1 - (l1 - l0) * n / limited_max, bar_w, (l1 - l0) * n / limited_max, n)
            for i, n in enumerate(limited) if n]
    every = max(1, math.ceil(count / 8))
    label = "%H:%M" if step < 86400 else "%d %b"
    if step < 86400 and (end - start) > dt.timedelta(days=1):
        label = "%d %b %H:%M"
    chart.start, chart.end, chart.step_label, chart.buckets = start, end, _step_label(step), buckets
    chart.series, chart.totals, chart.errors, chart.limited = series, totals, errors, limited
    chart.rate_points = " ".join(f"{x:.1f},{y:.1f}" for x, y in rate_xy)
    chart.rate_markers = "".join(marker("square", x, y, 2.5) for x, y in rate_xy)
    chart.bars = bars
    chart.x_ticks = [Tick(x_of(i), b.strftime(label)) for i, b in enumerate(buckets) if i % every == 0]
    chart.volume_ticks = [Tick(y_of(n), f"{n:,}") for n in (0, top // 2, top)]
    chart.limited_max = limited_max
    chart.rate, chart.limited_band = (r0, r1), (l0, l1)
    chart.height = l1 + 30
    return chart
