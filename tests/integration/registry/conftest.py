"""Fixtures of the registry's gRPC tests."""

from __future__ import annotations

import pytest

from services.kit.auth import EDGE_PERMISSION
from tests.integration.registry.helpers import AsActor, Metadata


@pytest.fixture
def edge(as_actor: AsActor) -> Metadata:
    """The edge's service identity: `trellis_edge` only, in an organisation of its own."""
    return as_actor("svc-edge", "org_platform", [EDGE_PERMISSION])
