"""The audit trail, for QA and administrators (the logs service decides). Each route reads the
filters from the query, calls the logs service as the signed-in user, renders a template.

    GET  /audit               entries newest first; filters: integration (or any object id), actor,
                              action, date range; paged (?page=)
    GET  /audit/verify        the chain check: "verified: N entries", or the first entry altered,
                              removed or inserted, named
    POST /audit/verify        the same, also proving the chain still reaches an uploaded checkpoint
    GET  /audit/checkpoint    the chain's head now, signed, as a file (`trellis audit checkpoint`'s)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from google.protobuf import json_format
from starlette.datastructures import QueryParams, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console.area import NO_STORE, Area
from services.console.errors import Refusal, Refused
from services.console.formats import BadTime, parse_time, timestamp
from services.console.web import check_csrf, is_htmx, read_form
from services.contracts.trellis.logs.v1 import logs_pb2 as pb

PAGE_SIZE = 50
MAX_CHECKPOINT_BYTES = 16 * 1024
_FIELDS = ("integration", "actor", "action", "since", "until")
# Fields of an entry's snapshots that change with every write: not what an entry is about.
_IMPLIED = {"updated_at", "version"}
# Object types with a page in the console (administrators).
OBJECT_PAGES = {"integration": "/integrations/", "subscription": "/webhooks/"}


@dataclass(frozen=True)
class AuditFilter:
    integration: str = ""    # an integration id, or any object's id
    actor: str = ""
    action: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def read(cls, query: QueryParams) -> "AuditFilter":
        return cls(**{name: str(query.get(name) or "").strip()[:300] for name in _FIELDS})

    @property
    def any(self) -> bool:
        return any(dataclasses.astuple(self))

    def problems(self) -> dict[str, str]:
        found = {}
        for name, end in (("since", False), ("until", True)):
            try:
                parse_time(getattr(self, name), end_of_day=end)
            except BadTime as exc:
                found[name] = str(exc)
        return found

    def query(self, token: str) -> pb.QueryAuditRequest:
        return pb.QueryAuditRequest(object_id=self.integration, actor_id=self.actor, action=self.action,
                                    since=timestamp(parse_time(self.since)),
                                    until=timestamp(parse_time(self.until, end_of_day=True)),
                                    page_size=PAGE_SIZE, page_token=token)

    def params(self, **extra: str) -> str:
        values = {k: v for k, v in dataclasses.asdict(self).items() if v}
        values.update({k: v for k, v in extra.items() if v})
        return urlencode(values)


def changed(entry: pb.AuditEntry) -> list[str]:
    """The fields an entry changed, from its before and after snapshots."""
    try:
        before, after = json.loads(entry.before_json or "{}"), json.loads(entry.after_json or "{}")
    except ValueError:
        return []
    if not isinstance(before, dict) or not isinstance(after, dict) or not before:
        return []
    return sorted(k for k in before.keys() | after.keys() if k not in _IMPLIED and before.get(k) != after.get(k))


def pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text


def checkpoint_document(head: pb.AuditCheckpoint) -> bytes:
    """The file `trellis audit checkpoint --output` writes, for the same head."""
    data = json_format.MessageToDict(head, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for name in ("count", "last_seq"):
        data[name] = int(data.get(name, 0))
    return (json.dumps({"checkpoint": data}, indent=2) + "\n").encode()


class CheckpointUnreadable(ValueError):
    pass


def read_checkpoint(raw: bytes) -> pb.AuditCheckpoint:
    try:
        data = json.loads(raw)
        checkpoint: pb.AuditCheckpoint = json_format.ParseDict(data.get("checkpoint", data), pb.AuditCheckpoint(),
                                                               ignore_unknown_fields=True)
        return checkpoint
    except (ValueError, AttributeError, json_format.ParseError) as exc:
        raise CheckpointUnreadable("This file is not a checkpoint downloaded from this page or written by "
                                   f"`trellis audit checkpoint` ({type(exc).__name__}).") from None


class AuditPages(Area):
    name = "audit"
    home = "/audit"
    home_label = "Back to the audit trail"

    def routes(self) -> list[Route]:
        return [
            Route("/audit", self.entries, methods=["GET"]),
            Route("/audit/verify", self.verify, methods=["GET"]),
            Route("/audit/verify", self.verify_against, methods=["POST"]),
            Route("/audit/checkpoint", self.checkpoint, methods=["GET"]),
        ]

    async def entries(self, request: Request, *, verification: dict[str, Any] | None = None,
                      status: int = 200) -> Response:
        session = await self.auth.require(request)
        filters = AuditFilter.read(request.query_params)
        token = request.query_params.get("page", "")[:500]
        errors = filters.problems()
        entries: list[pb.AuditEntry] = []
        next_page = ""
        if not errors:
            try:
                answer = await self.stub("logs", session).QueryAudit(filters.query(token))
                entries, next_page = list(answer.entries), answer.next_page_token
            except Refused as exc:
                if exc.refusal.kind != "invalid":
                    return self.refused(request, session, exc.refusal, back="/")
                name = {"object_id": "integration", "actor_id": "actor"}.get(exc.refusal.field, exc.refusal.field)
                errors[name if name in _FIELDS else "integration"] = exc.refusal.message
        context = {"filters": filters, "entries": entries, "next_page": next_page, "page": token, "errors": errors,
                   "verification": verification, "changed": changed, "pretty": pretty, "object_pages": OBJECT_PAGES}
        fragment = "audit/_entries.html" if is_htmx(request) and verification is None else None
        return self.page(request, "audit/list.html", session, context, fragment=fragment,
                         status=422 if errors else status)

    async def _verify(self, request: Request, checkpoint: pb.AuditCheckpoint | None) -> Response:
        session = await self.auth.require(request)
        try:
            ask = pb.VerifyAuditRequest()
            if checkpoint is not None:
                ask.checkpoint.CopyFrom(checkpoint)
            answer = await self.stub("logs", session).VerifyAudit(ask)
        except Refused as exc:
            if exc.refusal.kind == "invalid":
                return await self._shown(request, {"refusal": exc.refusal}, status=exc.refusal.status)
            return self.refused(request, session, exc.refusal)
        return await self._shown(request, {"result": answer, "against": checkpoint})

    async def _shown(self, request: Request, verification: dict[str, Any], status: int = 200) -> Response:
        if is_htmx(request):
            session = await self.auth.require(request)
            return self.page(request, "audit/list.html", session, {"verification": verification},
                             fragment="audit/_chain.html", status=status)
        return await self.entries(request, verification=verification, status=status)

    async def verify(self, request: Request) -> Response:
        return await self._verify(request, None)

    async def verify_against(self, request: Request) -> Response:
        session = await self.auth.require(request)
        form = await read_form(request, files=1)
        check_csrf(request, form, session)
        upload = form.get("checkpoint")
        raw = b""
        if isinstance(upload, UploadFile):
            raw = await upload.read(MAX_CHECKPOINT_BYTES + 1)
        elif isinstance(upload, str):
            raw = upload.encode()
        if not raw.strip() or len(raw) > MAX_CHECKPOINT_BYTES:
            return await self._shown(request, {"refusal": Refusal(
                "invalid", "No checkpoint", "Choose a checkpoint file (a few hundred bytes, from Download signed "
                "checkpoint); nothing was verified.", 422)}, status=422)
        try:
            checkpoint = read_checkpoint(raw)
        except CheckpointUnreadable as exc:
            return await self._shown(request, {"refusal": Refusal("invalid", "Not a checkpoint", str(exc), 422)},
                                     status=422)
        return await self._verify(request, checkpoint)

    async def checkpoint(self, request: Request) -> Response:
        session = await self.auth.require(request)
        try:
            head = await self.stub("logs", session).GetAuditCheckpoint(pb.GetAuditCheckpointRequest())
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return Response(checkpoint_document(head), media_type="application/json", headers={
            **NO_STORE, "Content-Disposition": f'attachment; filename="audit-checkpoint-{stamp}.json"'})
