"""EXAMPLE ONLY: a tiny stand-in for the platform API behind the Trellis edge, for the
five-minute tour and the edge's tests. It is not part of Trellis and holds made-up data in memory.

It shows what an upstream behind the edge relies on: the edge has already authenticated the
partner, checked scopes and limits, and says who is calling in `X-Trellis-Integration-Id`,
`X-Trellis-Org-Id`, `X-Trellis-Client-Id` and `X-Trellis-Scopes`. The upstream trusts those
headers (so it must be reachable only from the edge: this one listens on loopback) and scopes
every read and write to `X-Trellis-Org-Id`: an id from another organisation, in the path or
anywhere else, finds nothing.

    GET  /v1/inventory/lots            the caller's organisation's lots
    GET  /v1/inventory/lots/{lot_id}   one lot, 404 unless it is the caller's organisation's
    POST /v1/inventory/lots            {"name": ..., "quantity": ...} -> 201 with the new lot
    GET  /v1/orders                    sample orders
    POST /v1/reports                   {"type": ...} -> 202, a queued report
    POST /v1/compliance/reports        {"period": ...} -> 202, a submission
Every answer includes "caller": the identity headers the edge sent.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from typing import Any

from aiohttp import web

IDENTITY_HEADERS = ("X-Trellis-Integration-Id", "X-Trellis-Org-Id", "X-Trellis-Client-Id", "X-Trellis-Scopes", "X-Request-ID")

Lots = dict[str, dict[str, Any]]
LOTS: web.AppKey[defaultdict[str, Lots]] = web.AppKey("lots", defaultdict)
COUNTER: web.AppKey[itertools.count[int]] = web.AppKey("counter", itertools.count)


def caller(request: web.Request) -> dict[str, str]:
    return {name: request.headers.get(name, "") for name in IDENTITY_HEADERS}


def org_of(request: web.Request) -> str:
    org = request.headers.get("X-Trellis-Org-Id", "")
    if not org:
        raise web.HTTPBadRequest(text='{"error": "this example answers only requests from the Trellis edge"}',
                                 content_type="application/json")
    return org


def lots_of(request: web.Request, org: str) -> Lots:
    lots = request.app[LOTS][org]
    if not lots:  # made-up sample lots, different for each organisation
        tag = hashlib.sha256(org.encode()).hexdigest()[:6]
        for n, (strain, grams) in enumerate((("Blue Dream", 1200), ("Northern Lights", 800)), start=1):
            lot_id = f"lot_{tag}_{n}"
            lots[lot_id] = {"id": lot_id, "name": f"{strain} harvest", "quantity_g": grams}
    return lots


async def list_lots(request: web.Request) -> web.Response:
    org = org_of(request)
    return web.json_response({"org_id": org, "lots": list(lots_of(request, org).values()), "caller": caller(request)})


async def get_lot(request: web.Request) -> web.Response:
    org = org_of(request)
    lot = lots_of(request, org).get(request.match_info["lot_id"])
    if lot is None:
        return web.json_response({"error": "not_found", "message": "no such lot in your organisation"}, status=404)
    return web.json_response({"org_id": org, "lot": lot, "caller": caller(request)})


async def create_lot(request: web.Request) -> web.Response:
    org = org_of(request)
    body = await request.json()
    lot_id = f"lot_new_{next(request.app[COUNTER])}"
    lot = {"id": lot_id, "name": str(body.get("name", "unnamed")), "quantity_g": int(body.get("quantity", 0))}
    lots_of(request, org)[lot_id] = lot
    return web.json_response({"org_id": org, "lot": lot, "caller": caller(request)}, status=201)


async def list_orders(request: web.Request) -> web.Response:
    org = org_of(request)
    orders = [{"id": "ord_1001", "status": "shipped", "lines": 3}, {"id": "ord_1002", "status": "open", "lines": 1}]
    return web.json_response({"org_id": org, "orders": orders, "caller": caller(request)})


async def run_report(request: web.Request) -> web.Response:
    org = org_of(request)
    body = await request.json() if request.can_read_body else {}
    return web.json_response({"org_id": org, "report": {"type": body.get("type", "inventory"), "status": "queued"},
                              "caller": caller(request)}, status=202)


async def submit_compliance(request: web.Request) -> web.Response:
    org = org_of(request)
    body = await request.json() if request.can_read_body else {}
    return web.json_response({"org_id": org, "submission": {"period": body.get("period", ""), "status": "received"},
                              "caller": caller(request)}, status=202)


def make_app() -> web.Application:
    app = web.Application()
    app[LOTS] = defaultdict(dict)
    app[COUNTER] = itertools.count(1)
    app.router.add_get("/v1/inventory/lots", list_lots)
    app.router.add_get("/v1/inventory/lots/{lot_id}", get_lot)
    app.router.add_post("/v1/inventory/lots", create_lot)
    app.router.add_get("/v1/orders", list_orders)
    app.router.add_post("/v1/reports", run_report)
    app.router.add_post("/v1/compliance/reports", submit_compliance)
    return app
