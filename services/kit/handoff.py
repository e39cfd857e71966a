"""The partner hand-off document: what the spec's "What to Share" table lists (API key, client
id and secret, issuer and token URL, API docs URL, granted scopes), as one JSON document.

Shared by `trellis integrations activate --handoff` (services/cli/handoff.py writes it to a
0600 file) and the console's download beside the credentials dialog, so both give the same.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: a CLI command loads no contract it does not call
    from services.contracts.trellis.identity.v1 import identity_pb2
    from services.contracts.trellis.registry.v1 import registry_pb2

HANDLING = (
    "Transfer this file through a secrets manager, password vault or other encrypted channel; "
    "never by email or chat. The API key and client secret cannot be shown again."
)
# The documents' keys, in order (the console checks a document it is handed back against them):
# after activation or reactivation, and after a key regeneration.
KEYS = ("integration_id", "integration_name", "api_key", "client_id", "client_secret", "issuer", "token_url",
        "audience", "api_docs_url", "scopes", "handling")
KEY_KEYS = ("integration_id", "integration_name", "api_key", "client_id", "api_docs_url", "scopes", "note",
            "handling")


def handoff_document(integration: registry_pb2.Integration, credentials: identity_pb2.Credentials,
                     *, api_docs_url: str) -> dict[str, Any]:
    """API key, client id and secret, issuer and token URL, API docs URL, granted scopes."""
    return {
        "integration_id": integration.id,
        "integration_name": integration.name,
        "api_key": credentials.api_key,
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "issuer": credentials.issuer,
        "token_url": credentials.token_url,
        "audience": credentials.audience,
        "api_docs_url": api_docs_url,
        "scopes": list(credentials.scopes or integration.scopes),
        "handling": HANDLING,
    }


def key_handoff_document(integration: registry_pb2.Integration, api_key: str, *, api_docs_url: str) -> dict[str, Any]:
    """After a key regeneration: the new API key, with what identifies the integration; the client
    id and secret the partner already holds are unchanged (the secret is never shown again)."""
    return {
        "integration_id": integration.id,
        "integration_name": integration.name,
        "api_key": api_key,
        "client_id": integration.client_id,
        "api_docs_url": api_docs_url,
        "scopes": list(integration.scopes),
        "note": ("A new API key: the previous key stopped working when this one was made. "
                 "The client id and client secret are unchanged; keep using them."),
        "handling": HANDLING,
    }


def handoff_bytes(document: dict[str, Any]) -> bytes:
    """The document as the hand-off file holds it: indented JSON and a final newline."""
    return (json.dumps(document, indent=2) + "\n").encode()
