"""The bytes of a request-log export, as a receiver of the file reads them: CSV with its header
and spreadsheet-safe cells, JSON Lines with one object a line in the columns' order."""

from __future__ import annotations

import datetime as dt

from services.logs.domain.model import ApiRequest
from services.logs.entrypoints.grpc_api import render_csv, render_jsonl

WHEN = dt.datetime(2026, 12, 5, 9, 30, 1, 234567, tzinfo=dt.timezone.utc)
RECORDS = [
    ApiRequest("org_a", "req-1", WHEN, "int_1", "GET", "/v1/lots?a=1,2", 200, 12.34567, "203.0.113.9", "", "inventory",
               integration_name='SAP "Procurement"'),
    ApiRequest("org_a", "req-2", WHEN, "int_1", "POST", "=HYPERLINK(x)", 429, 1.0, "2001:db8::1", "rate_limit_exceeded",
               "orders", integration_name="Größe 中", repeats=3),
]


def test_csv_has_its_header_quotes_what_needs_it_and_defuses_formulas() -> None:
    assert render_csv(RECORDS, header=True).decode() == (
        "timestamp,integration_id,integration_name,method,endpoint,status,duration_ms,ip,request_id,error_code,"
        "scope_category\n"
        '2026-12-05T09:30:01.234Z,int_1,"SAP ""Procurement""",GET,"/v1/lots?a=1,2",200,12.346,203.0.113.9,req-1,,'
        "inventory\n"
        "2026-12-05T09:30:01.234Z,int_1,Größe 中,POST,'=HYPERLINK(x),429,1.0,2001:db8::1,req-2,rate_limit_exceeded,"
        "orders\n"
    )
    assert render_csv(RECORDS[1:], header=False, platform=True).decode() == (
        "2026-12-05T09:30:01.234Z,int_1,Größe 中,POST,'=HYPERLINK(x),429,1.0,2001:db8::1,req-2,rate_limit_exceeded,"
        "orders,3\n"
    )


def test_json_lines_keep_the_columns_order_and_the_text_unescaped() -> None:
    assert render_jsonl(RECORDS[1:]).decode() == (
        '{"timestamp": "2026-12-05T09:30:01.234Z", "integration_id": "int_1", "integration_name": "Größe 中", '
        '"method": "POST", "endpoint": "=HYPERLINK(x)", "status": 429, "duration_ms": 1.0, "ip": "2001:db8::1", '
        '"request_id": "req-2", "error_code": "rate_limit_exceeded", "scope_category": "orders"}\n'
    )
    platform = render_jsonl(RECORDS, platform=True).decode().splitlines()
    assert len(platform) == 2 and platform[0].endswith('"scope_category": "inventory", "repeats": 1}')
    assert platform[1].endswith('"repeats": 3}')
