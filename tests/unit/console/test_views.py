"""The console's presentation rules held to the services' own: the buttons a state offers are
exactly the registry's transitions (the console shows them; the registry decides)."""

from __future__ import annotations

from services.console.integrations import views
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.registry.domain.model import TRANSITIONS, Action, Status

BUTTON_OF = {Action.APPROVE: "approve", Action.ACTIVATE: "activate", Action.UPDATE: "edit", Action.SUSPEND: "suspend",
             Action.REACTIVATE: "reactivate", Action.REVOKE: "revoke", Action.REGENERATE_API_KEY: "regenerate-key"}


def test_each_state_offers_exactly_the_actions_the_registry_allows_from_it() -> None:
    for status in Status:
        proto = pb.IntegrationStatus.Value(f"INTEGRATION_STATUS_{status.name}")
        allowed = {BUTTON_OF[action] for action, (sources, _) in TRANSITIONS.items() if status in sources}
        assert set(views.actions(proto)) == allowed, status


def test_every_status_has_a_name_and_a_filter() -> None:
    for status in Status:
        proto = pb.IntegrationStatus.Value(f"INTEGRATION_STATUS_{status.name}")
        assert views.status_name(proto) == status.value.capitalize()
        assert views.STATUS_BY_SLUG[status.value] == proto


def test_the_pii_and_finance_warnings_sit_beside_their_categories() -> None:
    from services.registry.domain.model import SCOPE_CATEGORIES

    categories = [pb.ScopeCategory(id=c.id, name=c.name, actions=list(c.actions), grants=c.grants,
                                   sensitivity=c.sensitivity) for c in SCOPE_CATEGORIES]
    groups = {g.id: g for g in views.scope_groups(categories, ["crm:read"])}
    assert groups["crm"].warning and "PII" in groups["crm"].warning[1]
    assert groups["finance"].warning and "transaction and invoice data" in groups["finance"].warning[1]
    assert [c.checked for c in groups["crm"].choices] == [True, False]
    assert all(g.warning is None for k, g in groups.items() if k not in ("crm", "finance"))
