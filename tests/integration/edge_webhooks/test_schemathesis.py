"""Schemathesis against the edge's own /openapi.json, as a partner would fuzz it: a real edge in
front of real identity, registry and webhooks and the example upstream (every route has an
upstream that is up), with an Active integration's API key and a token from /oauth/token. Not
one answer may be a server error: no 5xx at all, since every upstream is up.

Bounded so it stays well inside `make test`'s time on a 2-core machine: a fixed seed, a few
examples per operation, no shrinking, and a time budget for the whole run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from services.edge.entrypoints.main import EXAMPLE_ROUTES, RunningEdge
from tests.integration.edge.conftest import ProvisionPartner, fetch_token
from tests.integration.edge_webhooks.conftest import Client
from tests.integration.webhooks.conftest import Webhooks

ALL_SCOPES = ["inventory:read", "inventory:write", "orders:read", "orders:write", "reports:read", "reports:execute",
              "compliance:read", "compliance:submit", "webhooks:manage", "activities:read"]
HOOK = "https://hooks.example.test/in"
MAX_EXAMPLES = 12          # per operation and phase
MAX_SECONDS = 45           # the fuzzing phase repeats until this budget is spent (about 2,500 requests)
DEADLINE_SECONDS = 100     # the run's own bound plus start-up: a hang fails this test, not the suite


def _routes_to(upstream: str, path: Path) -> Path:
    """The shipped route table, with the example upstream where this test serves it."""
    path.write_text(EXAMPLE_ROUTES.read_text().replace("http://127.0.0.1:8090", upstream))
    return path


async def test_schemathesis_finds_no_server_error_in_the_edges_openapi(
        start_webhooks: Callable[..., Awaitable[Webhooks]], start_edge: Callable[..., Awaitable[RunningEdge]],
        provision: ProvisionPartner, http: aiohttp.ClientSession, example_upstream: str, tmp_path: Path) -> None:
    # Every endpoint host the fuzzer makes up resolves to loopback (allowed in these tests), so
    # subscriptions get created and a test delivery is refused at once, without asking the
    # machine's resolver about made-up names.
    webhooks = await start_webhooks(dns=lambda host: ["127.0.0.1"])
    edge = await start_edge(edge_routes_file=str(_routes_to(example_upstream, tmp_path / "routes.toml")),
                            webhooks_addr=f"127.0.0.1:{webhooks.service.port}")
    base = f"http://127.0.0.1:{edge.port}"
    partner = await provision(webhooks.org, scopes=ALL_SCOPES, rate_limit_per_minute=10_000)
    token = await fetch_token(http, base, partner)

    # Real ids and usable endpoint URLs, offered to the generator half the time, so requests get
    # past "no such subscription" and "not HTTPS" into the deeper paths.
    client = Client(partner, token, base, http)
    subscriptions, deliveries = [], []
    for n in range(3):
        status, _, created = await client("POST", "/v1/webhooks", json={"endpoint_url": f"{HOOK}/{n}", "activity_types": ["*"]})
        assert status == 201, created
        subscriptions.append(created["id"])
        status, _, tested = await client("POST", f"/v1/webhooks/{created['id']}/test")
        assert status == 200, tested
        deliveries.append(tested["delivery"]["id"])
    (tmp_path / "schemathesis.toml").write_text(
        f"[dictionaries.endpoints]\nvalues = {json.dumps([HOOK, 'https://receiver.example.test:8443/in?x=1'])}\n"
        f"[dictionaries.subscriptions]\nvalues = {json.dumps(subscriptions)}\n"
        f"[dictionaries.deliveries]\nvalues = {json.dumps(deliveries)}\n"
        '[dictionaries.types]\nvalues = ["*", "lot.created", "order.created"]\n'
        "[parameters]\n"
        '"body.endpoint_url" = { dictionary = "endpoints", probability = 0.5 }\n'
        '"body.activity_types[*]" = { dictionary = "types", probability = 0.5 }\n'
        '"path.subscription_id" = { dictionary = "subscriptions", probability = 0.5 }\n'
        '"path.delivery_id" = { dictionary = "deliveries", probability = 0.5 }\n')

    report = tmp_path / "schemathesis.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", f"{base}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS), "--seed", "20261202", "--no-shrink",
        "--workers", "2", "--request-timeout", "15", "--phases", "examples,coverage,fuzzing",
        "--header", f"Authorization: Bearer {token}", "--header", f"X-API-Key: {partner.api_key}",
        "--report", "ndjson", "--report-ndjson-path", str(report), "--output-truncate", "true",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]  # schemathesis lists each server error with a curl to replay it
    statuses = _statuses(report)
    assert len(statuses) > 500 and not any(s >= 500 for s in statuses), sorted(set(statuses))
    assert {200, 400, 404} <= set(statuses), "the run reached the partner routes with valid credentials"


def _statuses(report: Path) -> list[int]:
    """Every status code the run received, from its ndjson event log."""
    found: list[int] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            response = node.get("response")
            if isinstance(response, dict) and isinstance(response.get("status_code"), int):
                found.append(response["status_code"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for line in report.read_text().splitlines():
        if line.strip():
            walk(json.loads(line))
    return found
