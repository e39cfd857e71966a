"""The review's checklist answered from the report's flags (and the audit trail's owner changes and
credential issues, listed under their questions): ticked only when its flags answer the
whole question and none is raised; a question only a person can answer is never ticked."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from services.console.review.views import CHECKLIST, checklist, headroom, render_csv
from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.logs.domain.review import FLAGS


def test_every_flag_of_the_service_answers_a_question() -> None:
    assert {f for _, flags, _ in CHECKLIST for f in flags} == set(FLAGS)


def test_questions_are_ticked_only_when_their_flags_answer_them_and_none_is_raised() -> None:
    report = pb.QuarterlyReviewResponse(integrations=[
        pb.IntegrationReview(integration_id="int_a", name="A", owner="olivia", flags=["unused_30_days"]),
        pb.IntegrationReview(integration_id="int_b", name="B", owner="oscar"),
    ])
    answers = {a.question: a for a in checklist(report)}
    assert not answers["Are all active integrations still in use?"].ticked
    assert answers["Are all active integrations still in use?"].attention == ("A",)
    assert answers["Do assigned scopes still match actual usage?"].ticked
    for question in ("Have partner contacts changed?", "Are credentials held only by authorised personnel?"):
        assert not answers[question].ticked and "olivia, oscar" in answers[question].note


def test_headroom_and_csv_cells() -> None:
    r = pb.IntegrationReview(integration_id="int_a", name="=cmd", status="active", peak_requests_per_minute=6,
                             rate_limit_per_minute=60, credential_age_days=-1, granted_scopes=["a:read", "b:read"])
    assert headroom(r) == "busiest minute 6 of 60 per minute (10%); headroom 54"
    line = render_csv(pb.QuarterlyReviewResponse(integrations=[r])).decode().splitlines()[1]
    assert line.startswith("'=cmd,int_a,active,-,a:read;b:read,-,-,never,0,0.0%,6,60,-,no,-,-")


def test_the_audit_trail_answers_who_had_credentials_issued_and_whose_owner_changed() -> None:
    when = Timestamp(seconds=1_775_000_000)
    report = pb.QuarterlyReviewResponse(integrations=[
        pb.IntegrationReview(integration_id="int_a", name="A", owner="oscar", flags=["owner_changed_in_window"],
                             owner_changes=[pb.OwnerChange(occurred_at=when, actor_id="alice", before="olivia",
                                                           after="oscar")],
                             credentials_issued=[pb.CredentialIssue(occurred_at=when, actor_id="bob")]),
        pb.IntegrationReview(integration_id="int_b", name="B", owner="olga"),
    ])
    answers = {a.question: a for a in checklist(report)}
    contacts = answers["Have partner contacts changed?"]
    assert not contacts.ticked and contacts.attention == ("A",)
    assert contacts.details == ("A: owner olivia → oscar by alice on 2026-03-31T23:33:20Z",)
    held = answers["Are credentials held only by authorised personnel?"]
    assert held.details == ("A: issued to bob on 2026-03-31T23:33:20Z",) and not held.ticked


def test_without_audit_facts_the_page_says_the_trail_shows_none() -> None:
    answers = {a.question: a for a in checklist(pb.QuarterlyReviewResponse(integrations=[
        pb.IntegrationReview(integration_id="int_b", name="B", owner="olga")]))}
    assert answers["Have partner contacts changed?"].details == ("The audit trail shows no owner change in the window.",)
    assert answers["Have partner contacts changed?"].attention == ()
    assert answers["Are credentials held only by authorised personnel?"].details == (
        "The audit trail shows no credentials issued in the window.",)
