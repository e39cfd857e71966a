"""The registry's rules without any server: vendors, scopes, settings, lifecycle, limits."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import pytest

from services.kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted
from services.registry.domain.model import (
    SCOPE_CATEGORIES,
    VENDORS,
    Integration,
    Status,
    ensure_room_for_activation,
    normalise_allowlist,
    normalise_scopes,
    sensitive_scopes,
)

NOW = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.timezone.utc)
_ids = itertools.count()


def new_integration(**overrides: object) -> Integration:
    values: dict[str, object] = {
        "id": f"int_test{next(_ids)}", "org_id": "org_a", "vendor_id": "sap", "name": "SAP Procurement Sync",
        "owner": "olivia", "requested_by": "rita", "now": NOW,
    }
    values.update(overrides)
    return Integration.request(**values)  # type: ignore[arg-type]


def in_state(status: Status) -> Integration:
    """An integration brought to `status` through the real lifecycle."""
    i = new_integration()
    if status is Status.REQUESTED:
        return i
    if status is Status.REVOKED:
        i.revoke(NOW)
        return i
    i.approve("alex", NOW)
    if status is Status.APPROVED:
        return i
    i.activate(api_key_prefix="grq_live_aaaaaaa", client_id="cli_1", now=NOW)
    if status is Status.ACTIVE:
        return i
    i.suspend("sam", "security review", NOW)
    return i


# --- vendors -------------------------------------------------------------------------------------


def test_vendors_are_exactly_the_twelve_of_the_spec_with_stable_ids() -> None:
    assert [(v.id, v.name, v.category) for v in VENDORS] == [
        ("sap", "SAP", "ERP, procurement"),
        ("salesforce", "Salesforce", "CRM sync"),
        ("quickbooks_online", "QuickBooks Online", "Accounting"),
        ("xero", "Xero", "Accounting"),
        ("shopify", "Shopify", "Ecommerce"),
        ("hubspot", "HubSpot", "Marketing"),
        ("netsuite", "NetSuite", "ERP"),
        ("sage", "Sage", "Accounting"),
        ("zapier", "Zapier", "Workflow automation"),
        ("microsoft_dynamics_365", "Microsoft Dynamics 365", "ERP"),
        ("power_automate", "Power Automate", "Workflow automation"),
        ("custom", "Custom", "Any other system"),
    ]


def test_unknown_vendor_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="unknown vendor 'oracle'.*sap, salesforce"):
        new_integration(vendor_id="oracle")


# --- scopes --------------------------------------------------------------------------------------

SPEC_SCOPE_TABLE = {
    # category: (allowed actions, sensitivity, read only)
    "inventory": (("read", "write"), "Operational", False),
    "consumables": (("read", "write"), "Operational", False),
    "orders": (("read", "write"), "Operational", False),
    "skus": (("read", "write"), "Operational", False),
    "equipment": (("read", "write"), "Operational", False),
    "sensors": (("write",), "Operational", False),
    "taxonomies": (("read",), "Operational", True),
    "compliance": (("read", "submit"), "Regulatory", False),
    "reports": (("read", "execute"), "Operational", False),
    "quality": (("read",), "Operational", True),
    "finance": (("read",), "Financial", True),
    "crm": (("read", "write"), "PII", False),
    "tasks": (("read", "write"), "Operational", False),
    "activities": (("read",), "Operational", True),
    "webhooks": (("manage",), "Administrative", False),
}
ALL_ALLOWED = sorted(f"{c}:{a}" for c, (actions, _, _) in SPEC_SCOPE_TABLE.items() for a in actions)


def test_scope_catalogue_matches_the_spec_table() -> None:
    assert {c.id: (c.actions, c.sensitivity, c.read_only) for c in SCOPE_CATEGORIES} == SPEC_SCOPE_TABLE
    grants = {c.id: c.grants for c in SCOPE_CATEGORIES}
    assert grants["inventory"] == "Lots, batches, plants, rooms, locations"
    assert grants["sensors"] == "Batch-ingest sensor readings, up to 500 per request with partial success"
    assert grants["webhooks"] == "Manage webhook subscriptions"
    assert {c.id: c.name for c in SCOPE_CATEGORIES}["crm"] == "CRM"


@pytest.mark.parametrize("scope", ALL_ALLOWED)
def test_every_allowed_scope_is_accepted(scope: str) -> None:
    assert normalise_scopes([scope]) == [scope]


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        ("sensors:read", "sensors allows only: sensors:write"),
        ("taxonomies:write", "taxonomies allows only: taxonomies:read"),
        ("webhooks:read", "webhooks allows only: webhooks:manage"),
        ("reports:write", "reports allows only: reports:read, reports:execute"),
        ("compliance:write", "compliance allows only: compliance:read, compliance:submit"),
        ("finance:write", "finance allows only: finance:read"),
        ("inventory:manage", "inventory allows only: inventory:read, inventory:write"),
    ],
)
def test_disallowed_scope_is_refused_naming_the_allowed_set(scope: str, allowed: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_scopes(["orders:read", scope])
    assert allowed in caught.value.message
    assert caught.value.fields["invalid_scopes"] == scope


def test_unknown_scope_category_is_refused_listing_the_categories() -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_scopes(["payroll:read"])
    assert "unknown scope category 'payroll'" in caught.value.message
    assert ", ".join(SPEC_SCOPE_TABLE) in caught.value.message


@pytest.mark.parametrize("scope", ["inventory", ":read", "inventory:", ""])
def test_malformed_scope_is_refused(scope: str) -> None:
    with pytest.raises(InvalidArgument, match="<category>:<action>"):
        normalise_scopes([scope])


def test_scopes_are_lower_cased_deduplicated_and_sorted() -> None:
    assert normalise_scopes(["Orders:Read", "inventory:write", " orders:read ", "INVENTORY:WRITE"]) == [
        "inventory:write",
        "orders:read",
    ]


def test_pii_financial_and_regulatory_scopes_are_flagged_as_sensitive() -> None:
    assert sensitive_scopes(ALL_ALLOWED) == ["compliance:read", "compliance:submit", "crm:read", "crm:write", "finance:read"]
    assert new_integration(scopes=["crm:read", "inventory:read"]).sensitive_scopes == ["crm:read"]


# --- settings --------------------------------------------------------------------------------------


def test_rate_limit_defaults_to_60_per_minute() -> None:
    assert new_integration().rate_limit_per_minute == 60


@pytest.mark.parametrize("limit", [1, 60, 10_000])
def test_rate_limit_within_bounds_is_kept(limit: int) -> None:
    assert new_integration(rate_limit_per_minute=limit).rate_limit_per_minute == limit
    i = new_integration()
    i.update({"rate_limit_per_minute": limit}, NOW)
    assert i.rate_limit_per_minute == limit


@pytest.mark.parametrize("limit", [0, -1, 10_001, 1_000_000])
def test_rate_limit_outside_1_to_10000_is_refused(limit: int) -> None:
    with pytest.raises(InvalidArgument, match="between 1 and 10,000"):
        new_integration(rate_limit_per_minute=limit)


def test_update_cannot_set_rate_limit_to_zero() -> None:
    with pytest.raises(InvalidArgument, match="between 1 and 10,000"):
        new_integration().update({"rate_limit_per_minute": 0}, NOW)


def test_daily_quota_must_not_be_negative() -> None:
    assert new_integration(daily_quota=0).daily_quota == 0
    assert new_integration(daily_quota=50_000).daily_quota == 50_000
    with pytest.raises(InvalidArgument, match="daily quota"):
        new_integration(daily_quota=-1)


def test_allowlist_accepts_ipv4_and_ipv6_cidr_and_bare_addresses() -> None:
    assert normalise_allowlist(["10.0.0.1/32", "192.168.1.0/24", "203.0.113.7", "2001:DB8::/32", "2001:db8::1"]) == [
        "10.0.0.1/32",
        "192.168.1.0/24",
        "203.0.113.7/32",
        "2001:db8::/32",
        "2001:db8::1/128",
    ]


def test_allowlist_removes_duplicates() -> None:
    assert normalise_allowlist(["192.168.1.0/24", " 192.168.1.0/24", "10.0.0.1", "10.0.0.1/32"]) == [
        "192.168.1.0/24",
        "10.0.0.1/32",
    ]


@pytest.mark.parametrize(("entry", "meant", "one"), [
    ("10.0.0.1/8", "10.0.0.0/8", "10.0.0.1/32"),
    ("192.168.1.77/24", "192.168.1.0/24", "192.168.1.77/32"),
    ("2001:db8::1/32", "2001:db8::/32", "2001:db8::1/128"),
])
def test_allowlist_entry_with_host_bits_is_refused_naming_the_network_it_would_mean(entry: str, meant: str, one: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_allowlist(["10.1.0.0/16", entry])
    assert f"{entry} has host bits set" in caught.value.message
    assert f"write {meant} for the network, or {one} for the one address" in caught.value.message
    assert (caught.value.fields["invalid_entries"], caught.value.fields["meant"]) == (entry, meant)


def test_allowlist_bad_entries_are_named() -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_allowlist(["10.0.0.1/32", "10.0.0.300", "not-an-ip", "10.0.0.0/33", "fe80::1%eth0", ""])
    for bad in ("10.0.0.300", "not-an-ip", "10.0.0.0/33", "fe80::1%eth0"):
        assert repr(bad) in caught.value.message
    refused = caught.value.message.split("refused:")[1]
    assert "10.0.0.1/32" not in refused


def test_allowlist_holds_at_most_50_entries() -> None:
    fifty = [f"10.0.{n}.0/24" for n in range(50)]
    assert len(normalise_allowlist(fifty)) == 50
    assert len(normalise_allowlist([*fifty, "10.0.0.0/24"])) == 50  # a duplicate does not count
    with pytest.raises(InvalidArgument, match="at most 50 entries, got 51"):
        normalise_allowlist([*fifty, "10.1.0.0/24"])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "  ", "name is required"),
    ("name", "x" * 201, "name must be at most 200 characters"),
    ("owner", "", "owner is required"),
])
def test_name_and_owner_are_required_and_bounded(field: str, value: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        new_integration(**{field: value})
    assert new_integration(name="x" * 200).name == "x" * 200


def test_update_changes_only_the_named_fields_and_bumps_the_version() -> None:
    i = new_integration(scopes=["orders:read"], description="first")
    i.update({"scopes": ["Inventory:Read", "orders:read"], "owner": "new owner", "ip_allowlist": ["10.0.0.1"]}, NOW)
    assert (i.scopes, i.owner, i.ip_allowlist, i.description, i.version) == (
        ["inventory:read", "orders:read"], "new owner", ["10.0.0.1/32"], "first", 2,
    )


def test_update_of_an_unknown_or_no_field_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="cannot update status"):
        new_integration().update({"status": "active"}, NOW)
    with pytest.raises(InvalidArgument, match="name at least one field"):
        new_integration().update({}, NOW)


def test_a_refused_update_changes_nothing() -> None:
    i = new_integration(scopes=["orders:read"])
    with pytest.raises(InvalidArgument):
        i.update({"scopes": ["inventory:read"], "rate_limit_per_minute": 0}, NOW)
    assert (i.scopes, i.version) == (["orders:read"], 1)


# --- lifecycle -----------------------------------------------------------------------------------

ACTIONS: dict[str, Callable[[Integration], None]] = {
    "approve": lambda i: i.approve("alex", NOW),
    "activate": lambda i: i.activate(api_key_prefix="grq_live_bbbbbbb", client_id="cli_2", now=NOW),
    "update": lambda i: i.update({"description": "changed"}, NOW),
    "suspend": lambda i: i.suspend("sam", "contract pause", NOW),
    "reactivate": lambda i: i.reactivate("ruth", api_key_prefix="grq_live_ccccccc", client_id="cli_3", now=NOW),
    "revoke": lambda i: i.revoke(NOW),
    "regenerate_api_key": lambda i: i.api_key_regenerated("grq_live_ddddddd", NOW),
}

R, AP, AC, S, X = Status.REQUESTED, Status.APPROVED, Status.ACTIVE, Status.SUSPENDED, Status.REVOKED
# The spec's lifecycle summary: (from, action) -> to. Every pair not listed is illegal.
LEGAL = {
    (R, "approve"): AP,
    (AP, "activate"): AC,
    (AC, "suspend"): S,
    (S, "reactivate"): AC,
    **{(state, "revoke"): X for state in (R, AP, AC, S)},
    **{(state, "update"): state for state in (R, AP, AC, S)},
    (AC, "regenerate_api_key"): AC,
}


@pytest.mark.parametrize(("state", "action"), list(itertools.product(Status, ACTIONS)))
def test_every_transition_follows_the_spec_state_machine(state: Status, action: str) -> None:
    i = in_state(state)
    version = i.version
    if (state, action) in LEGAL:
        ACTIONS[action](i)
        assert i.status is LEGAL[(state, action)]
        assert i.version == version + 1
    else:
        with pytest.raises(FailedPrecondition) as caught:
            ACTIONS[action](i)
        assert f"it is {state.value}" in caught.value.message
        assert caught.value.fields == {"integration_id": i.id, "state": state.value}
        assert (i.status, i.version) == (state, version)


def test_revoked_is_terminal_and_says_so() -> None:
    with pytest.raises(FailedPrecondition, match="it is revoked; revoked is terminal"):
        in_state(Status.REVOKED).revoke(NOW)


def test_approver_must_differ_from_requester() -> None:
    i = new_integration(requested_by="rita")
    with pytest.raises(PermissionDenied, match="cannot approve it: a different administrator"):
        i.approve("rita", NOW)
    assert i.status is Status.REQUESTED
    i.approve("alex", NOW)
    assert (i.status, i.approved_by) == (Status.APPROVED, "alex")


def test_reactivator_must_differ_from_suspender() -> None:
    i = in_state(Status.SUSPENDED)
    assert i.suspended_by == "sam"
    with pytest.raises(PermissionDenied, match="cannot reactivate it: a different administrator"):
        i.reactivate("sam", api_key_prefix="grq_live_eeeeeee", client_id="cli_4", now=NOW)
    assert i.status is Status.SUSPENDED
    i.reactivate("ruth", api_key_prefix="grq_live_eeeeeee", client_id="cli_4", now=NOW)
    assert (i.status, i.api_key_prefix, i.suspended_by, i.suspension_reason) == (Status.ACTIVE, "grq_live_eeeeeee", "", "")


def test_the_requester_may_reactivate_when_someone_else_suspended() -> None:
    i = in_state(Status.SUSPENDED)
    i.reactivate("rita", api_key_prefix="grq_live_fffffff", client_id="cli_5", now=NOW)
    assert i.status is Status.ACTIVE


@pytest.mark.parametrize("reason", ["", "   "])
def test_suspend_needs_a_reason(reason: str) -> None:
    i = in_state(Status.ACTIVE)
    with pytest.raises(InvalidArgument, match="reason is required"):
        i.suspend("sam", reason, NOW)
    assert i.status is Status.ACTIVE


def test_activation_records_the_credentials_identifiers_only() -> None:
    i = in_state(Status.ACTIVE)
    assert (i.api_key_prefix, i.client_id, i.activated_at, i.credentials_issued_at) == ("grq_live_aaaaaaa", "cli_1", NOW, NOW)
    assert i.has_credentials
    assert not in_state(Status.APPROVED).has_credentials


# --- organisation limit ------------------------------------------------------------------------------


def _activate_next(org: list[Integration], limit: int = 20) -> Integration:
    """Activation as the registry does it: count the live ones, then activate."""
    i = in_state(Status.APPROVED)
    ensure_room_for_activation(sum(x.status.is_live for x in org), limit)
    i.activate(api_key_prefix="grq_live_ggggggg", client_id="cli_x", now=NOW)
    org.append(i)
    return i


def test_twenty_live_integrations_then_the_21st_activation_is_refused_with_a_hint() -> None:
    org: list[Integration] = []
    for _ in range(20):
        _activate_next(org)
    with pytest.raises(ResourceExhausted) as caught:
        _activate_next(org)
    assert "revoke an integration you no longer need" in caught.value.message
    assert "suspended integrations count toward the limit" in caught.value.message
    assert caught.value.fields == {"live": 20, "limit": 20}


def test_suspended_integrations_count_and_revoking_frees_a_place() -> None:
    org: list[Integration] = []
    for _ in range(20):
        _activate_next(org)
    org[0].suspend("sam", "paused", NOW)
    with pytest.raises(ResourceExhausted):
        _activate_next(org)
    org[0].revoke(NOW)
    _activate_next(org)
    assert sum(x.status.is_live for x in org) == 20


def test_requested_and_approved_integrations_do_not_count() -> None:
    assert not Status.REQUESTED.is_live and not Status.APPROVED.is_live and not Status.REVOKED.is_live
    ensure_room_for_activation(19, 20)


def test_snapshot_is_json_ready_and_holds_only_identifiers_of_credentials() -> None:
    snap = in_state(Status.ACTIVE).snapshot()
    assert snap["status"] == "active"
    assert snap["api_key_prefix"] == "grq_live_aaaaaaa"
    assert snap["activated_at"] == NOW.isoformat()
    assert not {"api_key", "client_secret"} & set(snap)
