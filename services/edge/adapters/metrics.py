"""Prometheus metrics of one edge process, in a registry of its own (several edges can run in
one test process). Labels are bounded: routes are table prefixes or endpoint names, never
raw paths."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EdgeMetrics:
    """Counters and histograms the edge updates per request, rendered at GET /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter("trellis_edge_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("trellis_edge_request_duration_seconds", "Time to answer a request, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.auth_failures = Counter("trellis_edge_auth_failures", "Partner requests refused before the "
                                     "route, by error code", ["code"], registry=self.registry)
        self.rate_limited = Counter("trellis_edge_rate_limited", "Requests refused by the rate limit or "
                                    "daily quota, by error code", ["code"], registry=self.registry)
        self.upstream_errors = Counter("trellis_edge_upstream_errors", "Upstream failures, by status (502, 504)",
                                       ["status"], registry=self.registry)
        self.apilog_dropped = Gauge("trellis_edge_apilog_dropped", "API log records dropped since start",
                                    registry=self.registry)
        self.jwks_fetches = Gauge("trellis_edge_jwks_fetches", "JWKS documents fetched from identity since start",
                                  registry=self.registry)
        self.apilog_queued = Gauge("trellis_edge_apilog_queued", "API log records waiting to be published",
                                   registry=self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request. The labelled children are looked up once per label set
        (`labels()` costs more than the increment), bounded as the labels are."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def watch(self, *, apilog_dropped: Callable[[], float], apilog_queued: Callable[[], float],
              jwks_fetches: Callable[[], float]) -> None:
        """Gauges read from their owners when /metrics is rendered."""
        self.apilog_dropped.set_function(apilog_dropped)
        self.apilog_queued.set_function(apilog_queued)
        self.jwks_fetches.set_function(jwks_fetches)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """render() for services.kit.metrics.MetricsServer (its own port: TRELLIS_EDGE_METRICS_ADDR)."""
        return self.render()
