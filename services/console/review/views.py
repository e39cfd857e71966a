"""The quarterly review as a page and a file: the spec's checklist answered from the report's
flags and the audit trail's owner changes and credential issues, each integration's line, and
the CSV `trellis review --format csv` writes for the same report
(tests/integration/console/test_audit_and_review_pages.py holds the two together).
Presentation only: the figures, flags and audit facts are the logs service's
(services/logs/domain/review.py)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from services.console.formats import moment
from services.contracts.trellis.logs.v1 import logs_pb2 as pb

FLAG_TEXT = {
    "unused_30_days": "no request for 30 days: still in use? Suspend or revoke it",
    "granted_scopes_never_used": "granted scopes it never used: remove them",
    "pii_scope_granted": "holds a PII scope (CRM)",
    "financial_scope_granted": "holds a Financial scope (Finance)",
    "rate_limit_far_above_use": "busiest minute under 10% of its rate limit: lower it",
    "credentials_older_than_90_days": "credentials older than 90 days: rotate them",
    "no_allowlist_single_network": "always calls from one network but has no IP allowlist: add one",
    "owner_changed_in_window": "its owner changed in the window: confirm the previous owner holds no credentials",
}
# The spec's checklist: each question, the flags that answer it, and what only a person can
# confirm (such a question is never ticked, whatever the flags say).
CHECKLIST = (
    ("Are all active integrations still in use?", ("unused_30_days",), ""),
    ("Do assigned scopes still match actual usage?", ("granted_scopes_never_used",), ""),
    ("Are credentials held only by authorised personnel?", ("credentials_older_than_90_days",),
     "who holds them is for each owner to confirm; rotate if team members have changed"),
    ("Are rate limits appropriate for current traffic patterns?", ("rate_limit_far_above_use",), ""),
    ("Is IP allowlisting enabled for integrations with static infrastructure?", ("no_allowlist_single_network",), ""),
    ("Have partner contacts changed?", ("owner_changed_in_window",),
     "if a third party manages an integration, confirm with each owner that only current contacts hold credentials"),
    ("Which integrations hold PII or Financial scopes?", ("pii_scope_granted", "financial_scope_granted"), ""),
)
CSV_COLUMNS = ("integration", "id", "status", "owner", "granted scopes", "exercised scopes", "unused scopes",
               "last request", "requests", "error rate", "peak/min", "rate limit", "credential age (days)",
               "allowlist", "networks", "flags")


@dataclass(frozen=True)
class Answer:
    """One checklist question as the report answers it."""

    question: str
    ticked: bool            # the flags answer it and none is raised
    answered: bool          # False: only a person can answer it (never ticked)
    attention: tuple[str, ...]
    note: str
    details: tuple[str, ...] = ()   # what the audit trail shows for it, one line each


CREDENTIALS_QUESTION = "Are credentials held only by authorised personnel?"
CONTACTS_QUESTION = "Have partner contacts changed?"


def owner_change_text(c: pb.OwnerChange) -> str:
    return f"owner {c.before or '(none)'} → {c.after or '(none)'} by {c.actor_id or '(unknown)'} on {iso_seconds(c.occurred_at)}"


def credential_issue_text(c: pb.CredentialIssue) -> str:
    return f"issued to {c.actor_id or '(unknown)'} on {iso_seconds(c.occurred_at)}"


def trail_details(report: pb.QuarterlyReviewResponse, question: str) -> tuple[str, ...]:
    """The audit trail's answer to the two questions the request log cannot answer: who had
    credentials issued in the window, and whose owner changed."""
    lines: list[str] = []
    for r in report.integrations:
        name = r.name or r.integration_id
        if question == CREDENTIALS_QUESTION:
            lines += [f"{name}: {credential_issue_text(c)}" for c in r.credentials_issued]
        elif question == CONTACTS_QUESTION:
            lines += [f"{name}: {owner_change_text(c)}" for c in r.owner_changes]
    if question == CREDENTIALS_QUESTION and not lines:
        return ("The audit trail shows no credentials issued in the window.",)
    if question == CONTACTS_QUESTION and not lines:
        return ("The audit trail shows no owner change in the window.",)
    return tuple(lines)


def checklist(report: pb.QuarterlyReviewResponse) -> list[Answer]:
    owners = sorted({r.owner for r in report.integrations if r.owner})
    answers = []
    for question, flags, for_a_person in CHECKLIST:
        hits = tuple(r.name or r.integration_id for r in report.integrations if set(r.flags) & set(flags))
        note = ""
        if for_a_person:
            note = for_a_person[0].upper() + for_a_person[1:] + (f" ({', '.join(owners)})." if owners else ".")
        answers.append(Answer(question, ticked=bool(flags) and not hits and not for_a_person,
                              answered=not for_a_person, attention=hits, note=note,
                              details=trail_details(report, question)))
    return answers


def headroom(r: pb.IntegrationReview) -> str:
    """The busiest minute against the rate limit, in words."""
    if r.rate_limit_per_minute <= 0:
        return f"busiest minute {r.peak_requests_per_minute}; no rate limit known"
    share = r.peak_requests_per_minute / r.rate_limit_per_minute
    return (f"busiest minute {r.peak_requests_per_minute} of {r.rate_limit_per_minute} per minute ({share:.0%}); "
            f"headroom {max(0, r.rate_limit_per_minute - r.peak_requests_per_minute)}")


def csv_values(r: pb.IntegrationReview) -> list[str]:
    """The cells of one integration's CSV row, as `trellis review` writes them."""
    return [
        r.name or "-", r.integration_id, r.status, r.owner or "-", ", ".join(r.granted_scopes) or "-",
        ", ".join(r.exercised_scopes) or "-", ", ".join(r.unused_scopes) or "-",
        iso_seconds(r.last_request_at) or "never", str(r.requests), f"{r.error_rate:.1%}",
        str(r.peak_requests_per_minute), str(r.rate_limit_per_minute),
        "-" if r.credential_age_days < 0 else str(r.credential_age_days), "yes" if r.allowlist_set else "no",
        ", ".join(r.networks) or "-", ", ".join(r.flags) or "-",
    ]


def iso_seconds(ts: Timestamp) -> str:
    """ISO 8601 to the second with `Z`, as the CLI writes times; "" when unset."""
    at = moment(ts)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z") if at else ""


def render_csv(report: pb.QuarterlyReviewResponse) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in report.integrations:
        # Lists separated by ";" inside a cell; a leading formula character is neutralised.
        writer.writerow([("'" + v if v[:1] in ("=", "+", "-", "@") and v != "-" else v).replace(", ", ";")
                         for v in csv_values(r)])
    return out.getvalue().encode()
