"""The quarterly access review (QA and administrators; the logs service decides).

    GET /review?window_days=90          the report: the checklist answered, a line per integration
    GET /review/print?window_days=90    the same as a printable page (no navigation, no forms)
    GET /review/csv?window_days=90      the CSV `trellis review --format csv` writes, as a download
"""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console.area import NO_STORE, Area
from services.console.errors import Refused
from services.console.review import views
from services.console.sessions import Session
from services.contracts.trellis.logs.v1 import logs_pb2 as pb

DEFAULT_WINDOW = 90


def _window(request: Request) -> tuple[int, str]:
    """The usage window asked for, and a message when it is not a number of days from 1 to 366."""
    text = request.query_params.get("window_days", "").strip()
    if not text:
        return DEFAULT_WINDOW, ""
    if text.isdigit() and 1 <= int(text) <= 366:
        return int(text), ""
    return DEFAULT_WINDOW, "The usage window is a whole number of days from 1 to 366; the default of 90 is shown."


class ReviewPages(Area):
    name = "review"
    home = "/review"
    home_label = "Back to the quarterly review"

    def routes(self) -> list[Route]:
        return [
            Route("/review", self.report, methods=["GET"]),
            Route("/review/print", self.printable, methods=["GET"]),
            Route("/review/csv", self.csv, methods=["GET"]),
        ]

    async def _load(self, session: Session, window: int) -> pb.QuarterlyReviewResponse:
        review: pb.QuarterlyReviewResponse = await self.stub("logs", session).QuarterlyReview(
            pb.QuarterlyReviewRequest(window_days=window))
        return review

    async def _page(self, request: Request, template: str) -> Response:
        session = await self.auth.require(request)
        window, problem = _window(request)
        try:
            report = await self._load(session, window)
        except Refused as exc:
            return self.refused(request, session, exc.refusal, back="/")
        return self.page(request, template, session, {
            "report": report, "window": window, "problem": problem, "checklist": views.checklist(report),
            "flag_text": views.FLAG_TEXT, "headroom": views.headroom, "owner_change_text": views.owner_change_text,
            "credential_issue_text": views.credential_issue_text}, status=422 if problem else 200)

    async def report(self, request: Request) -> Response:
        return await self._page(request, "review/report.html")

    async def printable(self, request: Request) -> Response:
        return await self._page(request, "review/print.html")

    async def csv(self, request: Request) -> Response:
        session = await self.auth.require(request)
        window, _ = _window(request)
        try:
            report = await self._load(session, window)
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        day = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
        return Response(views.render_csv(report), media_type="text/csv; charset=utf-8", headers={
            **NO_STORE, "Content-Disposition": f'attachment; filename="access-review-{day}.csv"'})
