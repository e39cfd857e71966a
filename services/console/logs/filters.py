"""The API log's four filters as typed in the page's query (integration, date range, status,
endpoint), kept as typed so a refused filter shows what was sent, and turned into logs
requests. The console reads the dates; every other rule is the logs service's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import quote, urlencode

from starlette.datastructures import QueryParams

from services.console.formats import BadTime, millis, moment, parse_time, timestamp
from services.contracts.trellis.logs.v1 import logs_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp


class _RequestFields(TypedDict):
    """The fields a query and an export of the API logs share."""

    integration_id: str
    since: Timestamp | None
    until: Timestamp | None
    status: str
    endpoint: str

# The status filter's choices: the service also takes any other class or exact code.
STATUS_CHOICES = (
    ("", "Any status"), ("success", "Success (2xx, 3xx)"), ("error", "Error (4xx, 5xx)"), ("2xx", "2xx"),
    ("4xx", "4xx client errors"), ("5xx", "5xx server errors"), ("401", "401 Unauthorised"), ("403", "403 Forbidden"),
    ("404", "404 Not Found"), ("429", "429 Too Many Requests"),
)
FORMATS = {"csv": (pb.EXPORT_FORMAT_CSV, "text/csv; charset=utf-8"),
           "jsonl": (pb.EXPORT_FORMAT_JSONL, "application/x-ndjson; charset=utf-8")}
# The logs service names a refused filter by its request field; the page's field is named so.
FIELD_OF = {"integration_id": "integration", "since": "since", "until": "until", "status": "status",
            "endpoint": "endpoint"}
_FIELDS = ("integration", "since", "until", "status", "endpoint")
_MAX_TEXT = 600
_PLAIN_ID = re.compile(r"[A-Za-z0-9._~-]+")  # needs no quoting in a path  # a little over the service's own bounds: it says what is too long


@dataclass(frozen=True)
class LogFilter:
    integration: str = ""
    since: str = ""
    until: str = ""
    status: str = ""
    endpoint: str = ""

    @classmethod
    def read(cls, query: QueryParams) -> "LogFilter":
        return cls(**{name: str(query.get(name) or "")[:_MAX_TEXT] for name in _FIELDS})

    @property
    def any(self) -> bool:
        return any(getattr(self, name) for name in _FIELDS)

    def problems(self) -> dict[str, str]:
        """The fields the console cannot read (a date that is not one); field -> message."""
        found: dict[str, str] = {}
        for name, end in (("since", False), ("until", True)):
            try:
                parse_time(getattr(self, name), end_of_day=end)
            except BadTime as exc:
                found[name] = str(exc)
        return found

    def _fields(self) -> _RequestFields:
        since = parse_time(self.since)
        until = parse_time(self.until, end_of_day=True)
        return {"integration_id": self.integration.strip(), "since": timestamp(since), "until": timestamp(until),
                "status": self.status.strip(), "endpoint": self.endpoint}

    def query(self, *, page_size: int, page_token: str = "") -> pb.QueryRequestsRequest:
        return pb.QueryRequestsRequest(page_size=page_size, page_token=page_token, **self._fields())

    def export(self, format_: str) -> pb.ExportRequestsRequest:
        return pb.ExportRequestsRequest(format=FORMATS[format_][0], **self._fields())

    def histogram(self) -> pb.RequestHistogramRequest:
        """The chart's counts over the filters' whole range, in buckets the service chooses."""
        return pb.RequestHistogramRequest(**self._fields())

    def params(self, **extra: str) -> str:
        """The filters (and `extra`) as a query string, for links that keep them."""
        values = {name: getattr(self, name) for name in _FIELDS if getattr(self, name)}
        values.update({k: v for k, v in extra.items() if v})
        return urlencode(values)

    def with_(self, **changes: str) -> "LogFilter":
        return LogFilter(**{**{name: getattr(self, name) for name in _FIELDS}, **changes})

    def status_choices(self) -> tuple[tuple[str, str], ...]:
        """The choices, with a value typed into the URL that is not one of them kept as chosen."""
        if self.status and self.status not in dict(STATUS_CHOICES):
            return (*STATUS_CHOICES, (self.status, self.status))
        return STATUS_CHOICES


@dataclass(frozen=True, slots=True)
class LogRow:
    """One request as the grid shows it, its texts made once here (a page is 50 rows of nine cells:
    a template call per cell is most of its rendering time)."""

    at_iso: str
    at: str
    integration_id: str
    integration: str
    integration_link: str   # the grid filtered by this row's integration
    method: str
    endpoint: str
    status: int
    status_class: str
    duration: str
    ip: str
    request_id: str
    request_link: str
    error_code: str


def rows_of(records: list[pb.RequestRecord], filters: LogFilter) -> list[LogRow]:
    links: dict[str, str] = {}
    rows = []
    for r in records:
        iid = r.integration_id
        if iid not in links:
            links[iid] = "/logs?" + filters.with_(integration=iid).params()
        at = moment(r.timestamp)
        stamp = at.isoformat(timespec="milliseconds") if at else ""
        request_id = r.request_id
        rows.append(LogRow(
            at_iso=stamp[:23] + "Z" if at else "", at=stamp[:23].replace("T", " "), integration_id=iid,
            integration=r.integration_name or iid, integration_link=links[iid], method=r.method, endpoint=r.endpoint,
            status=r.status, status_class=f"status-{r.status // 100}xx", duration=millis(r.duration_ms), ip=r.ip,
            request_id=request_id, request_link="/logs/requests/" + (
                request_id if _PLAIN_ID.fullmatch(request_id) else quote(request_id, safe="")),
            error_code=r.error_code))
    return rows
