"""Prometheus metrics of the console, in a registry of its own (docs/operators.md "Observability"):

- `trellis_console_requests_total{route, method, status}` and
  `trellis_console_request_duration_seconds{route}`: pages answered, by route template;
- `trellis_console_sign_ins_total{method, outcome}`: sign-ins completed or refused.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from services.kit.metrics import LATENCY_BUCKETS


class ConsoleMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("trellis_console_requests", "Console requests answered, by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("trellis_console_request_duration_seconds", "Time to answer a console request, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sign_ins = Counter("trellis_console_sign_ins", "Sign-ins, by method (oidc, local) and outcome",
                                ["method", "outcome"], registry=self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    async def render(self) -> bytes:
        return generate_latest(self.registry)
