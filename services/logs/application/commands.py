"""What readers ask the logs service, one query per use case (the ingest side takes the
batches its consumers decode: services.logs.adapters.consumers).

A `page_size` of 0 asks for the default; `page_token` is the `next_page_token` of the page
before ("" for the first). `platform=True` reads the platform log (platform operators only).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from services.logs.domain.model import Checkpoint, RequestFilter


@dataclass(frozen=True)
class QueryRequests:
    filter: RequestFilter = field(default_factory=RequestFilter)
    page_size: int = 0
    page_token: str = ""
    platform: bool = False


@dataclass(frozen=True)
class GetRequest:
    request_id: str
    platform: bool = False


@dataclass(frozen=True)
class ExportRequests:
    filter: RequestFilter = field(default_factory=RequestFilter)
    platform: bool = False


@dataclass(frozen=True)
class RequestHistogram:
    """Requests per bucket and integration over the filter's whole range; `bucket_seconds` 0
    lets the service choose (domain.model.bucket_width)."""

    filter: RequestFilter = field(default_factory=RequestFilter)
    bucket_seconds: int = 0
    platform: bool = False


@dataclass(frozen=True)
class QueryAudit:
    """Filters that combine (every one given must match), newest first."""

    object_type: str = ""
    object_id: str = ""
    actor_id: str = ""
    action: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class VerifyAudit:
    """Walk the chain; with a checkpoint kept outside the database, check the trail against it too."""

    checkpoint: Checkpoint | None = None


@dataclass(frozen=True)
class QuarterlyReview:
    window_days: int = 0  # 0: the default window (domain.review.WINDOW_DAYS)
