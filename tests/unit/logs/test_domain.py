"""The logs service's rules without a server: filters, cursors, permissions, the audit chain
and the quarterly review's flags."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION, QA_PERMISSION
from services.kit.errors import InvalidArgument, PermissionDenied
from services.logs.application.access import log_of, require_reader
from services.logs.domain.model import (
    PLATFORM_LOG,
    AuditEntry,
    AuditRecord,
    ChainHead,
    ChainWalker,
    Checkpoint,
    Cursor,
    Problem,
    RequestFilter,
    StatusFilter,
    append,
    decode_audit_key,
    empty_head,
    page_size,
)
from services.logs.domain.review import (
    FLAG_FINANCIAL,
    FLAG_OLD_CREDENTIALS,
    FLAG_ONE_NETWORK,
    FLAG_OWNER_CHANGED,
    FLAG_PII,
    FLAG_RATE_LIMIT,
    FLAG_SCOPES_NEVER_USED,
    FLAG_UNUSED,
    CredentialIssue,
    IntegrationFacts,
    OwnerChange,
    Usage,
    exercised_scope,
    network_of,
    review,
    trails,
)

NOW = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)
KEY = b"u" * 32


@pytest.mark.parametrize(("text", "low", "high"), [
    ("success", 200, 399), ("error", 400, 599), ("4xx", 400, 499), ("5XX", 500, 599), ("429", 429, 429),
])
def test_status_filters_name_success_error_classes_and_codes(text: str, low: int, high: int) -> None:
    assert StatusFilter.parse(text) == StatusFilter(low, high)


@pytest.mark.parametrize("text", ["ok", "6xx", "42", "4xxx", "2000"])
def test_unknown_status_filters_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        StatusFilter.parse(text)


def test_a_date_range_must_run_forwards() -> None:
    with pytest.raises(InvalidArgument):
        RequestFilter(since=NOW, until=NOW)


def test_cursors_round_trip_and_foreign_tokens_are_refused() -> None:
    cursor = Cursor(NOW, "req_1")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "!!!", "eyJhIjoxfQ"):
        with pytest.raises(InvalidArgument):
            Cursor.decode(bad)


def test_page_size_has_a_default_and_a_cap() -> None:
    assert (page_size(0), page_size(20), page_size(10_000)) == (50, 20, 500)


def test_only_qa_or_administrators_may_read() -> None:
    require_reader({QA_PERMISSION})
    require_reader({ADMIN_PERMISSION, "other"})
    with pytest.raises(PermissionDenied):
        require_reader({"integrations_read"})


def test_the_platform_log_is_read_by_platform_operators_only() -> None:
    assert log_of("org_p", {PLATFORM_PERMISSION}, platform=True) == PLATFORM_LOG == ""
    for roles in ({ADMIN_PERMISSION, QA_PERMISSION}, {QA_PERMISSION}, set()):
        with pytest.raises(PermissionDenied):
            log_of("org_a", roles, platform=True)
    assert log_of("org_a", {ADMIN_PERMISSION}, platform=False) == "org_a"
    with pytest.raises(PermissionDenied):  # the platform permission reads no organisation's log
        log_of("org_p", {PLATFORM_PERMISSION}, platform=False)


def test_the_audit_key_placeholder_is_refused_outside_embedded_mode() -> None:
    with pytest.raises(ValueError):
        decode_audit_key("change-me", embedded=False)
    with pytest.raises(ValueError):
        decode_audit_key("c2hvcnQ=", embedded=False)  # "short": fewer than 32 bytes
    assert decode_audit_key("change-me", embedded=True)
    assert decode_audit_key("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", embedded=False) == b"A" * 32


def record(i: int) -> AuditRecord:
    return AuditRecord.normalised(event_id=f"evt_{i}", occurred_at=NOW, service="identity", org_id="org", actor_id="a",
                                  action="credentials.issued", object_type="credentials", object_id="int_1",
                                  before_json="", after_json="{}", reason="", request_id="")


def chain(n: int) -> tuple[list, ChainHead]:  # type: ignore[type-arg]
    head, entries = empty_head(KEY, "org"), []
    for i in range(1, n + 1):
        entry, head = append(KEY, head, record(i), NOW)
        entries.append(entry)
    return entries, head


def walk(entries: list, head: ChainHead, checkpoint: Checkpoint | None = None):  # type: ignore[no-untyped-def]
    walker = ChainWalker(KEY, "org", checkpoint)
    for entry in entries:
        if not walker.push(entry):
            break
    return walker.finish(head)


def test_a_chain_verifies_and_a_different_key_does_not() -> None:
    entries, head = chain(5)
    assert walk(entries, head) is None
    other = ChainWalker(b"x" * 32, "org")
    for entry in entries:
        other.push(entry)
    assert other.finish(head) is not None


def test_walking_names_altered_removed_and_inserted_entries() -> None:
    entries, head = chain(5)
    altered = [*entries[:2], dataclasses.replace(entries[2], actor_id="mallory"), *entries[3:]]
    assert (walk(altered, head).problem, walk(altered, head).seq) == (Problem.ALTERED, 3)
    removed = entries[:1] + entries[2:]
    assert (walk(removed, head).problem, walk(removed, head).seq) == (Problem.REMOVED, 2)
    forged = dataclasses.replace(entries[1], event_id="evt_forged")
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in entries[1:]]
    inserted = [entries[0], forged, *shifted]
    finding = walk(inserted, ChainHead("org", 6, 6, head.head_mac))
    assert (finding.problem, finding.seq, finding.event_id) == (Problem.INSERTED, 2, "evt_forged")


def test_a_checkpoint_catches_a_tail_cut_together_with_its_head() -> None:
    entries, head = chain(5)
    checkpoint = Checkpoint("org", head.count, head.last_seq, head.head_mac, NOW).signed(KEY)
    cut_head = ChainHead("org", 3, 3, entries[2].mac)
    assert walk(entries[:3], cut_head) is None
    assert walk(entries[:3], cut_head, checkpoint).problem is Problem.TRUNCATED
    with pytest.raises(InvalidArgument):
        dataclasses.replace(checkpoint, last_seq=3).verify_signature(KEY)


def facts(**overrides: object) -> IntegrationFacts:
    values: dict[str, object] = dict(
        integration_id="int_1", org_id="org", name="ERP", owner="olivia", vendor_id="sap", status="active",
        scopes=("inventory:read",), rate_limit_per_minute=60, daily_quota=0, ip_allowlist=(),
        credentials_issued_at=NOW - dt.timedelta(days=45), version=1, updated_at=NOW,
    )
    values.update(overrides)
    return IntegrationFacts(**values)  # type: ignore[arg-type]


def used(**overrides: object) -> Usage:
    values: dict[str, object] = dict(requests=100, errors=2, last_request_at=NOW - dt.timedelta(hours=1),
                                     peak_per_minute=30, exercised=frozenset({"inventory:read"}),
                                     ips=("203.0.113.5", "198.51.100.7"))
    values.update(overrides)
    return Usage(**values)  # type: ignore[arg-type]


def test_a_tidy_integration_raises_no_flag() -> None:
    assert review(facts(), used(), now=NOW).flags == ()


def test_each_review_flag() -> None:
    assert FLAG_UNUSED in review(facts(), used(last_request_at=NOW - dt.timedelta(days=31)), now=NOW).flags
    assert FLAG_UNUSED in review(facts(), Usage(), now=NOW).flags
    assert FLAG_SCOPES_NEVER_USED in review(facts(scopes=("inventory:read", "orders:write")), used(), now=NOW).flags
    assert FLAG_PII in review(facts(scopes=("crm:read", "inventory:read")), used(), now=NOW).flags
    assert FLAG_FINANCIAL in review(facts(scopes=("finance:read", "inventory:read")), used(), now=NOW).flags
    assert FLAG_RATE_LIMIT in review(facts(rate_limit_per_minute=1000), used(peak_per_minute=99), now=NOW).flags
    assert FLAG_RATE_LIMIT not in review(facts(rate_limit_per_minute=1000), used(peak_per_minute=100), now=NOW).flags
    assert FLAG_OLD_CREDENTIALS in review(facts(credentials_issued_at=NOW - dt.timedelta(days=91)), used(), now=NOW).flags
    one_net = used(ips=("203.0.113.5", "203.0.113.99"))
    assert FLAG_ONE_NETWORK in review(facts(), one_net, now=NOW).flags
    assert FLAG_ONE_NETWORK not in review(facts(ip_allowlist=("203.0.113.0/24",)), one_net, now=NOW).flags


def test_a_new_integration_is_not_yet_unused_and_a_revoked_one_is_not_flagged() -> None:
    fresh = facts(credentials_issued_at=NOW - dt.timedelta(days=3), scopes=("inventory:read",))
    assert FLAG_UNUSED not in review(fresh, Usage(), now=NOW).flags
    gone = facts(status="revoked", scopes=("crm:read",), credentials_issued_at=NOW - dt.timedelta(days=400))
    assert review(gone, Usage(), now=NOW).flags == ()


def test_a_new_integration_s_unused_scopes_are_flagged_as_the_review_lists_them() -> None:
    # docs/auditors.md: granted scopes not exercised in the window, whatever the credentials' age.
    fresh = facts(credentials_issued_at=NOW - dt.timedelta(days=3), scopes=("inventory:read", "orders:write"))
    line = review(fresh, used(), now=NOW)
    assert line.unused_scopes == ("orders:write",)
    assert line.flags == (FLAG_SCOPES_NEVER_USED,)
    suspended = facts(status="suspended", scopes=("inventory:read", "orders:write"))
    assert FLAG_SCOPES_NEVER_USED not in review(suspended, Usage(), now=NOW).flags  # only active ones are reviewed for use


def test_scopes_and_networks_of_requests() -> None:
    assert exercised_scope("orders", "GET") == "orders:read"
    assert exercised_scope("orders", "PATCH") == "orders:write"
    assert exercised_scope("reports", "POST") == "reports:execute"
    assert exercised_scope("compliance", "POST") == "compliance:submit"
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert network_of("::ffff:198.51.100.3") == "198.51.100.0/24"
    assert network_of("unknown") is None


def audit(seq: int, action: str, *, integration: str = "int_1", actor: str = "alice", before: str = "",
          after: str = "") -> AuditEntry:
    return AuditEntry(seq=seq, event_id=f"evt_{seq}", occurred_at=NOW - dt.timedelta(days=10 - seq), recorded_at=NOW,
                      service="registry", org_id="org", actor_id=actor, action=action, object_type="integration",
                      object_id=integration, before_json=before, after_json=after, reason="", request_id="")


def test_the_audit_trail_gives_owner_changes_and_who_had_credentials_issued() -> None:
    entries = [
        audit(3, "integration.updated", before='{"owner": "olivia", "name": "ERP"}', after='{"owner": "oscar", "name": "ERP"}'),
        audit(1, "integration.updated", before='{"owner": "olivia", "rate_limit_per_minute": 60}',
              after='{"owner": "olivia", "rate_limit_per_minute": 120}'),  # another field: no owner change
        audit(2, "integration.updated", before="not json", after='{"owner": "x"}'),
        audit(4, "credentials.issued", actor="bob", before="", after='{"api_key_prefix": "tk_live_ab"}'),
        audit(5, "credentials.issued", integration="int_2", actor="carol"),
        audit(6, "integration.suspended", before='{"owner": "a"}', after='{"owner": "b"}'),
    ]
    found = trails(entries)
    assert found["int_1"].owner_changes == (OwnerChange(entries[0].occurred_at, "alice", "olivia", "oscar"),)
    assert found["int_1"].credentials_issued == (CredentialIssue(entries[3].occurred_at, "bob"),)
    assert found["int_2"].owner_changes == () and [c.actor_id for c in found["int_2"].credentials_issued] == ["carol"]
    line = review(facts(), used(), now=NOW, trail=found["int_1"])
    assert line.flags == (FLAG_OWNER_CHANGED,) and line.trail == found["int_1"]
    assert review(facts(), used(), now=NOW, trail=found["int_2"]).flags == ()
