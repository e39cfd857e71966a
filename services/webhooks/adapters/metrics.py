"""The webhooks service's own Prometheus series, beside the kit's (services.kit.metrics):

- `trellis_webhooks_deliveries_total{outcome}`: attempts by what they led to: `succeeded`,
  `retry_scheduled` (failed, another attempt is due later) or `failed` (failed for good);
- `trellis_webhooks_delivery_latency_seconds`: from the activity's time (`occurred_at`) to the
  receiver's 2xx answer, for each event delivered (test deliveries excluded);
- `trellis_webhooks_queue_depth`: pending deliveries in the database (all replicas), sampled
  at scrape time;
- `trellis_webhooks_nonconforming_activities_total{type}`: activities from NATS whose `data`
  did not fit their type's schema, stored and delivered all the same (a producer to fix).
  Only catalogue types have schemas, so `type` has at most their 25 values.
- `trellis_webhooks_failing_subscriptions`: subscriptions in the Failing state (every
  organisation), sampled at scrape time: deploy/k8s/base/prometheus-rules.yaml alerts on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

from services.kit.metrics import ServiceMetrics
from services.webhooks.domain.model import DeliveryStatus

# Seconds: a first attempt lands within a second; retries come after 1 min, 5 min, 30 min, 2 h.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)

OUTCOMES = {DeliveryStatus.SUCCEEDED: "succeeded", DeliveryStatus.PENDING: "retry_scheduled",
            DeliveryStatus.FAILED: "failed"}


class WebhookMetrics:
    """Delivery counters and the queue depth gauge, in the service's registry."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        r = metrics.registry
        self._service = metrics
        self.deliveries = Counter("trellis_webhooks_deliveries", "Delivery attempts by outcome (succeeded, "
                                  "retry_scheduled, failed)", ["outcome"], registry=r)
        self.latency = Histogram("trellis_webhooks_delivery_latency_seconds", "Time from an activity to its "
                                 "receiver's 2xx answer", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("trellis_webhooks_queue_depth", "Pending deliveries (all replicas)", registry=r)
        self.failing_subscriptions = Gauge("trellis_webhooks_failing_subscriptions", "Subscriptions in the Failing "
                                           "state (all organisations)", registry=r)
        self._outcomes = {status: self.deliveries.labels(label) for status, label in OUTCOMES.items()}
        self.nonconforming = Counter("trellis_webhooks_nonconforming_activities", "Activities from NATS whose data "
                                     "did not fit their type's schema (delivered all the same)", ["type"], registry=r)

    def nonconforming_activity(self, activity_type: str) -> None:
        self.nonconforming.labels(activity_type).inc()

    def attempted(self, status: DeliveryStatus, *, occurred_at: dt.datetime | None, answered_at: dt.datetime,
                  test: bool) -> None:
        """One attempt's result: `status` is the delivery's status after it."""
        child = self._outcomes.get(status)
        if child is not None:
            child.inc()
        if status is DeliveryStatus.SUCCEEDED and occurred_at is not None and not test:
            self.latency.observe(max(0.0, (answered_at - occurred_at).total_seconds()))

    def watch_queue(self, depth: Callable[[], Awaitable[int]]) -> None:
        async def sample() -> None:
            self.queue_depth.set(await depth())

        self._service.sample("webhooks_queue", sample)

    def watch_failing(self, count: Callable[[], Awaitable[int]]) -> None:
        async def sample() -> None:
            self.failing_subscriptions.set(await count())

        self._service.sample("webhooks_failing", sample)
