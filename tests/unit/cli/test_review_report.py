"""The review's checklist as the CLI renders it: ticked only where the flags answer the question."""

from __future__ import annotations

from services.cli.commands.review import render_markdown, render_table
from services.contracts.trellis.logs.v1 import logs_pb2 as pb


def report(*integrations: pb.IntegrationReview) -> pb.QuarterlyReviewResponse:
    return pb.QuarterlyReviewResponse(org_id="org_r", window_days=90, integrations=list(integrations))


def checklist(text: str) -> dict[str, str]:
    """Each checklist line by the start of its question."""
    section = text.split("## Checklist\n\n", 1)[1].split("\n\n", 1)[0]
    return {line.split("] ", 1)[1].split("?", 1)[0]: line for line in section.splitlines()}


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
    assert contacts.startswith("- [ ] ") and "Nothing flagged" not in contacts and "(alice, bob)." in contacts
    personnel = lines["Are credentials held only by authorised personnel"]
    assert personnel.startswith("- [ ] Are credentials held only by authorised personnel? Nothing flagged. ")
    assert "rotate if team members have changed" in personnel


def test_the_table_counts_integrations_in_words() -> None:
    assert "org_r: 1 integration, usage" in render_table(report(pb.IntegrationReview(integration_id="int_1")))
    assert "org_r: 2 integrations, usage" in render_table(report(pb.IntegrationReview(), pb.IntegrationReview()))
