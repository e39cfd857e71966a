"""`trellis review`: the quarterly access review as evidence for an auditor (SOC 2).

For every integration: status, owner, granted against exercised scopes, last request, peak
requests per minute against the rate limit, credential age, allowlist, error rate, and the
flags of the spec's checklist; from the audit trail, owner changes and who had credentials
issued in the window. As a table, Markdown or CSV.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from services.cli.client import CliError, Session
from services.cli.commands.logs import add_logs_addr, logs_client, when_text
from services.cli.output import message_dict, plural, print_json, table
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
COLUMNS = ("integration", "id", "status", "owner", "granted scopes", "exercised scopes", "unused scopes",
           "last request", "requests", "error rate", "peak/min", "rate limit", "credential age (days)",
           "allowlist", "networks", "flags")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("review", parents=[common], help="the quarterly access review of every integration")
    p.add_argument("--format", choices=("table", "markdown", "csv"), default="table", help="default: table")
    p.add_argument("--window-days", type=int, default=90, metavar="DAYS", help="usage window (default 90)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE", help="write the report here (default: print it)")
    add_logs_addr(p)
    p.set_defaults(handler=review)


def _values(r: pb.IntegrationReview) -> list[str]:
    return [
        r.name or "-", r.integration_id, r.status, r.owner or "-", ", ".join(r.granted_scopes) or "-",
        ", ".join(r.exercised_scopes) or "-", ", ".join(r.unused_scopes) or "-",
        when_text(r.last_request_at) or "never", str(r.requests), f"{r.error_rate:.1%}", str(r.peak_requests_per_minute),
        str(r.rate_limit_per_minute), "-" if r.credential_age_days < 0 else str(r.credential_age_days),
        "yes" if r.allowlist_set else "no", ", ".join(r.networks) or "-", ", ".join(r.flags) or "-",
    ]


def render_table(report: pb.QuarterlyReviewResponse) -> str:
    rows = [(v[0], v[2], v[3], v[4], v[5], v[7], f"{v[10]}/{v[11]}", v[12], v[13], v[9], v[15])
            for v in map(_values, report.integrations)]
    header = (f"Quarterly access review of {report.org_id}: {plural(len(report.integrations), 'integration')}, "
              f"usage from {when_text(report.window_start)} to {when_text(report.generated_at)}\n")
    return header + "\n" + table(("INTEGRATION", "STATUS", "OWNER", "GRANTED", "EXERCISED", "LAST REQUEST",
                                  "PEAK/LIMIT", "CRED AGE", "ALLOWLIST", "ERRORS", "FLAGS"), rows)


def _md(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: pb.QuarterlyReviewResponse) -> str:
    lines = [
        f"# Quarterly access review: {_md(report.org_id)}", "",
        f"- Generated: {when_text(report.generated_at)}",
        f"- Usage window: {report.window_days} days, from {when_text(report.window_start)}",
        f"- Integrations reviewed: {len(report.integrations)}", "",
        "## Checklist", "",
    ]
    for question, flags, for_a_person in CHECKLIST:
        lines.append(f"- {checklist_line(report, question, flags, for_a_person)}")
        lines += [f"  - {_md(d)}" for d in trail_details(report, question)]
    lines += ["", "## Integrations", "", "| " + " | ".join(c.capitalize() for c in COLUMNS) + " |",
              "|" + "---|" * len(COLUMNS)]
    for r in report.integrations:
        lines.append("| " + " | ".join(_md(v) for v in _values(r)) + " |")
    lines += ["", "## Flags", ""] + [f"- `{flag}`: {text}" for flag, text in FLAG_TEXT.items()]
    return "\n".join(lines) + "\n"


def checklist_line(report: pb.QuarterlyReviewResponse, question: str, flags: tuple[str, ...], for_a_person: str) -> str:
    """`[x] question Nothing flagged.` only when the flags answer the whole question and none is raised."""
    hits = [r.name or r.integration_id for r in report.integrations if set(r.flags) & set(flags)]
    findings = f"Needs attention: {_md(', '.join(hits))}." if hits else "Nothing flagged." if flags else ""
    if for_a_person:
        owners = sorted({r.owner for r in report.integrations if r.owner})
        note = for_a_person[0].upper() + for_a_person[1:] + (f" ({_md(', '.join(owners))})." if owners else ".")
        return " ".join(part for part in ("[ ]", question, findings, note) if part)
    return f"[{' ' if hits else 'x'}] {question} {findings}"


def trail_details(report: pb.QuarterlyReviewResponse, question: str) -> list[str]:
    """What the audit trail shows for the two questions the request log cannot answer, as the
    console's review page lists them (services/console/review/views.py)."""
    lines: list[str] = []
    for r in report.integrations:
        name = r.name or r.integration_id
        if question == "Are credentials held only by authorised personnel?":
            lines += [f"{name}: issued to {c.actor_id or '(unknown)'} on {when_text(c.occurred_at)}"
                      for c in r.credentials_issued]
        elif question == "Have partner contacts changed?":
            lines += [f"{name}: owner {c.before or '(none)'} → {c.after or '(none)'} by {c.actor_id or '(unknown)'} "
                      f"on {when_text(c.occurred_at)}" for c in r.owner_changes]
    if question == "Are credentials held only by authorised personnel?" and not lines:
        return ["The audit trail shows no credentials issued in the window."]
    if question == "Have partner contacts changed?" and not lines:
        return ["The audit trail shows no owner change in the window."]
    return lines


def render_csv(report: pb.QuarterlyReviewResponse) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in report.integrations:
        values = _values(r)
        # Lists separated by ";" inside a cell; a leading formula character is neutralised.
        writer.writerow([("'" + v if v[:1] in ("=", "+", "-", "@") and v != "-" else v).replace(", ", ";") for v in values])
    return out.getvalue()


def review(args: argparse.Namespace, session: Session) -> int:
    if not 1 <= args.window_days <= 366:
        raise CliError("--window-days must be between 1 and 366")
    with logs_client(args, session) as client:
        report = client.QuarterlyReview(pb.QuarterlyReviewRequest(window_days=args.window_days))
    if args.json:
        print_json({"review": message_dict(report)})
        return 0
    text = {"markdown": render_markdown, "csv": render_csv}.get(args.format, render_table)(report)
    if args.output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    try:
        args.output.write_text(text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"Quarterly review of {plural(len(report.integrations), 'integration')} written to {args.output} ({args.format}).")
    return 0
