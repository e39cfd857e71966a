"""Observability under test: the edge's and the webhooks tests' fixtures (real services, a real
upstream, a real HTTPS receiver), spans caught in memory, and /metrics scraped over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from services.kit.telemetry import setup_tracing
from tests.integration.edge.conftest import (  # noqa: F401 - fixtures
    actor_private_key_file,
    edge,
    edge_settings,
    example_upstream,
    http,
    provision,
    start_edge,
    upstream,
)
from tests.integration.logs.conftest import logs_runner  # noqa: F401
from tests.integration.webhooks.conftest import (  # noqa: F401
    receiver,
    start_receiver,
    start_webhooks,
    tls,
    webhooks,
)


@pytest.fixture(scope="session")
def _exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    setup_tracing("observability-tests", processor=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Every span finished in this process during the test (the SDK provider installed)."""
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def in_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics on 127.0.0.1:port -> {(sample name, sorted labels): value}."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """A sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
