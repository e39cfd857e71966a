"""Rate-limit decisions: what a request is answered (allowed, refused for the minute or the
day, the `X-RateLimit-*` values) and how large a lease of a window may be. The limiter that
counts them across replicas is services/edge/adapters/ratelimit.py."""

from __future__ import annotations

from dataclasses import dataclass

RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
QUOTA_EXCEEDED = "quota_exceeded"

MINUTE = 60
DAY = 86_400
SMALL_LIMIT = 60             # at or below this, one position per lease: exact per call


@dataclass(frozen=True)
class Decision:
    """What the edge answers: allowed or not, why, and the `X-RateLimit-*` header values."""

    allowed: bool
    code: str | None          # None, "rate_limit_exceeded" or "quota_exceeded"
    limit: int                # X-RateLimit-Limit (requests per minute)
    remaining: int            # X-RateLimit-Remaining (>= 0)
    reset_at: int             # X-RateLimit-Reset: Unix seconds when the current minute window resets
    retry_after: int          # seconds, for Retry-After on 429 (>= 1 when refused)


def lease_cap(limit: int, max_lease: int) -> int:
    """The largest lease for a window of `limit` requests."""
    if limit <= SMALL_LIMIT:
        return 1
    return max(1, min(max_lease, limit // 20))


def slack(limit: int, replicas: int, max_lease: int) -> int:
    """Most requests the limiter may under-admit in one window across `replicas` replicas."""
    k = lease_cap(limit, max_lease)
    return replicas * (k + k // 4)
