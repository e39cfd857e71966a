"""QA > Integration API Logs. Each route reads the filters from the query, calls the logs service
as the signed-in user (QA or administrator: the service decides), and renders a template.

    GET /logs                          the grid: nine columns, newest first, keyset-paged (?page=)
    GET /logs/requests?request_id=…    search by Request ID -> /logs/requests/{id}
    GET /logs/requests/{request_id}    one request
    GET /logs/export?format=csv|jsonl  the filtered set, streamed as a download while it is read
    GET /logs/chart                    requests per integration over time, the error rate and the 429s,
                                       over the whole filtered range (the logs service's RequestHistogram)

The four filters (integration, since/until, status, endpoint) combine and every link keeps them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from services.console.area import NO_STORE, Area
from services.console.errors import Refusal, Refused
from services.console.formats import moment
from services.console.logs import chart
from services.console.logs.filters import FIELD_OF, FORMATS, LogFilter, rows_of
from services.console.sessions import Session
from services.console.web import is_htmx
from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.kit.auth import ADMIN_PERMISSION

log = logging.getLogger(__name__)
_EPOCH = dt.datetime.fromtimestamp(0, dt.timezone.utc)

PAGE_SIZE = 50


class LogPages(Area):
    name = "logs"
    home = "/logs"
    home_label = "Back to the API logs"

    def routes(self) -> list[Route]:
        return [
            Route("/logs", self.grid, methods=["GET"]),
            Route("/logs/requests", self.search, methods=["GET"]),
            Route("/logs/requests/{request_id:path}", self.one, methods=["GET"]),
            Route("/logs/export", self.export, methods=["GET"]),
            Route("/logs/chart", self.chart, methods=["GET"]),
        ]

    async def _integrations(self, request: Request, session: Session) -> list[tuple[str, str]]:
        """(id, name) of the organisation's integrations for the filter, when this user may list
        them (administrators; a QA user picks from the integrations on the page instead) and the
        page shows the filter (an htmx update replaces the grid only)."""
        if not session.can(ADMIN_PERMISSION) or is_htmx(request):
            return []
        try:
            answer = await self.stub("registry", session).ListIntegrations(rpb.ListIntegrationsRequest(page_size=500))
        except Refused:
            return []
        return sorted(((i.id, i.name) for i in answer.integrations), key=lambda pair: pair[1].lower())

    # --- the grid ---------------------------------------------------------------------------

    async def grid(self, request: Request) -> Response:
        session = await self.auth.require(request)
        filters = LogFilter.read(request.query_params)
        token = request.query_params.get("page", "")[:1000]
        errors = filters.problems()
        refusal: Refusal | None = None
        records: list[pb.RequestRecord] = []
        next_page = ""
        integrations: list[tuple[str, str]] = []
        if errors:
            integrations = await self._integrations(request, session)
        else:
            try:
                page, integrations = await asyncio.gather(
                    self.stub("logs", session).QueryRequests(filters.query(page_size=PAGE_SIZE, page_token=token)),
                    self._integrations(request, session))
                records, next_page = list(page.records), page.next_page_token
            except Refused as exc:
                if exc.refusal.kind != "invalid":
                    return self.refused(request, session, exc.refusal, back="/")
                refusal = exc.refusal
                field = FIELD_OF.get(exc.refusal.field, "")
                if field:
                    errors[field] = exc.refusal.message
                integrations = await self._integrations(request, session)
        known = dict(integrations)
        for r in records:
            known.setdefault(r.integration_id, r.integration_name or r.integration_id)
        if filters.integration and filters.integration not in known:
            known[filters.integration] = filters.integration
        context = {"filters": filters, "rows": rows_of(records, filters), "next_page": next_page, "page": token, "errors": errors,
                   "refusal": refusal if refusal and not errors else None, "integrations": known,
                   "formats": FORMATS}
        fragment = "logs/_grid.html" if is_htmx(request) else None
        return self.page(request, "logs/list.html", session, context, fragment=fragment,
                         status=422 if errors else 200)

    # --- one request ------------------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        """The Request ID search box: straight to that request's page."""
        await self.auth.require(request)
        request_id = request.query_params.get("request_id", "").strip()[:200]
        if not request_id:
            return RedirectResponse("/logs", status_code=303)
        return RedirectResponse("/logs/requests/" + quote(request_id, safe=""), status_code=303)

    async def one(self, request: Request) -> Response:
        session = await self.auth.require(request)
        request_id = request.path_params["request_id"]
        try:
            record = await self.stub("logs", session).GetRequest(pb.GetRequestRequest(request_id=request_id))
        except Refused as exc:
            if exc.refusal.kind == "not_found":
                return self.render.error(request, "Request not found", "No request of your organisation has this "
                                         "Request ID. Check it against the X-Request-ID response header; a request "
                                         "of another organisation is never shown.", status=404, session=session,
                                         back="/logs", back_label="Back to the API logs")
            return self.refused(request, session, exc.refusal)
        return self.page(request, "logs/request.html", session, {"r": record})

    # --- export -----------------------------------------------------------------------------

    async def export(self, request: Request) -> Response:
        """The filtered set as CSV or JSON Lines, passed on chunk by chunk as the logs service
        streams it: the console holds one chunk at a time, whatever the size of the set. A
        refusal before the first chunk is a page; a failure after it cuts the download short
        (the browser shows it as failed, never as a whole file)."""
        session = await self.auth.require(request)
        filters = LogFilter.read(request.query_params)
        format_ = request.query_params.get("format", "csv")
        if format_ not in FORMATS or filters.problems():
            return self.render.error(request, "Export refused", "Choose CSV or JSON Lines, and dates as YYYY-MM-DD; "
                                     "nothing was exported.", status=422, session=session, back="/logs?" + filters.params(),
                                     back_label="Back to the API logs")
        stream = self.stub("logs", session).stream("ExportRequests", filters.export(format_))
        try:
            first = await anext(stream)
        except Refused as exc:
            await stream.aclose()
            return self.refused(request, session, exc.refusal, back="/logs?" + filters.params())
        except StopAsyncIteration:
            first = pb.ExportChunk()

        async def body() -> AsyncIterator[bytes]:
            try:
                yield first.data
                async for chunk in stream:
                    yield chunk.data
            except Refused as exc:
                log.warning("API log export cut short: %s", exc.refusal.message)
                raise
            finally:
                await stream.aclose()

        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(body(), media_type=FORMATS[format_][1], headers={
            **NO_STORE, "Content-Disposition": f'attachment; filename="api-logs-{stamp}.{format_}"',
            "X-Total-Rows": str(first.total_rows)})

    # --- chart ------------------------------------------------------------------------------

    async def chart(self, request: Request) -> Response:
        session = await self.auth.require(request)
        filters = LogFilter.read(request.query_params)
        problems = filters.problems()
        if problems:
            return self.render.error(request, "No chart", " ".join(problems.values()), status=422, session=session,
                                     back="/logs?" + filters.params(), back_label="Back to the API logs")
        try:
            histogram = await self.stub("logs", session).RequestHistogram(filters.histogram())
        except Refused as exc:
            return self.refused(request, session, exc.refusal, back="/logs?" + filters.params())
        drawn = chart.draw(
            (chart.Cell(moment(c.bucket_start) or _EPOCH, c.integration_name or c.integration_id or "(none)",
                        c.requests, c.errors, c.limited) for c in histogram.cells),
            step=histogram.bucket_seconds, start=moment(histogram.start), end=moment(histogram.end))
        context = {"chart": drawn, "filters": filters, "integrations": histogram.integrations}
        fragment = "logs/_chart.html" if is_htmx(request) else None
        return self.page(request, "logs/chart.html", session, context, fragment=fragment)
