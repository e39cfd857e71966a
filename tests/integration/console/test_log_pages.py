"""QA > Integration API Logs over HTTP against the real logs service, fed on JetStream as the edge
and the registry feed it: the nine columns newest first, each filter and all four combined,
keyset pages, the Request ID search, exports as CSV and JSON Lines, the chart, bad input, and
who may see the page."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re
import secrets

from nats.js import JetStreamContext

from tests.integration.logs.conftest import publish_batch, publish_integration, request_record
from tests.support.console import ConsoleUser, new_org
from tests.support.waiting import eventually

COLUMNS = ("Timestamp", "Integration", "Method", "Endpoint", "Status", "Duration", "IP Address", "Request ID", "Error")
ROW = 'data-testid="log-row"'


def new_integration() -> str:
    return f"int_{secrets.token_hex(8)}"


async def traffic(js: JetStreamContext, org: str, now: dt.datetime) -> tuple[str, str]:
    """Two integrations' requests: 40 of one (30 ok, 10 rate limited, the last 3 days ago), 25 of the
    other (5 of them 403s on /orders); their ids."""
    sap, shop = new_integration(), new_integration()
    await publish_integration(js, org=org, integration=sap, version=1, name="SAP Procurement Sync")
    await publish_integration(js, org=org, integration=shop, version=1, name="Shopify <Store>")
    records = []
    for i in range(40):
        limited = i % 4 == 3
        records.append(request_record(
            org=org, request_id=f"{org}-sap-{i:02d}", when=now - dt.timedelta(minutes=i) - dt.timedelta(days=3 if i == 39 else 0),
            integration=sap, endpoint=f"/v1/inventory/lots/{i}", status=429 if limited else 200,
            error="rate_limit_exceeded" if limited else ""))
    for i in range(25):
        refused = i < 5
        records.append(request_record(
            org=org, request_id=f"{org}-shop-{i:02d}", when=now - dt.timedelta(minutes=i, seconds=30), integration=shop,
            method="POST" if refused else "GET", endpoint="/v1/orders" if refused else "/v1/inventory/lots",
            status=403 if refused else 200, error="insufficient_scope" if refused else "", ip="198.51.100.7"))
    await publish_batch(js, records, batch_id=f"{org}-batch")
    return sap, shop


async def rows(user: ConsoleUser, query: str = "") -> list[str]:
    page = await user.page("/logs" + (f"?{query}" if query else ""))
    return re.findall(r'data-testid="log-request-id">([^<]+)<', page)


async def signed_in_with_traffic(browser, js: JetStreamContext, role: str = "qa") -> tuple[ConsoleUser, str, str, str]:
    org = new_org()
    user = browser()
    await user.sign_in("quinn", org, role=role)
    sap, shop = await traffic(js, org, dt.datetime.now(dt.timezone.utc))

    async def arrived() -> bool:
        page = await user.page(f"/logs?integration={shop}")
        return page.count(ROW) == 25 and "Shopify &lt;Store&gt;" in page

    await eventually(arrived, timeout=20, what="the records and the integrations' names in the logs service")
    return user, org, sap, shop


async def test_the_grid_shows_the_nine_columns_newest_first_in_keyset_pages(browser, logs_service, js) -> None:
    quinn, org, sap, _ = await signed_in_with_traffic(browser, js)
    page = await quinn.page("/logs")
    assert re.findall(r'<th scope="col">([^<]+)</th>', page)[:9] == list(COLUMNS)
    assert page.count(ROW) == 50
    times = re.findall(r'<time datetime="([^"]+)"', page)
    assert times == sorted(times, reverse=True)
    assert "SAP Procurement Sync" in page and "Shopify &lt;Store&gt;" in page and "<Store>" not in page
    assert "rate_limit_exceeded" in page and "198.51.100.7" in page and ">429<" in page
    older = re.search(r'href="(/logs\?page=[^"]+)"', page)
    assert older
    second = await quinn.page(html.unescape(older.group(1)))
    assert second.count(ROW) == 15 and "Newest" in second and 'data-testid="older"' not in second
    ids = re.findall(r'data-testid="log-request-id">([^<]+)<', page + second)
    assert len(ids) == len(set(ids)) == 65


async def test_each_filter_narrows_the_grid_and_they_combine(browser, logs_service, js) -> None:
    quinn, org, sap, shop = await signed_in_with_traffic(browser, js)
    today = dt.datetime.now(dt.timezone.utc).date()
    assert len(await rows(quinn, f"integration={sap}")) == 40
    assert len(await rows(quinn, "status=error")) == 15
    assert len(await rows(quinn, "status=429")) == 10
    assert len(await rows(quinn, "status=4xx")) == 15
    assert len(await rows(quinn, "status=success")) == 50  # the first page of 50 successes
    assert len(await rows(quinn, "endpoint=/v1/orders")) == 5
    assert len(await rows(quinn, f"since={today - dt.timedelta(days=4)}&until={today - dt.timedelta(days=2)}")) == 1
    assert len(await rows(quinn, f"since={today}&until={today}")) >= 50  # minutes ago; midnight may split them
    combined = await rows(quinn, f"integration={sap}&status=429&endpoint=lots/3&since={today - dt.timedelta(days=1)}")
    # lots/3, /31 and /35 are rate limited (every fourth), lots/39 is three days old.
    assert sorted(combined) == [f"{org}-sap-03", f"{org}-sap-31", f"{org}-sap-35"]
    page = await quinn.page(f"/logs?integration={shop}&status=error")
    assert page.count(ROW) == 5 and "insufficient_scope" in page and "<option value=\"error\" selected>" in page
    # htmx swaps the grid alone, with the same template.
    fragment = await quinn.get("/logs?status=429", headers={"HX-Request": "true"})
    assert fragment.text.count(ROW) == 10 and "<html" not in fragment.text and "/logs/export?status=429" in fragment.text


async def test_a_request_is_found_by_its_request_id(browser, logs_service, js) -> None:
    quinn, org, sap, _ = await signed_in_with_traffic(browser, js)
    found = await quinn.get(f"/logs/requests?request_id={org}-sap-03")
    assert found.status_code == 303 and found.headers["location"] == f"/logs/requests/{org}-sap-03"
    page = await quinn.page(found.headers["location"])
    assert f"{org}-sap-03" in page and ">429<" in page and "rate_limit_exceeded" in page and sap in page
    missing = await quinn.get("/logs/requests/no-such-request")
    assert missing.status_code == 404 and "No request of your organisation has this Request ID" in missing.text


async def test_the_filtered_set_exports_as_csv_and_json_lines(browser, logs_service, js) -> None:
    quinn, org, sap, shop = await signed_in_with_traffic(browser, js)
    answer = await quinn.get(f"/logs/export?format=csv&integration={shop}&status=error")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-type"].startswith("text/csv")
    assert re.fullmatch(r'attachment; filename="api-logs-\d{8}T\d{6}Z\.csv"', answer.headers["content-disposition"])
    table = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(table) == 5 and {r["status"] for r in table} == {"403"} and {r["integration_id"] for r in table} == {shop}
    assert table[0]["integration_name"] == "Shopify <Store>"
    answer = await quinn.get(f"/logs/export?format=jsonl&integration={sap}&status=429")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert len(lines) == 10 and all(line["error_code"] == "rate_limit_exceeded" for line in lines)
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    empty = await quinn.get("/logs/export?format=csv&endpoint=/nothing-like-this")
    assert empty.status_code == 200 and empty.text.startswith("timestamp,") and empty.text.count("\n") == 1
    refused = await quinn.get("/logs/export?format=xml")
    assert refused.status_code == 422 and "nothing was exported" in refused.text


async def test_the_chart_draws_each_integration_the_error_rate_and_the_429s(browser, logs_service, js) -> None:
    quinn, org, sap, shop = await signed_in_with_traffic(browser, js)
    today = dt.datetime.now(dt.timezone.utc).date()
    page = await quinn.page(f"/logs/chart?since={today - dt.timedelta(days=1)}")
    assert "<svg" in page and 'role="img"' in page and page.count('data-testid="chart-series"') == 2
    assert "Shopify &lt;Store&gt;" in page and "<Store>" not in page
    assert "All 64 matching requests from" in page  # the one three days old is outside the range
    assert "the whole filtered range" in page
    legend = re.findall(r'<li class="series series-\d" data-testid="legend-item">.*?<span>([^<]+)</span>', page, re.S)
    assert legend == ["SAP Procurement Sync", "Shopify &lt;Store&gt;"]
    assert "circle markers" in page and "square markers" in page  # told apart without colour
    table = re.search(r'data-testid="chart-table">(.*?)</table>', page, re.S)
    assert table
    cells = re.findall(r'<tr><td class="nowrap">[^<]+</td>((?:<td class="num">[^<]*</td>)+)</tr>', table.group(1))
    numbers = [re.findall(r'<td class="num">([^<]*)</td>', row) for row in cells]
    assert sum(int(n[0]) for n in numbers) == 39 and sum(int(n[1]) for n in numbers) == 25
    assert sum(int(n[3]) for n in numbers) == 14 and sum(int(n[5]) for n in numbers) == 9  # errors, 429s
    assert page.count('class="bar-429"') >= 1
    fragment = await quinn.get(f"/logs/chart?integration={sap}", headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and fragment.text.count('data-testid="chart-series"') == 1
    nothing = await quinn.page("/logs/chart?endpoint=/nothing-like-this")
    assert 'data-testid="chart-empty"' in nothing


async def test_a_date_that_is_not_one_is_shown_beside_its_field_and_kept(browser, logs_service) -> None:
    quinn = browser()
    await quinn.sign_in("quinn", new_org(), role="qa")
    answer = await quinn.get("/logs?since=2026-13-45&endpoint=/lots")
    assert answer.status_code == 422
    assert 'id="since-error"' in answer.text and "is not a date" in answer.text
    assert 'value="2026-13-45"' in answer.text and 'value="/lots"' in answer.text
    answer = await quinn.get("/logs?status=7xx")
    assert answer.status_code == 422 and 'id="status-error"' in answer.text and "7xx" in answer.text
    answer = await quinn.get("/logs?since=2026-04-02&until=2026-04-01")
    assert answer.status_code == 422 and 'id="since-error"' in answer.text


async def test_only_qa_and_administrators_see_the_logs(browser, logs_service) -> None:
    org = new_org()
    admin, qa, nobody = browser(), browser(), browser()
    await admin.sign_in("alice", org)
    await qa.sign_in("quinn", org, role="qa")
    await nobody.sign_in("nora", org, role="none")
    assert (await admin.get("/logs")).status_code == 200
    page = await qa.page("/logs")
    assert 'href="/logs"' in page and 'href="/webhooks"' not in page and 'href="/integrations"' not in page
    for path in ("/logs", "/logs/export?format=csv", "/logs/chart", "/audit", "/review"):
        answer = await nobody.get(path)
        assert answer.status_code == 403, path
        assert "qa_access" in answer.text
    assert 'href="/logs"' not in await nobody.page("/")
