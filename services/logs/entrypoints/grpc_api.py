"""The `trellis.logs.v1.Logs` servicer: request message -> filter -> handler -> response.

Permissions and organisation scoping are the handlers'; errors are services.kit.errors
classes that the server's error interceptor maps to status codes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator

import grpc

from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.kit.auth import current_actor
from services.kit.errors import InvalidArgument
from services.kit.prototime import field_datetime, timestamp_or_none, to_datetime
from services.logs.application import commands
from services.logs.application.handlers import LogsHandlers
from services.logs.domain.model import (
    ApiRequest,
    AuditEntry,
    Checkpoint,
    Histogram,
    RequestFilter,
    StatusFilter,
)
from services.logs.domain.review import Review

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Logs"].full_name

EXPORT_COLUMNS = ("timestamp", "integration_id", "integration_name", "method", "endpoint", "status", "duration_ms",
                  "ip", "request_id", "error_code", "scope_category")
# The platform log's rows may each stand for many requests: its export says how many.
PLATFORM_EXPORT_COLUMNS = (*EXPORT_COLUMNS, "repeats")
# Spreadsheet programs run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# One encoder for every line of a JSON Lines export (json.dumps with an argument builds one a call).
_JSON_LINE = json.JSONEncoder(ensure_ascii=False)


def request_filter(request: pb.QueryRequestsRequest | pb.ExportRequestsRequest | pb.RequestHistogramRequest) -> RequestFilter:
    return RequestFilter(
        integration_id=request.integration_id.strip(), since=field_datetime(request, "since"),
        until=field_datetime(request, "until"),
        status=StatusFilter.parse(request.status), endpoint=request.endpoint, ip=request.ip.strip(),
        error_code=request.error_code.strip(),
    )


def record_message(r: ApiRequest) -> pb.RequestRecord:
    return pb.RequestRecord(
        request_id=r.request_id, timestamp=timestamp_or_none(r.timestamp), integration_id=r.integration_id,
        integration_name=r.integration_name, method=r.method, endpoint=r.endpoint, status=r.status,
        duration_ms=r.duration_ms, ip=r.ip, error_code=r.error_code, org_id=r.org_id, scope_category=r.scope_category,
        repeats=r.repeats,
    )


def export_values(r: ApiRequest) -> tuple[object, ...]:
    """A record's values in PLATFORM_EXPORT_COLUMNS' order (EXPORT_COLUMNS are its first)."""
    return (r.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"), r.integration_id,
            r.integration_name, r.method, r.endpoint, r.status, round(r.duration_ms, 3), r.ip, r.request_id,
            r.error_code, r.scope_category, r.repeats)


def _csv_safe(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def export_columns(platform: bool) -> tuple[str, ...]:
    """An export's columns: the platform log's also say how many requests a row stands for."""
    return PLATFORM_EXPORT_COLUMNS if platform else EXPORT_COLUMNS


def render_csv(records: list[ApiRequest], *, header: bool, platform: bool = False) -> bytes:
    columns = export_columns(platform)
    width = len(columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows([_csv_safe(v) for v in export_values(r)[:width]] for r in records)
    return out.getvalue().encode()


def render_jsonl(records: list[ApiRequest], *, platform: bool = False) -> bytes:
    columns = export_columns(platform)
    width, encode = len(columns), _JSON_LINE.encode
    return "".join([encode(dict(zip(columns, export_values(r)[:width]))) + "\n" for r in records]).encode()


def histogram_message(h: Histogram) -> pb.RequestHistogramResponse:
    return pb.RequestHistogramResponse(
        bucket_seconds=h.bucket_seconds, start=timestamp_or_none(h.start), end=timestamp_or_none(h.end),
        requests=h.requests, integrations=h.integrations,
        cells=[pb.HistogramCell(bucket_start=timestamp_or_none(c.bucket_start), integration_id=c.integration_id,
                                integration_name=c.integration_name, requests=c.requests, errors=c.errors,
                                limited=c.limited) for c in h.cells],
    )


def audit_message(e: AuditEntry) -> pb.AuditEntry:
    return pb.AuditEntry(
        seq=e.seq, event_id=e.event_id, occurred_at=timestamp_or_none(e.occurred_at),
        recorded_at=timestamp_or_none(e.recorded_at),
        service=e.service, org_id=e.org_id, actor_id=e.actor_id, action=e.action, object_type=e.object_type,
        object_id=e.object_id, before_json=e.before_json, after_json=e.after_json, reason=e.reason,
        request_id=e.request_id, mac=e.mac,
    )


def checkpoint_message(c: Checkpoint) -> pb.AuditCheckpoint:
    return pb.AuditCheckpoint(org_id=c.org_id, count=c.count, last_seq=c.last_seq, head_mac=c.head_mac,
                              created_at=timestamp_or_none(c.created_at), signature=c.signature)


def checkpoint_from(message: pb.AuditCheckpoint) -> Checkpoint:
    return Checkpoint(org_id=message.org_id, count=message.count, last_seq=message.last_seq, head_mac=message.head_mac,
                      created_at=to_datetime(message.created_at, "created_at"), signature=message.signature)


def review_message(r: Review) -> pb.IntegrationReview:
    f = r.facts
    return pb.IntegrationReview(
        integration_id=f.integration_id, name=f.name, status=f.status, owner=f.owner, vendor_id=f.vendor_id,
        granted_scopes=sorted(f.scopes), exercised_scopes=list(r.exercised_scopes), unused_scopes=list(r.unused_scopes),
        last_request_at=timestamp_or_none(r.usage.last_request_at), requests=r.usage.requests, errors=r.usage.errors,
        error_rate=r.error_rate, peak_requests_per_minute=r.usage.peak_per_minute,
        rate_limit_per_minute=f.rate_limit_per_minute, credentials_issued_at=timestamp_or_none(f.credentials_issued_at),
        credential_age_days=-1 if r.credential_age_days is None else r.credential_age_days,
        allowlist_set=bool(f.ip_allowlist), networks=list(r.networks), flags=list(r.flags),
        owner_changes=[pb.OwnerChange(occurred_at=timestamp_or_none(c.occurred_at), actor_id=c.actor_id, before=c.before,
                                      after=c.after) for c in r.trail.owner_changes],
        credentials_issued=[pb.CredentialIssue(occurred_at=timestamp_or_none(c.occurred_at), actor_id=c.actor_id)
                            for c in r.trail.credentials_issued],
    )


class LogsServicer(logs_pb2_grpc.LogsServicer):
    def __init__(self, handlers: LogsHandlers) -> None:
        self._handlers = handlers

    async def QueryRequests(self, request: pb.QueryRequestsRequest, context: grpc.aio.ServicerContext) -> pb.QueryRequestsResponse:
        query = commands.QueryRequests(request_filter(request), page_size=request.page_size,
                                       page_token=request.page_token, platform=request.platform)
        page = await self._handlers.query_requests(current_actor(), query)
        return pb.QueryRequestsResponse(records=[record_message(r) for r in page.records],
                                        next_page_token=page.next_cursor.encode() if page.next_cursor else "")

    async def GetRequest(self, request: pb.GetRequestRequest, context: grpc.aio.ServicerContext) -> pb.RequestRecord:
        query = commands.GetRequest(request.request_id.strip(), platform=request.platform)
        return record_message(await self._handlers.get_request(current_actor(), query))

    async def ExportRequests(self, request: pb.ExportRequestsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ExportChunk]:
        if request.format not in (pb.EXPORT_FORMAT_UNSPECIFIED, pb.EXPORT_FORMAT_CSV, pb.EXPORT_FORMAT_JSONL):
            raise InvalidArgument(f"unknown export format {request.format}: CSV or JSON Lines", field="format")
        jsonl, platform = request.format == pb.EXPORT_FORMAT_JSONL, request.platform
        total, pages = await self._handlers.export_requests(
            current_actor(), commands.ExportRequests(request_filter(request), platform=request.platform))
        first = True
        async for records in pages:
            data = render_jsonl(records, platform=platform) if jsonl else render_csv(records, header=first, platform=platform)
            yield pb.ExportChunk(data=data, rows=len(records), total_rows=total)
            first = False
        if first:  # nothing matched: still a well-formed (empty) file
            yield pb.ExportChunk(data=b"" if jsonl else render_csv([], header=True, platform=platform), rows=0,
                                 total_rows=total)

    async def RequestHistogram(self, request: pb.RequestHistogramRequest,
                               context: grpc.aio.ServicerContext) -> pb.RequestHistogramResponse:
        query = commands.RequestHistogram(request_filter(request), bucket_seconds=request.bucket_seconds,
                                          platform=request.platform)
        return histogram_message(await self._handlers.request_histogram(current_actor(), query))

    async def QueryAudit(self, request: pb.QueryAuditRequest, context: grpc.aio.ServicerContext) -> pb.QueryAuditResponse:
        query = commands.QueryAudit(object_type=request.object_type.strip(), object_id=request.object_id.strip(),
                                    actor_id=request.actor_id.strip(), action=request.action.strip(),
                                    since=field_datetime(request, "since"), until=field_datetime(request, "until"),
                                    page_size=request.page_size, page_token=request.page_token)
        entries, token = await self._handlers.query_audit(current_actor(), query)
        return pb.QueryAuditResponse(entries=[audit_message(e) for e in entries], next_page_token=token)

    async def VerifyAudit(self, request: pb.VerifyAuditRequest, context: grpc.aio.ServicerContext) -> pb.VerifyAuditResponse:
        checkpoint = checkpoint_from(request.checkpoint) if request.HasField("checkpoint") else None
        result = await self._handlers.verify_audit(current_actor(), commands.VerifyAudit(checkpoint))
        response = pb.VerifyAuditResponse(intact=result.finding is None, entries_checked=result.verified,
                                          head=checkpoint_message(result.head))
        if result.finding is not None:
            f = result.finding
            response.problem, response.seq, response.event_id, response.message = f.problem.value, f.seq, f.event_id, f.message
        return response

    async def GetAuditCheckpoint(self, request: pb.GetAuditCheckpointRequest, context: grpc.aio.ServicerContext) -> pb.AuditCheckpoint:
        return checkpoint_message(await self._handlers.checkpoint(current_actor()))

    async def QuarterlyReview(self, request: pb.QuarterlyReviewRequest, context: grpc.aio.ServicerContext) -> pb.QuarterlyReviewResponse:
        report = await self._handlers.quarterly_review(current_actor(), commands.QuarterlyReview(request.window_days))
        return pb.QuarterlyReviewResponse(
            generated_at=timestamp_or_none(report.generated_at), window_start=timestamp_or_none(report.window_start),
            window_days=report.window_days,
            integrations=[review_message(r) for r in report.reviews], org_id=report.org_id,
        )
