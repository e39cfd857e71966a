"""The review's checklist as the CLI renders it: ticked only where the flags answer the question."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from services.cli.commands.review import render_markdown, render_table
from services.contracts.trellis.logs.v1 import logs_pb2 as pb


def report(*integrations: pb.IntegrationReview) -> pb.QuarterlyReviewResponse:
    return pb.QuarterlyReviewResponse(org_id="org_r", window_days=90, integrations=list(integrations))


def checklist(text: str) -> dict[str, str]:
    """Each checklist line by the start of its question."""
    section = text.split("## Checklist\n\n", 1)[1].split("\n\n", 1)[0]
    return {line.split("] ", 1)[1].split("?", 1)[0]: line for line in section.splitlines() if line.startswith("- [")}


def details(text: str, question: str) -> list[str]:
    """The lines listed under a checklist question (what the audit trail shows for it)."""
    section = text.split("## Checklist\n\n", 1)[1].split("\n\n", 1)[0]
    found: list[str] = []
    for line in section.splitlines():
        if line.startswith("- ["):
            current = line
        elif question in current:
            found.append(line.removeprefix("  - "))
    return found


def test_a_flagged_scope_question_is_not_ticked_and_names_the_integration() -> None:
    lines = checklist(render_markdown(report(pb.IntegrationReview(
        integration_id="int_1", name="SAP Sync", owner="alice", status="active",
        granted_scopes=["inventory:read", "orders:write"], unused_scopes=["orders:write"],
        flags=["granted_scopes_never_used"]))))
    assert lines["Do assigned scopes still match actual usage"] == (
        "- [ ] Do assigned scopes still match actual usage? Needs attention: SAP Sync.")
    assert lines["Are all active integrations still in use"].startswith("- [x] ")


def test_what_only_a_person_can_confirm_is_never_ticked() -> None:
    lines = checklist(render_markdown(report(pb.IntegrationReview(integration_id="int_1", name="A", owner="alice"),
                                             pb.IntegrationReview(integration_id="int_2", name="B", owner="bob"))))
    contacts = lines["Have partner contacts changed"]
    assert contacts.startswith("- [ ] ") and "(alice, bob)." in contacts
    personnel = lines["Are credentials held only by authorised personnel"]
    assert personnel.startswith("- [ ] Are credentials held only by authorised personnel? Nothing flagged. ")
    assert "rotate if team members have changed" in personnel


def test_the_table_counts_integrations_in_words() -> None:
    assert "org_r: 1 integration, usage" in render_table(report(pb.IntegrationReview(integration_id="int_1")))
    assert "org_r: 2 integrations, usage" in render_table(report(pb.IntegrationReview(), pb.IntegrationReview()))


def test_the_audit_trail_s_owner_changes_and_credential_issues_are_listed_under_their_questions() -> None:
    when = Timestamp(seconds=1_775_000_000)
    text = render_markdown(report(pb.IntegrationReview(
        integration_id="int_1", name="A", owner="oscar", flags=["owner_changed_in_window"],
        owner_changes=[pb.OwnerChange(occurred_at=when, actor_id="alice", before="olivia", after="oscar")],
        credentials_issued=[pb.CredentialIssue(occurred_at=when, actor_id="bob")])))
    assert checklist(text)["Have partner contacts changed"].startswith("- [ ] Have partner contacts changed? Needs attention: A.")
    assert details(text, "partner contacts") == ["A: owner olivia → oscar by alice on 2026-03-31T23:33:20Z"]
    assert details(text, "authorised personnel") == ["A: issued to bob on 2026-03-31T23:33:20Z"]
    quiet = render_markdown(report(pb.IntegrationReview(integration_id="int_2", name="B")))
    assert details(quiet, "partner contacts") == ["The audit trail shows no owner change in the window."]
