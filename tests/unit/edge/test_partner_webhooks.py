"""The partner webhook routes' pure parts: webhooks' refusals become the edge's codes, the JSON
a partner sees, path matching, and a route-wide scope ("*") in the route table."""

from __future__ import annotations

import pytest

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.edge.application.builtins import BUILTINS
from services.edge.entrypoints.partner_webhooks import OPERATIONS, refusal, subscription_json
from services.edge.domain.routes import RouteTable
from services.kit import errors


@pytest.mark.parametrize(("error", "code", "status"), [
    (errors.InvalidArgument("the endpoint URL must use HTTPS"), "invalid_request", 400),
    (errors.NotFound("no webhook subscription whk_1"), "not_found", 404),
    (errors.FailedPrecondition("only a failed delivery can be redelivered"), "conflict", 409),
    (errors.Aborted("changed meanwhile"), "conflict", 409),
    (errors.Unavailable("connect failed", grpc_status="UNAVAILABLE"), "upstream_unavailable", 502),
    (errors.Unavailable("deadline", grpc_status="DEADLINE_EXCEEDED"), "upstream_unavailable", 504),
    (errors.PermissionDenied("this action needs trellis_edge"), "upstream_unavailable", 502),
])
def test_webhooks_refusals_become_the_edges_codes(error: errors.TrellisError, code: str, status: int) -> None:
    refused = refusal(error)
    assert (refused.code, refused.status) == (code, status)
    if status < 500:
        assert refused.message == error.message  # the service's own explanation reaches the partner


def test_messages_name_the_partner_apis_parameters() -> None:
    assert refusal(errors.InvalidArgument("page_token is not one this service gave out")).message == (
        "cursor is not one this service gave out")


def test_a_subscription_reads_in_the_specs_terms_and_never_shows_a_secret() -> None:
    shown = subscription_json(pb.Subscription(id="whk_1", org_id="org_1", url="https://x.test/h", activity_types=["*"],
                                              status=pb.SUBSCRIPTION_STATUS_FAILING,
                                              signature_scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS))
    assert (shown["endpoint_url"], shown["status"], shown["signature_scheme"], shown["integration_id"]) == (
        "https://x.test/h", "failing", "standard_webhooks", None)
    assert shown["failing_since"] is None and "signing_secret" not in shown


def test_operations_match_whole_segments() -> None:
    by_path = {(op.method, op.path): op for op in OPERATIONS["webhooks"]}
    redeliver = by_path[("POST", "/{subscription_id}/deliveries/{delivery_id}/redeliver")]
    assert redeliver.match(["whk_1", "deliveries", "dlv_2", "redeliver"]) == {"subscription_id": "whk_1", "delivery_id": "dlv_2"}
    assert redeliver.match(["whk_1", "deliveries", "dlv_2"]) is None
    assert by_path[("GET", "")].match([]) == {}
    assert by_path[("POST", "/{subscription_id}/pause")].match(["whk_1", "resume"]) is None


def test_a_route_wide_scope_applies_to_every_method_an_override_does_not_name() -> None:
    routes = RouteTable.from_dict({"route": [
        {"prefix": "/v1/webhooks", "builtin": "webhooks", "scope": "webhooks", "methods": {"*": "webhooks:manage"}},
        {"prefix": "/v1/odd", "builtin": "whoami", "scope": "odd", "methods": {"*": "odd:any", "GET": "odd:look"}},
    ]}, builtins=BUILTINS)
    hooks, odd = routes.match("/v1/webhooks/whk_1"), routes.match("/v1/odd")
    assert {hooks.required_scope(m) for m in ("GET", "HEAD", "POST", "PATCH", "DELETE")} == {"webhooks:manage"}  # type: ignore[union-attr]
    assert (odd.required_scope("GET"), odd.required_scope("POST")) == ("odd:look", "odd:any")  # type: ignore[union-attr]
    assert hooks.subpath("/v1/webhooks/whk_1/pause") == "/whk_1/pause"  # type: ignore[union-attr]
